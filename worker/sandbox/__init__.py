"""The container a run executes in: hardening policy, lifecycle, ownership."""
