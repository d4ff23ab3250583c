"""Metrics, structured logs, and the worker registry (heartbeats) /health reads."""
