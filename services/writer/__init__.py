"""writer service."""
