"""`make chaos` (dev only, outside the wheel): see runner.py."""
