"""Unprivileged accounts for servers that refuse to run as root, and their file access.

When we run as root, PostgreSQL and RabbitMQ run under system users. Those users need to
traverse the directories leading to their binaries and state. Where a parent directory is
closed (e.g. /root or pytest's /tmp/pytest-of-root, both 0700) we grant exactly that user
search permission with a POSIX ACL entry, falling back to o+x on filesystems without ACLs.
An ACL is read, extended and written back under a lock on its directory: the stack starts
its servers in parallel, and two unlocked grants on one directory keep only the last one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pwd
import shutil
import stat
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from codeactions.local.services.errors import MissingPrivilegesError

logger = logging.getLogger(__name__)

_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_UNDEFINED_ID = 0xFFFFFFFF
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01,
    0x02,
    0x04,
    0x08,
    0x10,
    0x20,
)
_SEARCH = 0o1


def service_account(name: str) -> pwd.struct_passwd | None:
    """The account a root-averse server runs under: `name` when we are root, else ourselves.

    Returns None when no user switch is needed (we are not root).
    """
    if os.geteuid() != 0:
        return None
    return ensure_system_user(name)


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """Create system user `name` (no home, no login shell) if it does not exist."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    if os.geteuid() != 0:
        raise MissingPrivilegesError(f"system user {name!r} is missing; only root can create it")
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    logger.info("creating system user %s", name)
    subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
    )
    return pwd.getpwnam(name)


def give_to(path: Path, account: pwd.struct_passwd | None, mode: int = 0o700) -> None:
    """Create directory `path` if needed; make `account` own it (recursively) with `mode`."""
    path.mkdir(parents=True, exist_ok=True)
    if account is not None:
        for entry in [path, *path.rglob("*")]:
            if entry.lstat().st_uid != account.pw_uid:
                os.lchown(entry, account.pw_uid, account.pw_gid)
    path.chmod(mode)


def ensure_reachable(path: Path, account: pwd.struct_passwd | None) -> None:
    """Make sure `account` can traverse every directory leading to `path` (inclusive)."""
    if account is None or can_search(path, account):
        return
    for directory in reversed([path, *path.parents]):
        if not directory.is_dir() or can_search(directory, account):
            continue
        with _directory_locked(directory):  # only where a grant is made: never / or /tmp
            if not can_search(directory, account):
                _grant_search(directory, account)


#: The stack's servers start in threads of one process: they take turns here, and the
#: flock below keeps other processes out too where the filesystem has it.
_GRANTS = threading.Lock()


@contextlib.contextmanager
def _directory_locked(directory: Path) -> Iterator[None]:
    """Grants on `directory` one at a time, across threads and processes."""
    with _GRANTS:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with contextlib.suppress(OSError):  # e.g. NFS: this process's turn is kept
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


def can_search(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether `account` (its own group only) can traverse `path`, asked as that user."""
    result = subprocess.run(
        ["test", "-x", str(path)],
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        check=False,
    )
    return result.returncode == 0


def _grant_search(directory: Path, account: pwd.struct_passwd) -> None:
    try:
        os.setxattr(directory, _ACL_XATTR, _acl_with_search_for(directory, account.pw_uid))
        logger.info("granted %s search access to %s (ACL)", account.pw_name, directory)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        directory.chmod(directory.stat().st_mode | stat.S_IXOTH)
        logger.warning(
            "no ACL support on %s: added o+x so %s can reach it", directory, account.pw_name
        )


def _acl_with_search_for(directory: Path, uid: int) -> bytes:
    """The directory's access ACL plus search permission for user `uid`."""
    entries = _read_acl(directory)
    named = {(tag, ident): perm for tag, perm, ident in entries}
    named[(_ACL_USER, uid)] = named.get((_ACL_USER, uid), 0) | _SEARCH
    group_obj = named[(_ACL_GROUP_OBJ, _ACL_UNDEFINED_ID)]
    old_mask = named.get((_ACL_MASK, _ACL_UNDEFINED_ID), group_obj)
    named[(_ACL_MASK, _ACL_UNDEFINED_ID)] = old_mask | _SEARCH
    ordered = sorted(named.items())
    return _ACL_HEADER.pack(_ACL_VERSION) + b"".join(
        _ACL_ENTRY.pack(tag, perm, ident) for (tag, ident), perm in ordered
    )


def _read_acl(directory: Path) -> list[tuple[int, int, int]]:
    try:
        raw = os.getxattr(directory, _ACL_XATTR)
    except OSError as error:
        if error.errno != errno.ENODATA:
            raise
        mode = directory.stat().st_mode
        return [
            (_ACL_USER_OBJ, (mode >> 6) & 0o7, _ACL_UNDEFINED_ID),
            (_ACL_GROUP_OBJ, (mode >> 3) & 0o7, _ACL_UNDEFINED_ID),
            (_ACL_OTHER, mode & 0o7, _ACL_UNDEFINED_ID),
        ]
    body = raw[_ACL_HEADER.size :]
    return [_ACL_ENTRY.unpack_from(body, offset) for offset in range(0, len(body), _ACL_ENTRY.size)]
