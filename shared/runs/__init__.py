"""Runs: model, store, submission, cancellation, completion signals, stuck-run reaper."""
