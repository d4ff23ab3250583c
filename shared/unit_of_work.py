"""One unit of work: one transaction, and the steps that must follow its commit.

Services own the transaction: they open a unit of work, change rows through the stores,
register what must happen once the change is durable (`after_commit`), and commit. Nothing
registered runs unless the commit succeeds; durable steps go to the outbox in the same
transaction, so a crash right after the commit cannot lose them. What a failed step leads
to is decided once, in shared/after_commit/steps.py.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from shared.after_commit import outbox
from shared.after_commit.runner import StepFailure
from shared.after_commit.steps import POLICIES, Step, StepKind

if TYPE_CHECKING:
    from shared.after_commit.runner import AfterCommitRunner
    from shared.db import Database

log = logging.getLogger(__name__)


class UnitOfWork:
    def __init__(
        self, db: Database, runner: AfterCommitRunner, one_statement: bool = False
    ) -> None:
        self._db = db
        #: The work is one statement, its own transaction (autocommit): no BEGIN or COMMIT
        #: round trips, and no session (its statement goes through `connection`). Its
        #: durable steps must be in that statement (`after_commit(…, outbox_id)`), since
        #: nothing else is written with it.
        self._one_statement = one_statement
        self._runner = runner
        self._steps: list[Step] = []
        #: Durable steps the caller wrote to the outbox itself (in its own statement).
        self._stored: dict[int, int] = {}
        self._session: Session | None = None
        #: A one-statement unit of work's `db.begin(one_statement=True)`, open until its
        #: commit (the connection back to the pool) or its end.
        self._statement: AbstractContextManager[Connection] | None = None
        self._connection: Connection | None = None
        self._committed = False
        #: Steps that failed after the commit (already handled by the failure policy).
        self.failures: list[StepFailure] = []

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("a unit of work's session is used inside its `with` block, "
                               "and a one-statement unit of work has none (`connection`)")
        return self._session

    @property
    def connection(self) -> Connection:
        """Where the stores' Core statements run: the session's connection, or a one-statement
        unit of work's own."""
        if self._connection is not None:
            return self._connection
        return self.session.connection()

    def __enter__(self) -> UnitOfWork:
        if self._one_statement:
            self._statement = self._db.begin(one_statement=True)
            self._connection = self._statement.__enter__()
        else:
            self._session = self._db.new_session()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end_statement(*exc)
        session, self._session = self._session, None
        if session is not None:
            if not self._committed:
                session.rollback()
            session.close()  # objects stay usable, detached with what they hold
        self._steps = []

    def _end_statement(self, *exc: Any) -> None:
        """A one-statement unit of work's connection goes back (its statement committed
        itself; bound to a test's connection, an exception undoes its savepoint)."""
        statement, self._statement, self._connection = self._statement, None, None
        if statement is not None:
            statement.__exit__(*(exc or (None, None, None)))

    def after_commit(self, step: Step, outbox_id: int | None = None) -> None:
        """Run `step` once this unit of work has committed (never if it does not).
        `outbox_id`: a durable step the caller already wrote to the outbox, in the same
        transaction (e.g. in one statement with the change it follows)."""
        if outbox_id is not None:
            self._stored[id(step)] = outbox_id
        self._steps.append(step)

    def commit(self) -> list[StepFailure]:
        """Commit, then run the registered steps; returns those that failed."""
        steps, self._steps = self._steps, []
        stored, self._stored = self._stored, {}
        durable = [step for step in steps
                   if POLICIES[step.kind].durable and id(step) not in stored]
        if durable and self._one_statement:
            # Not expected (the caller writes its durable steps in its statement): written
            # now in a statement of their own, rather than lost; a crash in between loses them.
            log.error("a one-statement unit of work wrote %s to the outbox after its statement",
                      durable[0].kind)
        ids = iter(outbox.add(self.connection, durable) if durable else ())
        if self._session is not None:
            self._session.commit()
            self._committed = True
        else:
            self._committed = True  # the statement was its own transaction
            self._end_statement()  # the connection back to the pool before the steps run
        numbered = [(step, stored[id(step)] if id(step) in stored
                     else next(ids) if POLICIES[step.kind].durable else None)
                    for step in steps]
        self.failures = self._runner.run(numbered) if numbered else []
        return self.failures

    def failed(self, kind: StepKind) -> list[StepFailure]:
        return [failure for failure in self.failures if failure.kind == kind]
