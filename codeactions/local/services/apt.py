"""Install missing Debian packages, running `apt-get update` at most once per process."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading

from codeactions.local.services.errors import MissingPrivilegesError

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_index_updated = False

_APT_OPTIONS = (
    "-o",
    "DPkg::Lock::Timeout=300",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
)


def is_package_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "--show", "--showformat=${db:Status-Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip() == "installed"


def apt_install(*packages: str) -> list[str]:
    """Install those of `packages` that are missing; return the ones that were installed.

    Uses whatever mirrors the machine's apt sources name. Serialised across threads.
    """
    with _lock:
        missing = [package for package in packages if not is_package_installed(package)]
        if not missing:
            return []
        if shutil.which("apt-get") is None:
            raise MissingPrivilegesError(
                f"packages {missing} are missing and this machine has no apt-get; install them"
            )
        if os.geteuid() != 0:
            raise MissingPrivilegesError(
                f"packages {missing} are missing; install them as root "
                f"(apt-get install {' '.join(missing)}) or run this as root"
            )
        _update_index_once()
        logger.info("apt-get install %s", " ".join(missing))
        subprocess.run(
            ["apt-get", *_APT_OPTIONS, "install", "-y", "--no-install-recommends", *missing],
            env=_noninteractive_env(),
            stdin=subprocess.DEVNULL,
            check=True,
        )
        return missing


def _update_index_once() -> None:
    global _index_updated
    if _index_updated:
        return
    logger.info("apt-get update")
    subprocess.run(
        ["apt-get", *_APT_OPTIONS, "update"],
        env=_noninteractive_env(),
        stdin=subprocess.DEVNULL,
        check=True,
    )
    _index_updated = True


def _noninteractive_env() -> dict[str, str]:
    return {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
