"""Run callbacks: where they may go (target) and their delivery record (delivery)."""
