"""Database engine and sessions. Services own the transaction (shared/unit_of_work.py);
stores only add and flush."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import Settings


class Database:
    def __init__(self, settings: Settings) -> None:
        # QueuePool reads pool_size=0 as "no limit": keep at least one connection open.
        kept_open = max(1, min(settings.db_min_pool_size, settings.db_max_pool_size))
        self.engine: Engine = create_engine(
            settings.sqlalchemy_url,
            pool_pre_ping=True,
            pool_size=kept_open,
            max_overflow=settings.db_max_pool_size - kept_open,
            pool_timeout=settings.postgres_db_timeout,
            connect_args={"connect_timeout": settings.db_connect_timeout},
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._connection: Connection | None = None

    @classmethod
    def bound_to(cls, connection: Connection) -> Database:
        """Every session and transaction inside `connection`'s open transaction, each as a
        savepoint: what the fast tests roll back after each test."""
        db = cls.__new__(cls)
        db.engine = connection.engine
        db._connection = connection
        db._sessions = sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        return db

    def new_session(self) -> Session:
        """A session the caller closes (shared/unit_of_work.py)."""
        return self._sessions()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reading (writes go through a unit of work); anything raised rolls
        back."""
        session = self._sessions()
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A short transaction outside any session (bookkeeping such as the outbox)."""
        if self._connection is not None:
            with self._connection.begin_nested():
                yield self._connection
            return
        with self.engine.begin() as connection:
            yield connection

    def dispose(self) -> None:
        if self._connection is None:
            self.engine.dispose()
