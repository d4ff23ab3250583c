"""Periodic jobs: retention of old runs and logs, run by one process of the fleet at a time."""
