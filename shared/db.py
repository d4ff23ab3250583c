"""Database engine and sessions. Services own the transaction; stores only add and flush."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
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

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for one unit of work; the caller commits, anything raised rolls back."""
        session = self._sessions()
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
