"""Entry points (the `codeactions` command, one bootstrap per process) and dev-only tooling."""
