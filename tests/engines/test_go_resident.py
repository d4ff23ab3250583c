"""The Go engine in resident mode (engines/PROTOCOL.md, "Resident mode"): one environment bound
to one compiled action, several runs through it the way the worker drives it
(worker.warm.environment.WarmEnvironment), and what a user of that code notices: package
state kept from run to run, a fresh process after a run that went wrong, nothing of one run
in the next one's logs or output, nothing the run started left running."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from .test_go_engine import GO_TIMEOUT, TEST_LABELS, action


@pytest.fixture(scope="module")
def settings():  # noqa: ANN201
    from shared.settings import Settings

    return Settings()


@pytest.fixture(scope="module")
def builder(docker_client, settings, go_image: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    from worker.preparers.go_build import GoBuilder

    cache: Path = tmp_path_factory.mktemp("go-resident-build-cache")
    return GoBuilder(docker_client, settings, cache, image=go_image, labels=TEST_LABELS)


class Resident:
    """One resident environment bound to one action; `run` sends one job through it and
    checks that the environment is clean and ready for the next one afterwards."""

    def __init__(self, env: Any, job: dict[str, Any], limits: Any) -> None:
        self.env, self.job, self.limits = env, job, limits

    def run(self, params: dict[str, str] | None = None) -> Any:
        outcome = self.env.run({**self.job, "params": params or {}}, self.limits)
        assert self.env.drain(), outcome
        return outcome


@pytest.fixture()
def resident(docker_client, settings, builder, go_image: str) -> Iterator[Callable[..., Resident]]:  # noqa: ANN001
    from worker.sandbox.sandbox import Sandbox, SandboxLimits
    from worker.warm.environment import WarmEnvironment
    from worker.warm.environments import split_job

    sandbox = Sandbox(docker_client, settings)
    envs: list[Any] = []

    def _bind(source: str, *, timeout: int = GO_TIMEOUT, rss_max: int | None = None,
              compat: str = "strict") -> Resident:
        job = {"source": source, "params": {}, "body": "", "headers": {},
               "limits": {"log_content_max": 8000}, **builder.job_fields(source, compat)}
        if compat != "strict":
            job["compat"] = compat
        limits = SandboxLimits.for_code(settings, timeout, network=False)
        bind, run_job = split_job("go", job)
        bind.update(resident=True,
                    rss_max=limits.memory_bytes * 6 // 10 if rss_max is None else rss_max)
        env = WarmEnvironment(sandbox, ("go-resident-test",), go_image, limits,
                              {"codeactions.test": "go-resident"}, bind)
        envs.append(env)
        env.start()
        return Resident(env, run_job, limits)

    yield _bind
    for env in envs:
        env.destroy()


def completed(outcome: Any) -> None:
    assert outcome.status == "completed", (outcome.error, outcome.logs, outcome.stdout)


def infos(outcome: Any) -> list[str]:
    return [entry["content"] for entry in outcome.logs if entry["type"] == "info"]


COUNTER = action(
    """
    count++
    engine.Log.Info("run ", count)
    switch engine.Params.Get("then") {
    case "panic":
        panic("on purpose")
    case "exit":
        os.Exit(3)
    case "sleep":
        time.Sleep(time.Hour)
    case "error":
        return errors.New("on purpose")
    case "goroutine-panic":
        go panic("from a goroutine")
        time.Sleep(time.Hour)
    }
    return engine.Result.Set(count)
    """,
    "errors", "os", "time",
    extra="var count int // package state: kept while the process is",
)


def counted(env: Resident, runs: int) -> list[str]:
    """The counter's results of `runs` runs, each completed."""
    values = []
    for _ in range(runs):
        outcome = env.run()
        completed(outcome)
        values.append(outcome.result)
    return values


def test_package_state_is_kept_from_run_to_run(resident: Callable[..., Resident]) -> None:
    assert counted(resident(COUNTER), 3) == ["1", "2", "3"]


def test_a_kept_process_outlasts_its_file_limit(resident: Callable[..., Resident]) -> None:
    """300 runs in one process, more than the 256 files the sandbox lets it hold."""
    assert counted(resident(COUNTER), 300) == [str(n) for n in range(1, 301)]


