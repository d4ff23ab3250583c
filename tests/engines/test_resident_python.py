"""Resident mode of the Python engine (engines/PROTOCOL.md, "Resident mode"): one process
serves the runs of one code and keeps its module between them, as Lambda does; whatever goes
wrong in a run gives the next run a fresh process. Real image, real hardened containers; the
environment is driven from the protocol text (tests/engines/conftest.py's `resident`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from textwrap import dedent

import pytest

from .conftest import Environment, resident

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
        if action == "die_later":  # a thread that ends the process once its run is over
            import threading, time
            threading.Thread(target=lambda: (time.sleep(0.3), os._exit(9)), daemon=True).start()
        engine.result.set(str(runs))
    """
)


@pytest.fixture()
def counter(python_image: str) -> Iterator[Environment]:
    with resident(python_image, COUNTER) as env:
        yield env


def answer(env: Environment, **params: str) -> tuple[str | None, dict]:
    served = env.run(params)
    result = served.out.result
    return (result["value"] if result else None), served.done


def test_module_state_lasts_from_run_to_run(counter: Environment) -> None:
    answers = [answer(counter) for _ in range(3)]
    assert [value for value, _ in answers] == ["1", "2", "3"]
    assert all(done["kept"] and done["clean"] for _, done in answers), answers


def test_a_kept_process_outlasts_its_file_limit(counter: Environment) -> None:
    """Each run's descriptors go with it: 300 runs in one process, more than the 256 files
    the sandbox lets it hold (a descriptor kept per run failed every 250th run)."""
    answers = [answer(counter) for _ in range(300)]
    assert [value for value, _ in answers] == [str(n) for n in range(1, 301)]
    assert all(done["kept"] for _, done in answers)


def test_a_crashed_run_gives_the_next_run_a_fresh_process(counter: Environment) -> None:
    assert answer(counter)[0] == "1"
    served = counter.run({"do": "crash"})
    out, done = served.out, served.done
    assert out.returncode == 3 and done["kept"] is False and done["clean"], done
    assert [answer(counter)[0] for _ in range(2)] == ["1", "2"]


def test_a_run_over_its_time_gives_the_next_run_a_fresh_process(counter: Environment) -> None:
    assert answer(counter)[0] == "1"
    # The worker's finish at the code's timeout, while the run still sleeps.
    served = counter.run({"do": "sleep"}, timeout=1.0)
    out, done = served.out, served.done
    assert out.of("end") == [] and done["kept"] is False and done["clean"], done
    assert answer(counter)[0] == "1"


def test_a_process_that_died_between_runs_does_not_fail_the_next_caller(
    counter: Environment,
) -> None:
    value, done = answer(counter, do="die_later")
    assert value == "1" and done["kept"] is True
    time.sleep(1)  # the thread it left ends the process meanwhile
    served = counter.run()
    assert served.out.end == {"t": "end", "status": "completed"}, served.out.frames
    assert served.out.result["value"] == "1"  # a fresh process took the job


def test_a_failed_run_keeps_the_process(counter: Environment) -> None:
    assert answer(counter)[0] == "1"
    served = counter.run({"do": "exit"})
    out, done = served.out, served.done
    assert out.end["status"] == "failed" and "SystemExit" in out.end["error"]
    assert done["kept"] is True
    assert answer(counter)[0] == "3"


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
    with resident(python_image, source) as env:
        first = env.run({"first": "1"}).out
        assert first.result["value"] == "first"
        served = env.run()
        second, done = served.out, served.done
        assert done["kept"] is True
        assert second.logs == [("info", "mine")]
        # What the thread prints meanwhile is the code's own output (the same code): it
        # counts in the run it lands in, but never as frames or logs.
        assert "mine\n" in second.stdout


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
    with resident(python_image, source) as env:
        first = env.run().out
        assert first.result["value"] not in ("Z", "gone")
        served = env.run()
        second, done = served.out, served.done
        # Killed by the supervisor: nothing left but the zombie the code never waited for.
        assert second.result["value"] in ("Z", "gone") and done["kept"] is True


def test_a_process_past_its_memory_threshold_is_replaced(python_image: str) -> None:
    with resident(python_image, COUNTER, rss_max=1) as env:  # every process is past it
        answers = [answer(env) for _ in range(2)]
        assert [value for value, _ in answers] == ["1", "1"]
        assert all(done["kept"] is False and done["clean"] for _, done in answers)


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
    with resident(python_image, source) as env:
        outputs = [env.run().out for _ in range(3)]
        assert [out.stdout for out in outputs] == ["run 1\n", "run 2\n", "run 3\n"]
        assert [out.logs for out in outputs] == [[("info", f"log {n}")] for n in (1, 2, 3)]
        assert [out.of("stdout")[0]["total"] for out in outputs] == [6, 6, 6]
