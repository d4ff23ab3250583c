"""The engine wire format: frames on the container's attach stream, parsed here only."""
