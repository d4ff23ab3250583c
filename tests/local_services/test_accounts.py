"""Search grants for the servers' accounts, as the stack makes them: in parallel."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from codeactions.local.services.accounts import can_search, ensure_reachable

# Accounts every Debian machine has (base-passwd), standing in for postgres and rabbitmq.
ACCOUNTS = ("daemon", "bin", "sys", "games", "man", "nobody")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="grants are made only as root")


def _has_acls(directory: Path) -> bool:
    try:
        os.getxattr(directory, "system.posix_acl_access")
    except OSError as error:
        return error.errno == errno.ENODATA
    return True


def test_grants_made_at_once_for_several_accounts_all_hold() -> None:
    # The stack starts PostgreSQL and RabbitMQ together under a closed (0700) directory;
    # a grant that overwrote the other's left RabbitMQ unable to read its Erlang cookie.
    accounts = [pwd.getpwnam(name) for name in ACCOUNTS]
    lost: list[str] = []
    for _ in range(30):
        # Under /tmp (open to all), so the grants are made on the scratch directory only.
        scratch = Path(tempfile.mkdtemp(prefix="codeactions-grants-", dir="/tmp"))
        try:
            state = scratch / "state"
            state.mkdir()
            if not _has_acls(scratch):
                pytest.skip("no POSIX ACLs here: grants fall back to o+x, for everyone")
            assert not any(can_search(state, a) for a in accounts), "nothing to grant"
            start = threading.Barrier(len(accounts))

            def grant(account: pwd.struct_passwd, state: Path = state,
                      start: threading.Barrier = start) -> None:
                start.wait()
                ensure_reachable(state, account)

            threads = [threading.Thread(target=grant, args=(a,)) for a in accounts]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            lost += [f"{scratch}: {a.pw_name}" for a in accounts if not can_search(state, a)]
            assert (scratch.stat().st_mode & 0o7) == 0, "granted to everyone, not each account"
        finally:
            shutil.rmtree(scratch)
    assert lost == []
