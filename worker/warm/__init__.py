"""Containers started ahead: the pool (one run each) and warm environments (one code each)."""
