"""The JavaScript engine in resident mode (engines/PROTOCOL.md, "Resident mode"): one Node
process serves run after run of one code, as Lambda keeps its process between invocations.
What a code's owner notices: module state that lives on, a fresh process after a run that
crashed, exited, timed out or grew too big, and runs that stay apart (frames, output, caps,
child processes). Driven from the protocol text with `docker run … serve`, as conftest's
run_engine_warm, but one bind for many jobs."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from .conftest import Served, resident


def src(text: str) -> str:
    return dedent(text).lstrip("\n")


def result(served: Served) -> str | None:
    found = served.out.result
    return found["value"] if found else None


COUNTER = src(
    """
    const fs = require("fs");
    let runs = 0;  // module state: lives as long as the process
    async function Run(engine) {
      runs += 1;
      const how = engine.params.get("how");
      if (how === "exit") process.exit(3);
      if (how === "throw") throw new Error("thrown");
      if (how === "crash") {
        setTimeout(() => { throw new Error("in a timer"); }, 1);
        await new Promise((resolve) => setTimeout(resolve, 5000));
      }
      if (how === "reject") {
        Promise.reject(new Error("forgotten"));
        await new Promise((resolve) => setTimeout(resolve, 5000));
      }
      if (how === "signal") process.kill(process.pid, "SIGTERM");
      if (how === "spin") for (;;) {}
      if (how === "hang") await new Promise((resolve) => setTimeout(resolve, 600000));
      if (how === "close") fs.closeSync(1);
      if (how === "hog") for (const hog = [];;) hog.push(new Array(100000).fill(Math.random()));
      engine.result.set(String(runs));
    }
    """
)


def test_module_state_persists_between_runs(javascript_image: str) -> None:
    with resident(javascript_image, COUNTER) as env:
        served = [env.run() for _ in range(3)]
    assert [result(s) for s in served] == ["1", "2", "3"]
    assert all(s.kept and s.out.end == {"t": "end", "status": "completed"} for s in served)


def test_a_kept_process_outlasts_its_file_limit(javascript_image: str) -> None:
    """300 runs in one process, more than the 256 files the sandbox lets it hold."""
    with resident(javascript_image, COUNTER) as env:
        served = [env.run() for _ in range(300)]
    assert [result(s) for s in served] == [str(n) for n in range(1, 301)]
    assert all(s.kept for s in served)


def test_a_run_that_throws_keeps_the_process(javascript_image: str) -> None:
    """As on Lambda: an error Run throws (or rejects with) fails that run only."""
    with resident(javascript_image, COUNTER) as env:
        first = env.run()
        failed = env.run({"how": "throw"})
        after = env.run()
    assert result(first) == "1"
    assert failed.out.end == {"t": "end", "status": "failed", "error": "thrown"}
    assert failed.kept
    assert result(after) == "3"


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("exit", "process.exit() called with code 3"),
        ("crash", "in a timer"),
        ("reject", "forgotten"),
        ("signal", "the JavaScript engine was killed by signal 15"),
        ("close", None),  # its own stdout closed: the capture cannot serve another run
    ],
)
def test_a_run_that_ends_its_process_gets_a_fresh_one(
    javascript_image: str, how: str, error: str | None
) -> None:
    with resident(javascript_image, COUNTER) as env:
        assert result(env.run()) == "1"
        ended = env.run({"how": how})
        again = [env.run() for _ in range(2)]
    if error is not None:
        assert ended.out.end == {"t": "end", "status": "failed", "error": error}, ended.out.frames
    assert not ended.kept
    assert [result(s) for s in again] == ["1", "2"]  # the code loaded again, state reset
    assert all(s.kept for s in again)


def test_a_run_that_times_out_gets_a_fresh_process(javascript_image: str) -> None:
    """The worker gives up at the run's timeout and sends `finish` without an end frame."""
    with resident(javascript_image, COUNTER) as env:
        assert result(env.run()) == "1"
        spun = env.run({"how": "spin"}, timeout=2)
        assert result(env.run()) == "1"
        hung = env.run({"how": "hang"}, timeout=2)
        after = env.run()
    for ended in (spun, hung):
        assert not ended.out.of("end") and not ended.kept
    assert result(after) == "1" and after.kept


