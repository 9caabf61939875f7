"""eo_common."""
