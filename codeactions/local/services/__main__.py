"""Run the local services in the foreground until Ctrl-C.

    python -m codeactions.local.services --state-dir .state/dev --base-port 15430

Prints `export FLOWS_CODE_ACTIONS_...=...` lines on stdout (also written to
<state-dir>/env for other shells to `source`). Services whose variable is already set in the
environment are not started.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from codeactions.local.services.errors import LocalServiceError
from codeactions.local.services.stack import LocalStack, StackUrls, overrides_from_environment

logger = logging.getLogger("codeactions.local.services")

_WATCH_SECONDS = 2.0


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m codeactions.local.services",
        description="Start PostgreSQL, Redis, RabbitMQ, S3 (moto) and a Docker engine locally.",
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".state/dev"))
    parser.add_argument("--base-port", type=int, default=15430)
    parser.add_argument(
        "--stop-docker",
        action="store_true",
        help="also stop dockerd on exit if this command started it",
    )
    return parser.parse_args(argv)


def export_lines(urls: StackUrls) -> list[str]:
    return [
        f"export {variable}={shlex.quote(value)}"
        for variable, value in urls.as_environment().items()
    ]


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pika").setLevel(logging.WARNING)  # it logs every health check
    # Explicit for SIGINT too: a shell starting us in the background ignores SIGINT.
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    stack = LocalStack(
        arguments.state_dir,
        arguments.base_port,
        overrides_from_environment(),
        stop_docker=arguments.stop_docker,
    )
    try:
        urls = stack.start()
        _announce(stack, urls)
        return _watch(stack)
    except KeyboardInterrupt:
        return 0
    except LocalServiceError as error:
        logger.error("%s", error)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        logger.info("stopping local services")
        stack.stop()


def _announce(stack: LocalStack, urls: StackUrls) -> None:
    lines = export_lines(urls)
    env_file = stack.state_dir / "env"
    env_file.write_text("\n".join(lines) + "\n")
    for line in lines:
        print(line)
    if stack.docker is not None:
        process = stack.docker.process
        engine = f"started dockerd, pid {process.pid}" if process else "already running"
        print(f"# docker engine: {engine}")
    print(f"# also written to {env_file}; Ctrl-C stops the services", flush=True)


def _watch(stack: LocalStack) -> int:
    """Block until interrupted; return 1 if a service dies on its own."""
    while True:
        time.sleep(_WATCH_SECONDS)
        for server in stack.servers:
            if not server.is_running():
                logger.error("%s exited unexpectedly; see %s", server.name, server.log_path)
                return 1


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
