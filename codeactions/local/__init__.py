"""A single-machine deployment: embedded services and the local platform (`make run`,
`make test`). Dev-only: not in the runtime wheel."""
