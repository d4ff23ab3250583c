"""Resident mode of the Python engine (engines/PROTOCOL.md, "Resident mode"): one process
serves the runs of one code and keeps its module between them, as Lambda does; whatever goes
wrong in a run gives the next run a fresh process. Real image, real hardened containers; the
environment is driven from the protocol text (tests/engines/conftest.py's WarmSession)."""

from __future__ import annotations

from collections.abc import Iterator
from textwrap import dedent

import pytest

from .conftest import WarmSession

COUNTER = dedent(
    """
    import os
    runs = 0

    def Run(engine):
        global runs
        runs += 1
        action = engine.params.get("do")
        if action == "crash":
            os._exit(3)
        if action == "sleep":
            import time
            time.sleep(30)
        if action == "exit":
            raise SystemExit(0)
        engine.result.set(str(runs))
    """
)


@pytest.fixture()
def resident(python_image: str) -> Iterator[WarmSession]:
    session = WarmSession(python_image, COUNTER)
    yield session
    session.close()


def answer(session: WarmSession, **params: str) -> tuple[str | None, dict]:
    out, done = session.run(params=params)
    result = out.result
    return (result["value"] if result else None), done


def test_module_state_lasts_from_run_to_run(resident: WarmSession) -> None:
    answers = [answer(resident) for _ in range(3)]
    assert [value for value, _ in answers] == ["1", "2", "3"]
    assert all(done["kept"] and done["clean"] for _, done in answers), answers


def test_a_crashed_run_gives_the_next_run_a_fresh_process(resident: WarmSession) -> None:
    assert answer(resident)[0] == "1"
    out, done = resident.run(params={"do": "crash"})
    assert out.returncode == 3 and done["kept"] is False and done["clean"], done
    assert [answer(resident)[0] for _ in range(2)] == ["1", "2"]


def test_a_run_over_its_time_gives_the_next_run_a_fresh_process(resident: WarmSession) -> None:
    assert answer(resident)[0] == "1"
    # The worker's finish at the code's timeout, while the run still sleeps.
    out, done = resident.run(params={"do": "sleep"}, finish_after=1.0)
    assert out.of("end") == [] and done["kept"] is False and done["clean"], done
    assert answer(resident)[0] == "1"


def test_a_failed_run_keeps_the_process(resident: WarmSession) -> None:
    assert answer(resident)[0] == "1"
    out, done = resident.run(params={"do": "exit"})
    assert out.end["status"] == "failed" and "SystemExit" in out.end["error"]
    assert done["kept"] is True
    assert answer(resident)[0] == "3"


def test_a_thread_left_by_a_run_writes_nothing_into_the_next(python_image: str) -> None:
    source = dedent(
        """
        import threading, time

        def Run(engine):
            if engine.params.get("first"):
                def late():
                    for _ in range(30):
                        time.sleep(0.05)
                        engine.log.info("late")
                        print("late print")
                threading.Thread(target=late, daemon=True).start()
                engine.result.set("first")
                return
            time.sleep(1)
            engine.log.info("mine")
            print("mine")
            engine.result.set("second")
        """
    )
    session = WarmSession(python_image, source)
    try:
        first, _ = session.run(params={"first": "1"})
        assert first.result["value"] == "first"
        second, done = session.run()
        assert done["kept"] is True
        assert second.logs == [("info", "mine")]
        # What the thread prints meanwhile is the code's own output (the same code): it
        # counts in the run it lands in, but never as frames or logs.
        assert "mine\n" in second.stdout
    finally:
        session.close()


def test_what_a_run_started_is_gone_before_the_next(python_image: str) -> None:
    source = dedent(
        """
        import subprocess
        started = []

        def state(pid):
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    return stat.read().rpartition(")")[2].split()[0]
            except OSError:
                return "gone"

        def Run(engine):
            if not started:
                started.append(subprocess.Popen(["sleep", "600"]).pid)
                engine.result.set(state(started[0]))
            else:
                engine.result.set(state(started[0]))
        """
    )
    session = WarmSession(python_image, source)
    try:
        first, _ = session.run()
        assert first.result["value"] not in ("Z", "gone")
        second, done = session.run()
        # Killed by the supervisor: nothing left but the zombie the code never waited for.
        assert second.result["value"] in ("Z", "gone") and done["kept"] is True
    finally:
        session.close()


def test_a_process_past_its_memory_threshold_is_replaced(python_image: str) -> None:
    session = WarmSession(python_image, COUNTER, rss_max=1)  # every process is past it
    try:
        answers = [answer(session) for _ in range(2)]
        assert [value for value, _ in answers] == ["1", "1"]
        assert all(done["kept"] is False and done["clean"] for _, done in answers)
    finally:
        session.close()


def test_each_run_has_its_own_output(python_image: str) -> None:
    source = dedent(
        """
        count = 0

        def Run(engine):
            global count
            count += 1
            print(f"run {count}")
            engine.log.info(f"log {count}")
        """
    )
    session = WarmSession(python_image, source)
    try:
        outputs = [session.run()[0] for _ in range(3)]
        assert [out.stdout for out in outputs] == ["run 1\n", "run 2\n", "run 3\n"]
        assert [out.logs for out in outputs] == [[("info", f"log {n}")] for n in (1, 2, 3)]
        assert [out.of("stdout")[0]["total"] for out in outputs] == [6, 6, 6]
    finally:
        session.close()
