"""glacier_seg."""
