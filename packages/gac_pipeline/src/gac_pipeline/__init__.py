"""gac_pipeline."""