def test_a_returned_error_keeps_the_process(resident: Callable[..., Resident]) -> None:
    # As on Lambda: an error is the run's answer, not the process's end.
    env = resident(COUNTER)
    completed(env.run())
    failed = env.run({"then": "error"})
    assert failed.status == "failed" and failed.error == "on purpose", failed
    third = env.run()
    completed(third)
    assert third.result == "3"


@pytest.mark.parametrize("how", ["panic", "exit", "goroutine-panic", "sleep"])
def test_a_run_that_goes_wrong_gets_the_next_run_a_fresh_process(
        resident: Callable[..., Resident], how: str) -> None:
    env = resident(COUNTER, timeout=3 if how == "sleep" else GO_TIMEOUT)
    completed(env.run())
    assert env.run().result == "2"
    broken = env.run({"then": how})
    assert broken.status == "failed", broken
    expected = {
        "panic": "panic: on purpose",
        "exit": "the action exited with status 3 before Run returned",
        "goroutine-panic": "panic: from a goroutine",
    }
    if how == "sleep":
        assert broken.exit_reason == "timeout", broken
    else:
        assert broken.error == expected[how], broken
    # The environment keeps serving, with a new process: the package state starts again.
    for value in ("1", "2"):
        outcome = env.run()
        completed(outcome)
        assert outcome.result == value


def test_a_goroutine_left_running_writes_nothing_into_the_next_run(
        resident: Callable[..., Resident]) -> None:
    source = action(
        """
        if engine.Params.Get("leave") == "yes" {
            go func() {
                for i := 0; ; i++ { // logs through run 1's engine, long after its end
                    engine.Log.Info("left behind ", i)
                    engine.Result.Set("overwritten by run 1")
                    time.Sleep(2 * time.Millisecond)
                }
            }()
            time.Sleep(20 * time.Millisecond)
            return engine.Result.Set("first")
        }
        time.Sleep(300 * time.Millisecond) // the goroutine keeps logging meanwhile
        engine.Log.Info("second run")
        return engine.Result.Set("second")
        """,
        "time",
    )
    env = resident(source)
    first = env.run({"leave": "yes"})
    completed(first)
    # While run 1 lasts its goroutine is part of it: it may set run 1's result between the
    # action's own Set and the run's end (it did, once, on a loaded machine).
    assert first.result in ("first", "overwritten by run 1")
    assert all(text.startswith("left behind") for text in infos(first))
    second = env.run()
    completed(second)
    assert second.result == "second"
    assert infos(second) == ["second run"]


def test_processes_a_run_started_are_gone_before_the_next_run(
        resident: Callable[..., Resident]) -> None:
    source = action(
        """
        if engine.Params.Get("start") == "yes" {
            // A child it never waits for, and a grandchild its shell leaves behind.
            if err := exec.Command("sleep", "1000").Start(); err != nil {
                return err
            }
            return exec.Command("sh", "-c", "sleep 1001 & exit 0").Run()
        }
        var running []string
        entries, _ := os.ReadDir("/proc")
        for _, entry := range entries {
            stat, err := os.ReadFile("/proc/" + entry.Name() + "/stat")
            if err != nil {
                continue
            }
            fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
            command, _ := os.ReadFile("/proc/" + entry.Name() + "/cmdline")
            if fields[0] != "Z" && strings.HasPrefix(string(command), "sleep") {
                running = append(running, strings.ReplaceAll(string(command), "\\x00", " "))
            }
        }
        return engine.Result.Set(running)
        """,
        "os", "os/exec", "strings",
    )
    env = resident(source)
    completed(env.run({"start": "yes"}))
    second = env.run()
    completed(second)
    assert second.result == "null", second.result


def test_a_process_over_its_memory_bound_is_recycled(resident: Callable[..., Resident]) -> None:
    env = resident(COUNTER, rss_max=1)  # every process is over one byte
    for _ in range(3):
        outcome = env.run()
        completed(outcome)
        assert outcome.result == "1"


