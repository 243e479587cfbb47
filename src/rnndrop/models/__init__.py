"""Models built from rnndrop components (no training code here)."""
