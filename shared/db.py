"""Database engine and sessions. Services own the transaction (shared/unit_of_work.py);
stores only add and flush.

Round trips are most of PostgreSQL's cost per run (issue 17): a transaction is a ping, a
BEGIN, its statements and a COMMIT. So a connection is pinged only when it comes back from
idling (`IDLE_PING_SECONDS`), and work that is one statement (a read, a claim, a run's end
without logs) runs it in autocommit, where the statement is its own transaction: one round
trip instead of four.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import Settings

#: A pooled connection unused for this long is pinged before it is handed out: what
#: `pool_pre_ping` does on every checkout, only where a dead connection is likely (it sat
#: idle while PostgreSQL restarted). A connection that dies under use fails its statement;
#: SQLAlchemy then invalidates the whole pool, and the caller's retry policy applies. (A
#: statement alone in autocommit that loses its connection after PostgreSQL ran it is
#: committed although the caller saw an error, as a COMMIT whose answer is lost: every
#: such statement is guarded by the run's status, so a retry finds the work done.)
IDLE_PING_SECONDS = 1.0


class Database:
    def __init__(self, settings: Settings) -> None:
        # QueuePool reads pool_size=0 as "no limit": keep at least one connection open.
        kept_open = max(1, min(settings.db_min_pool_size, settings.db_max_pool_size))
        self.engine: Engine = create_engine(
            settings.sqlalchemy_url,
            pool_size=kept_open,
            max_overflow=settings.db_max_pool_size - kept_open,
            pool_timeout=settings.postgres_db_timeout,
            connect_args={"connect_timeout": settings.db_connect_timeout},
        )
        _ping_after_idle(self.engine, IDLE_PING_SECONDS)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # The same pool; a connection is in autocommit while checked out from here.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._statement_sessions = sessionmaker(self._autocommit, expire_on_commit=False)
        self._connection: Connection | None = None

    @classmethod
    def bound_to(cls, connection: Connection) -> Database:
        """Every session and transaction inside `connection`'s open transaction, each as a
        savepoint: what the fast tests roll back after each test."""
        db = cls.__new__(cls)
        db.engine = connection.engine
        db._connection = connection
        db._sessions = db._statement_sessions = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        return db

    @property
    def shares_one_connection(self) -> bool:
        """Bound to one connection (`bound_to`): nothing may use it from another thread."""
        return self._connection is not None

    def new_session(self, one_statement: bool = False) -> Session:
        """A session the caller closes (shared/unit_of_work.py). `one_statement`: each
        statement is its own transaction (autocommit), for work that is one statement."""
        return (self._statement_sessions if one_statement else self._sessions)()

    @contextmanager
    def session(self, one_statement: bool = False) -> Iterator[Session]:
        """A session for reading (writes go through a unit of work); anything raised rolls
        back. `one_statement`: a read of one statement, without BEGIN and ROLLBACK (several
        statements would each see their own snapshot)."""
        session = self.new_session(one_statement)
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def begin(self, one_statement: bool = False) -> Iterator[Connection]:
        """A short transaction outside any session (bookkeeping such as the outbox);
        `one_statement`: autocommit, for a single statement."""
        if self._connection is not None:
            with self._connection.begin_nested():
                yield self._connection
            return
        if one_statement:
            with self._autocommit.connect() as connection:
                yield connection
            return
        with self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        if self._connection is None:
            self.engine.dispose()


def _ping_after_idle(engine: Engine, idle_seconds: float) -> None:
    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # As pool_pre_ping: PostgreSQL probably restarted, so every connection of the
            # pool that is older goes too; this checkout connects anew.
            raise exc.InvalidatePoolError(str(error)) from error
