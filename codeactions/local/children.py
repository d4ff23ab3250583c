"""The local platform's child processes: each a `codeactions` subcommand of this checkout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

#: The checkout: children run from it, so they import its code (an editable install).
REPO_ROOT = Path(__file__).resolve().parents[2]


def built_languages() -> list[str]:
    """Languages whose engine is defined in this checkout (engines/<language>/Dockerfile), in
    the platform's order."""
    from shared.settings import LANGUAGES

    return [lang for lang in LANGUAGES if (REPO_ROOT / "engines" / lang / "Dockerfile").exists()]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the supervisor dies (even by SIGKILL)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def spawn_child(
    argv: list[str], env: dict[str, str], output: IO[bytes] | None = None
) -> subprocess.Popen:
    """A `codeactions` subcommand as a child of the local platform, in its own process group
    so Ctrl-C is ours to relay, and tied to our life so a crashed supervisor leaves no API or
    worker behind. `output` (a file) takes its stdout and stderr instead of ours."""
    return subprocess.Popen(
        [sys.executable, "-m", "codeactions.cli", *argv], env=env, cwd=REPO_ROOT,
        start_new_session=True, preexec_fn=_die_with_parent,
        stdout=output, stderr=subprocess.STDOUT if output else None,
    )


def stop_children(children: list[subprocess.Popen], grace: float = 15.0) -> None:
    for child in reversed(children):
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in reversed(children):
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
