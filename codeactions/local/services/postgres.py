"""PostgreSQL from the binaries shipped in the `pgserver` wheel, listening on 127.0.0.1.

PostgreSQL refuses to run as root, so when we are root it runs as a system user.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import psycopg

from codeactions.local.services.accounts import ensure_reachable, give_to, service_account
from codeactions.local.services.errors import LocalServiceError, ServiceStartError
from codeactions.local.services.processes import pid_from_file
from codeactions.local.services.readiness import LOOPBACK, log_tail
from codeactions.local.services.server import LocalServer

logger = logging.getLogger(__name__)

POSTGRES_ACCOUNT = "codeactions-pg"
SUPERUSER = "postgres"

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes, minus "/.s.PGSQL.<port>.lock"


def pgserver_install_dir() -> Path:
    """`<site-packages>/pgserver/pginstall`, found without importing pgserver."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise LocalServiceError("the pgserver package is not installed (pip install pgserver)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


class PostgresServer(LocalServer):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM would wait for clients to leave

    def __init__(self, state_dir: Path, port: int, database: str = "codeactions") -> None:
        super().__init__(state_dir, port)
        self.database = database
        self._account: pwd.struct_passwd | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{LOOPBACK}:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def socket_dir(self) -> Path:
        preferred = self.state_dir / "run" / "postgres"
        if len(str(preferred)) <= _MAX_SOCKET_PATH - 20:
            return preferred
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"codeactions-pg-{digest}"

    def is_healthy(self) -> bool:
        try:
            with self._connect("postgres") as connection:
                row = connection.execute("SHOW data_directory").fetchone()
        except psycopg.Error:
            return False
        return row is not None and Path(row[0]).resolve() == self.data_dir.resolve()

    def _prepare(self) -> None:
        self._account = service_account(POSTGRES_ACCOUNT)
        ensure_reachable(pgserver_install_dir(), self._account)
        ensure_reachable(self.state_dir, self._account)
        give_to(self.socket_dir, self._account)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        give_to(self.data_dir, self._account)
        self._remove_stale_lock_file()

    def _command(self) -> list[str]:
        return [
            str(pgserver_install_dir() / "bin" / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            LOOPBACK,
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
        ]

    def _run_as(self) -> pwd.struct_passwd | None:
        return self._account

    def _working_dir(self) -> Path | None:
        return self.data_dir

    def _find_leftovers(self) -> set[int]:
        leftovers = super()._find_leftovers()
        postmaster = self._postmaster_pid()
        if postmaster is not None:
            leftovers.add(postmaster)
        return leftovers

    def _after_start(self) -> None:
        with self._connect("postgres") as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                logger.info("creating database %s", self.database)
                connection.execute(f'CREATE DATABASE "{self.database}"')

    def _connect(self, database: str) -> psycopg.Connection:
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            user=SUPERUSER,
            dbname=database,
            connect_timeout=2,
            autocommit=True,
        )

    def _initdb(self) -> None:
        """Initialise the cluster in a scratch directory, then move it into place."""
        scratch = self.state_dir / "postgres.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        give_to(scratch, self._account)
        logger.info("initialising PostgreSQL data directory %s", self.data_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                [
                    str(pgserver_install_dir() / "bin" / "initdb"),
                    "-D",
                    str(scratch),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                user=self._account.pw_uid if self._account else None,
                group=self._account.pw_gid if self._account else None,
                extra_groups=[] if self._account else None,
                check=False,
            )
        if result.returncode != 0:
            raise ServiceStartError(
                f"initdb failed (exit {result.returncode}); end of {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )
        shutil.rmtree(self.data_dir, ignore_errors=True)
        scratch.rename(self.data_dir)

    def _postmaster_pid(self) -> int | None:
        """pid from postmaster.pid if it names a live postgres process."""
        return pid_from_file(self.data_dir / "postmaster.pid", "postgres")

    def _remove_stale_lock_file(self) -> None:
        lock_file = self.data_dir / "postmaster.pid"
        if lock_file.exists() and self._postmaster_pid() is None:
            logger.info("removing stale %s", lock_file)
            lock_file.unlink(missing_ok=True)
