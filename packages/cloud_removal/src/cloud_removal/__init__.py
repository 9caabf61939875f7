"""cloud_removal."""
