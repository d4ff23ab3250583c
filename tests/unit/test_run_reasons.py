"""The words a run that stopped without its end frame gets (worker/sandbox/sandbox.py's
describe_exit): the cause a user can act on, not only an exit code."""

from __future__ import annotations

from shared.settings import Settings
from worker.sandbox.sandbox import SandboxLimits, SandboxOutcome, describe_exit


def _described(exit_code: int, detail: str, oom: bool = False) -> SandboxOutcome:
    outcome = SandboxOutcome(status="failed")
    describe_exit(outcome, oom, exit_code, SandboxLimits.for_code(Settings(), 30), detail)
    return outcome


def test_a_run_out_of_processes_is_told_its_limit() -> None:
    outcome = _described(1, "RuntimeError: can't start new thread")
    assert outcome.exit_reason == "crashed"
    assert "after reaching its process limit (64 processes)" in outcome.error


def test_other_crashes_are_not_blamed_on_the_process_limit() -> None:
    outcome = _described(2, "BlockingIOError: [Errno 11] Resource temporarily unavailable")
    assert "process limit" not in outcome.error
    assert outcome.error.startswith("the engine stopped without a result (exit code 2)")


def test_out_of_memory_wins() -> None:
    outcome = _described(137, "pthread_create failed", oom=True)
    assert outcome.exit_reason == "memory_limit"
