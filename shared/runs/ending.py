"""What follows a run's end, wherever it ends (its worker, a cancel, the stuck-run reaper, a
failed dispatch): its waiters are woken and, if its caller asked, its callback is sent. Both
are after-commit steps of the unit of work that ended it."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from shared.after_commit.steps import Step, StepKind

if TYPE_CHECKING:
    from shared.unit_of_work import UnitOfWork


def after_end(
    uow: UnitOfWork, run_id: uuid.UUID, status: str, wants_callback: bool,
    record: dict[str, Any] | None = None,
) -> None:
    """`record`: the ended row (`Finished.record`), carried by the signal to its waiter."""
    uow.after_commit(Step(StepKind.SIGNAL_DONE, run_id, {"status": str(status)}, record))
    if wants_callback:
        uow.after_commit(Step(StepKind.SCHEDULE_CALLBACK, run_id))