def test_the_supervisors_deadline_ends_an_overrunning_run(javascript_image: str) -> None:
    """No `finish` from the worker: the supervisor's backstop (the seal's timeout plus its
    grace) kills the resident process, says `exited`, and the environment serves on."""
    with resident(javascript_image, COUNTER) as env:
        assert result(env.run()) == "1"
        spun = env.run({"how": "spin"}, timeout=1, finish=False)
        after = env.run()
    assert spun.exited is not None and spun.exited["exit_code"] == 137
    assert not spun.kept
    assert result(after) == "1" and after.kept


def test_a_run_out_of_heap_gets_a_fresh_process(javascript_image: str) -> None:
    """V8's heap limit (256 - 64 MiB) ends the Node; the supervisor reports it as in warm
    mode, and the next run gets a fresh process."""
    with resident(javascript_image, COUNTER, memory="256m") as env:
        assert result(env.run()) == "1"
        hog = env.run({"how": "hog"})
        after = env.run()
    message = "JavaScript heap out of memory (heap limit 192 MiB)"
    assert hog.out.frames == [
        {"t": "log", "level": "error", "content": f"Action execution failed: {message}"},
        {"t": "end", "status": "failed", "error": message},
    ]
    assert hog.exited is not None and hog.exited["exit_code"] == 134
    assert not hog.kept
    assert result(after) == "1" and after.kept


def test_a_run_the_worker_did_not_take_gets_a_fresh_process(javascript_image: str) -> None:
    """A run that ended but broke one of the worker's limits (its `finish` says `"ended":
    false`) does not leave its process to the next run."""
    with resident(javascript_image, COUNTER) as env:
        assert result(env.run()) == "1"
        refused = env.run(ended=False)
        after = env.run()
    assert result(refused) == "2" and not refused.kept
    assert result(after) == "1" and after.kept


def test_the_memory_threshold_recycles_the_process(javascript_image: str) -> None:
    """A process whose resident memory is past `rss_max` at the end of a run is replaced."""
    with resident(javascript_image, COUNTER, rss_max=1 << 20) as env:
        served = [env.run() for _ in range(3)]
    assert [result(s) for s in served] == ["1", "1", "1"]
    assert not any(s.kept for s in served)
    assert all(s.done["clean"] for s in served)


def test_frames_of_an_ended_run_never_reach_the_next(javascript_image: str) -> None:
    source = src(
        """
        let first = true;
        let saved = null;
        async function Run(engine) {
          if (first) {
            first = false;
            saved = engine;
            setTimeout(() => {
              engine.log.info("late log");
              engine.result.set("late result", { statusCode: 500 });
            }, 100);
            engine.log.info("first run");
            engine.result.set("first");
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 500));  // the timer fires now
          engine.log.info(`same engine object: ${saved === engine}`);
          engine.log.info(`the first run's params: ${JSON.stringify(saved.params.toObject())}`);
        }
        """
    )
    with resident(javascript_image, source) as env:
        first = env.run({"who": "first"})
        second = env.run({"who": "second"})
    assert first.out.logs == [("info", "first run")]
    assert result(first) == "first"
    assert second.out.logs == [
        ("info", "same engine object: false"),
        ("info", 'the first run\'s params: {"who":"first"}'),
    ]
    # A fresh result: nothing the first run's object set, before or after its end.
    assert second.out.result == {"t": "result", "value": "", "status_code": 200,
                                 "content_type": "text"}
    assert "late" not in second.out.raw.decode()