def test_each_run_has_its_own_output_and_output_cap(resident: Callable[..., Resident]) -> None:
    source = action(
        """
        count++
        fmt.Println("run", count, "prints")
        fmt.Fprintln(os.Stderr, "run", count, "complains")
        if n, _ := strconv.Atoi(engine.Params.Get("bulk")); n > 0 {
            os.Stdout.Write(bytes.Repeat([]byte("x"), n)) // counted, not all kept
        }
        return nil
        """,
        "bytes", "fmt", "os", "strconv",
        extra="""
        var count int

        func init() { fmt.Println("init prints") } // once, in the first run of the process
        """,
    )
    env = resident(source)
    # Most of the output cap in each of two runs: neither passes it, each counts its own.
    bulk = env.limits.output_bytes * 3 // 4
    first = env.run({"bulk": str(bulk)})
    completed(first)
    assert first.stdout.startswith("init prints\nrun 1 prints\nrun 1 complains\nxxx")
    second = env.run({"bulk": str(bulk)})
    completed(second)
    assert "run 1" not in second.stdout
    assert second.stdout.startswith("run 2 prints\nrun 2 complains\nxxx")
    third = env.run()
    completed(third)
    assert third.stdout == "run 3 prints\nrun 3 complains\n"


def test_tmp_is_kept_with_the_process_and_emptied_with_it(
        resident: Callable[..., Resident]) -> None:
    source = action(
        """
        count++
        before, _ := os.ReadFile("/tmp/note")
        os.WriteFile("/tmp/note", []byte(fmt.Sprint("written by run ", count)), 0o600)
        if engine.Params.Get("then") == "exit" {
            os.Exit(1)
        }
        return engine.Result.Set(string(before))
        """,
        "fmt", "os",
        extra="var count int",
    )
    env = resident(source)
    assert env.run().result == ""
    assert env.run().result == "written by run 1"
    assert env.run({"then": "exit"}).status == "failed"
    assert env.run().result == ""  # a new process starts on an empty /tmp


def test_a_legacy_program_runs_fresh_every_time(resident: Callable[..., Resident]) -> None:
    # A whole program (legacy mode, func main) has no Run to call again: it is served as in
    # a warm environment, one process per run.
    source = dedent(
        """
        package main

        import "fmt"

        var count int

        func main() {
            count++
            fmt.Println("count", count)
        }
        """
    )
    env = resident(source, compat="legacy")
    for _ in range(2):
        outcome = env.run()
        completed(outcome)
        assert outcome.stdout == "count 1\n"


def test_children_never_waited_for_do_not_pile_up(resident: Callable[..., Resident]) -> None:
    # Each run leaves 20 zombies (started, never waited for): kept while they are few, the
    # process is replaced before they can use up the container's pids limit.
    source = action(
        """
        count++
        for i := 0; i < 20; i++ {
            if err := exec.Command("true").Start(); err != nil {
                return err
            }
        }
        return engine.Result.Set(count)
        """,
        "os/exec",
        extra="var count int",
    )
    env = resident(source)
    assert [env.run().result for _ in range(4)] == ["1", "2", "1", "2"]


def test_the_supervisors_deadline_ends_an_overrunning_run(
        resident: Callable[..., Resident]) -> None:
    # The worker's own timeout normally ends a run; should it not (a worker gone quiet), the
    # supervisor's deadline (the seal's timeout and a grace) kills the resident process.
    from worker.wire.frames import MARKER_MAX, encode_frame

    env = resident(COUNTER)
    completed(env.run())
    stream, nonce = env.env.stream, "backstop-nonce"
    stream.count_from_zero(None, nonce)
    stream.send(encode_frame({**env.job, "params": {"then": "sleep"}})
                + encode_frame({"t": "seal", "nonce": nonce, "timeout_ms": 200}))
    frames = []
    give_up = time.monotonic() + 60
    while True:
        is_marker, message = stream.next(give_up, 1 << 20)
        if is_marker:
            break
        frames.append(message)
    assert message["t"] == "exited" and message["nonce"] == nonce, message
    assert frames[-1]["t"] == "end" and frames[-1]["status"] == "failed", frames
    assert "killed" in frames[-1]["error"], frames[-1]
    stream.send(encode_frame({"t": "finish"}))
    is_marker, done = stream.next(time.monotonic() + 30, MARKER_MAX)
    assert is_marker and done["t"] == "done" and done["clean"] and not done["kept"], done
    # And the environment serves on, with a new process.
    assert env.run().result == "1"
