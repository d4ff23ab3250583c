"""Schemathesis over `/openapi.json` against the test platform: every check, every phase
(examples, coverage, fuzzing, stateful), so the document and the server cannot drift apart.

`make test` runs a bounded pass with a fixed seed (a failure is reproducible from the
report); `make fuzz` sets CODEACTIONS_FUZZ_EXAMPLES high and leaves the seed to chance, and
prints the figures the README quotes. Schemathesis runs as its own CLI (`st run`): its
pytest plugin would tie our Hypothesis settings to its own.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, TEST_STATE

CONFIG = Path(__file__).with_name("schemathesis.toml")
#: Test cases per operation and phase in `make test`: a few minutes on two cores.
BOUNDED_EXAMPLES = 8
BOUNDED_SEED = 15


def run_schemathesis(base_url: str, examples: int, seed: int, report_dir: Path,
                     max_time: int | None = None) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st), "--config-file", str(CONFIG), "run", f"{base_url}/openapi.json",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", str(examples),
        "--seed", str(seed),
        # One worker: Hypothesis parses Schemathesis's sources with `ast` to describe its
        # lambdas, and CPython 3.11's parser fails when two threads do it at once ("AST
        # constructor recursion depth mismatch", a Runtime Error of the run).
        "--workers", "1",
        # A request is answered within the read timeout or a code's own timeout.
        "--request-timeout", "60",
        # A sync call lasts as long as its code runs (a fuzzed code's first run on a busy
        # machine takes seconds); past this, something is held, which the check is for.
        "--max-response-time", "60",
        "--report", "junit,ndjson", "--report-dir", str(report_dir),
        "--no-color",
    ]
    if max_time:
        command += ["--max-time", str(max_time)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=(max_time or 1800) + 600)


def _summary(output: str) -> str:
    """The end of Schemathesis's report: counts of operations, test cases and failures."""
    lines = output.strip().splitlines()
    return "\n".join(lines[-40:])


@pytest.mark.timeout(3600)
def test_the_api_keeps_to_its_openapi_document(platform):
    examples = int(os.environ.get("CODEACTIONS_FUZZ_EXAMPLES", BOUNDED_EXAMPLES))
    seed = int(os.environ.get("CODEACTIONS_FUZZ_SEED", "0")) or (
        BOUNDED_SEED if examples == BOUNDED_EXAMPLES else random.randrange(1, 2**31)
    )
    max_time = int(os.environ.get("CODEACTIONS_FUZZ_MAX_TIME", "0")) or None
    report_dir = TEST_STATE / "schemathesis"
    result = run_schemathesis(platform.base_url, examples, seed, report_dir, max_time)
    summary = _summary(result.stdout + result.stderr)
    print(f"seed {seed}, {examples} examples per operation\n{summary}")
    (report_dir / "last-run.txt").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (
        f"Schemathesis found failures (seed {seed}; full output in "
        f"{report_dir / 'last-run.txt'}):\n{summary}"
    )
    generated = re.search(r"(\d+) generated", summary)
    assert generated and int(generated.group(1)) > 0, summary
    # `make fuzz` promises at least this many requests (one test case, one request, but for
    # the stateful phase's sequences).
    least = int(os.environ.get("CODEACTIONS_FUZZ_MIN_CASES", "0"))
    assert int(generated.group(1)) >= least, summary