def test_child_processes_of_a_run_are_gone_before_the_next(javascript_image: str) -> None:
    source = src(
        """
        const fs = require("fs");
        const { spawn } = require("child_process");
        let first = true;
        function alive() {
          return fs.readdirSync("/proc").filter((name) => /^\\d+$/.test(name)).filter((pid) => {
            try {
              const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
              return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
            } catch { return false; }
          }).map(Number).sort((a, b) => a - b);
        }
        async function Run(engine) {
          if (first) {
            first = false;
            spawn("sh", ["-c", "sleep 1; echo late > /tmp/late"], { stdio: "ignore" });
            spawn("sh", ["-c", "sleep 1; echo late > /tmp/detached"],
                  { stdio: "ignore", detached: true }).unref();
            engine.result.set(String(alive().length));
            return;
          }
          await new Promise((resolve) => setTimeout(resolve, 2000));
          engine.result.set({ alive: alive(), me: process.pid,
                              tmp: fs.readdirSync("/tmp").sort() }, { contentType: "json" });
        }
        """
    )
    with resident(javascript_image, source) as env:
        first = env.run()
        second = env.run()
    assert int(result(first)) >= 4  # the supervisor, Node, the two shells (and their sleeps)
    assert first.kept and second.kept
    found = json.loads(result(second))
    assert found["alive"] == sorted([1, found["me"]]), found
    assert found["tmp"] == []  # neither child lived to write its file


def test_output_and_its_cap_belong_to_each_run(javascript_image: str) -> None:
    source = src(
        """
        const { execSync } = require("child_process");
        async function Run(engine) {
          const size = Number(engine.params.get("size"));
          console.log(engine.params.get("tag"));
          process.stdout.write("x".repeat(size));
          execSync(`printf 'from a child of %s' ${engine.params.get("tag")}`, { stdio: "inherit" });
          engine.log.info("y".repeat(100));
        }
        """
    )
    with resident(javascript_image, source) as env:
        big = env.run({"tag": "first", "size": "200000"})
        small = env.run({"tag": "second", "size": "10"}, limits={"log_content_max": 10})
        big_again = env.run({"tag": "third", "size": "200000"})
    for served, tag in ((big, "first"), (big_again, "third")):
        stdout = served.out.of("stdout")[0]
        assert stdout["data"] == f"{tag}\n" + "x" * (65536 - len(tag) - 1)
        assert stdout["total"] == len(tag) + 1 + 200000 + len(f"from a child of {tag}")
        assert served.out.logs == [("info", "y" * 100)]
    assert small.out.stdout == "second\nxxxxxxxxxxfrom a child of second"
    assert small.out.of("stdout")[0]["total"] == len(small.out.stdout)
    assert small.out.logs == [("info", "y" * 10)]  # this run's log cap
    assert all(s.kept for s in (big, small, big_again))


def test_a_job_reaches_the_kept_process_with_nothing_started(javascript_image: str) -> None:
    """The kept Node serves the next job itself: the same process, no new boot."""
    source = "exports.Run = (engine) => engine.result.set(String(process.pid));\n"
    with resident(javascript_image, source) as env:
        pids = {result(env.run()) for _ in range(5)}
    assert len(pids) == 1


def test_tmp_and_stdin_between_runs(javascript_image: str) -> None:
    """/tmp stays, as on Lambda; stdin stays empty; descriptors do not leak to children."""
    source = src(
        """
        const fs = require("fs");
        const { execFileSync } = require("child_process");
        async function Run(engine) {
          const before = fs.existsSync("/tmp/note") ? fs.readFileSync("/tmp/note", "utf8") : "";
          fs.writeFileSync("/tmp/note", "written by an earlier run");
          const fds = execFileSync("ls", ["/proc/self/fd"]).toString().split("\\n").filter(Boolean);
          engine.result.set({ before, stdin: fs.readFileSync(0, "utf8"), fds },
                            { contentType: "json" });
        }
        """
    )
    with resident(javascript_image, source) as env:
        first, second = env.run(), env.run()
    assert json.loads(result(first))["before"] == ""
    found = json.loads(result(second))
    assert found["before"] == "written by an earlier run"
    assert found["stdin"] == ""
    assert found["fds"] in (["0", "1", "2", "3"], ["0", "1", "2"])
