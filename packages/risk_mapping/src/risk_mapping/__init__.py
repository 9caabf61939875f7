"""risk_mapping."""
