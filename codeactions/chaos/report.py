"""What one chaos scenario did to the runs and the callers: counted from the database (the
truth about runs) and from the answers the load recorded, checked against issue 14's
targets.

**Double execution** is detected three ways, per run:
1. the `executions` column of `coderuns`, when the schema has it: the worker's claim adds
   one (`UPDATE … SET executions = executions + 1`), so more than 1 means claimed twice;
2. independently of the platform's bookkeeping, each chaos code logs a fresh random marker
   as its first act: two different markers in one run's logs are two executions whose logs
   were both stored;
3. the run's result carries the marker of the execution that produced it: a result whose
   marker is not among the run's logged markers came from another execution than its logs.
An execution that left no trace at all (killed before its logs or result were stored) is
visible only to (1).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from codeactions.chaos.codes import MARKER_PREFIX, TIMEOUT
from codeactions.chaos.faults import Fault
from codeactions.chaos.load import NO_ANSWER, Answer

RECOVERY_TARGET = 30.0
HANG_MARGIN = 5.0  # seconds past the code's timeout after which a sync answer is a hang
PENDING = ("queued", "started")


def has_executions_column(conn: Connection) -> bool:
    return conn.execute(text(
        "SELECT 1 FROM information_schema.columns "
        "WHERE table_name = 'coderuns' AND column_name = 'executions'")).first() is not None


def pending_runs(conn: Connection, code_ids: list[str]) -> int:
    return conn.execute(text(
        "SELECT count(*) FROM coderuns WHERE code_id = ANY(CAST(:codes AS uuid[])) "
        "AND status IN ('queued', 'started')"), {"codes": code_ids}).scalar_one()


def read_runs(conn: Connection, codes: dict[str, str]) -> list[dict[str, Any]]:
    """Every run of the scenario's codes with its language, kind (from its parameters),
    logged markers and the marker of its result."""
    language_of = {code_id: language for language, code_id in codes.items()}
    executions = ", executions" if has_executions_column(conn) else ""
    rows = conn.execute(text(
        "SELECT id, code_id, status, exit_reason, result, params, created_at, started_at, "
        f"finished_at{executions} FROM coderuns "
        "WHERE code_id = ANY(CAST(:codes AS uuid[]))"), {"codes": list(language_of)}
    ).mappings().all()
    markers: dict[str, list[str]] = {}
    for run_id, content in conn.execute(text(
            "SELECT run_id, content FROM codelogs WHERE code_id = ANY(CAST(:codes AS uuid[]))"
            " AND content LIKE :prefix ORDER BY seq"),
            {"codes": list(language_of), "prefix": MARKER_PREFIX + "%"}):
        markers.setdefault(str(run_id), []).append(content[len(MARKER_PREFIX):].strip())
    runs = []
    for row in rows:
        params = row["params"] or {}
        runs.append({
            "id": str(row["id"]), "language": language_of[str(row["code_id"])],
            "kind": params.get("kind"), "seq": params.get("seq"),
            "status": row["status"], "exit_reason": row["exit_reason"],
            "result_marker": _result_marker(row["result"]),
            "log_markers": markers.get(str(row["id"]), []),
            "executions": row.get("executions"),
            "created_at": _epoch(row["created_at"]), "started_at": _epoch(row["started_at"]),
            "finished_at": _epoch(row["finished_at"]),
        })
    return runs


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _result_marker(result: str | None) -> str | None:
    try:
        value = json.loads(result or "")
    except ValueError:
        return None
    return value.get("execution") if isinstance(value, dict) else None


def executed_twice(run: dict[str, Any]) -> list[str]:
    """Why `run` looks executed more than once (empty: it does not)."""
    reasons = []
    if run["executions"] is not None and run["executions"] > 1:
        reasons.append(f"claimed {run['executions']} times")
    if len(set(run["log_markers"])) > 1:
        reasons.append(f"{len(set(run['log_markers']))} execution markers in its logs")
    if run["result_marker"] and run["log_markers"] \
            and run["result_marker"] not in run["log_markers"]:
        reasons.append("result from another execution than its logs")
    return reasons


def _status_key(answer: Answer) -> str:
    return str(answer.status)


def first_success(fault: Fault, language: str, answers: list[Answer],
                  runs: list[dict[str, Any]], until: float = float("inf"),
                  ) -> dict[str, float | None]:
    """Seconds from the part being back to the first sync answer 200 and the first async
    run completed, for one language (None: none before the next fault, `until`, or before
    the load stopped)."""
    back = fault.back
    if back is None:
        return {"sync": None, "async": None}
    sync = [a.answered for a in answers if a.kind == "sync" and a.language == language
            and a.ok and back <= a.answered < until]
    done = [r["finished_at"] for r in runs
            if r["kind"] == "async" and r["language"] == language and r["status"] == "completed"
            and r["finished_at"] is not None and back <= r["finished_at"] < until]
    return {"sync": round(min(sync) - back, 2) if sync else None,
            "async": round(min(done) - back, 2) if done else None}


def analyse(name: str, title: str, languages: list[str], affected: list[str],
            faults: list[Fault], answers: list[Answer], runs: list[dict[str, Any]],
            settle: dict[str, Any], containers: dict[str, int]) -> dict[str, Any]:
    accepted = {a.run_id for a in answers if a.kind == "async" and a.ok and a.run_id}
    by_id = {run["id"]: run for run in runs}
    async_answers = [a for a in answers if a.kind == "async"]
    sync_answers = [a for a in answers if a.kind == "sync"]
    # Answers that told the caller the request failed (a timeout or reset tells nothing).
    error_seqs = {(a.kind, a.language, str(a.seq)) for a in answers
                  if isinstance(a.status, int) and a.status >= 400 and a.status != 408}
    twice = {run["id"]: why for run in runs if (why := executed_twice(run))}
    stranded = [run for run in runs if run["status"] in PENDING]
    failed = Counter(run["exit_reason"] or "(none)" for run in runs if run["status"] == "failed")
    all_500 = [a for a in answers if a.status == 500]
    platform_500 = [a for a in all_500 if not a.run_failed]
    # A 500 naming its run says the run failed; a chaos code never fails by itself, so
    # its exit reason says which fault made it fail.
    reasons_500 = Counter(
        (by_id[a.run_id]["exit_reason"] or by_id[a.run_id]["status"]) if a.run_id in by_id
        else "no run: the platform's own error" for a in all_500)
    hangs = [a for a in sync_answers if a.status == NO_ANSWER
             or a.answered - a.sent > TIMEOUT + HANG_MARGIN]
    bare_503 = [a for a in answers if a.status == 503 and not a.retry_after]
    recovery = []
    for index, fault in enumerate(faults):
        until = faults[index + 1].at if index + 1 < len(faults) else float("inf")
        per_language = {lang: first_success(fault, lang, answers, runs, until)
                        for lang in affected}
        times = [t for seconds in per_language.values() for t in seconds.values()]
        worst = None if not times or None in times else max(times)
        recovery.append({"fault": index + 1, "worst_s": worst, "languages": per_language})
    worsts = [r["worst_s"] for r in recovery]
    result = {
        "scenario": name, "title": title, "languages": languages, "affected": affected,
        "faults": [f.as_json() for f in faults],
        "async": {
            "submitted": len(async_answers), "accepted": len(accepted),
            "refused": dict(Counter(_status_key(a) for a in async_answers if not a.ok)),
            "accepted_but_missing": sorted(accepted - set(by_id)),
        },
        "sync": {
            "calls": len(sync_answers),
            "answers": dict(Counter(_status_key(a) for a in sync_answers)),
            "hangs": len(hangs),
            "slowest_s": round(max((a.answered - a.sent for a in sync_answers), default=0), 2),
        },
        "answers_500": {"total": len(all_500), "platform": len(platform_500),
                        "run_failed": len(all_500) - len(platform_500),
                        "by_reason": dict(reasons_500),
                        "examples": [a.body for a in platform_500[:5]]},
        "answers_503_without_retry_after": len(bare_503),
        "runs": {
            "total": len(runs),
            "by_kind": dict(Counter(str(run["kind"]) for run in runs)),
            "completed": sum(run["status"] == "completed" for run in runs),
            "failed_by_reason": dict(failed),
            "stranded": len(stranded),
            "stranded_runs": [{k: run[k] for k in ("id", "kind", "status", "language")}
                              for run in stranded[:20]],
            "executed_twice": len(twice),
            "executed_twice_runs": [{"id": i, "why": why} for i, why in list(twice.items())[:20]],
            "ran_after_an_error_answer": sum(
                1 for run in runs if run["status"] == "completed"
                and (run["kind"], run["language"], run["seq"]) in error_seqs),
            "executions_column": any(run["executions"] is not None for run in runs),
        },
        "recovery": {"per_fault": recovery,
                     "worst_s": None if None in worsts or not worsts else max(worsts),
                     "median_s": statistics.median(worsts) if worsts and None not in worsts
                     else None},
        "settle": settle,
        "sandboxes_after_settle": containers,
        "errors_seen": dict(Counter(f"{a.status} {a.body[:120]}" for a in answers
                                    if not a.ok and a.body).most_common(8)),
    }
    result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    runs, worst = result["runs"], result["recovery"]["worst_s"]
    dead_sandboxes = sum(n for state, n in result["sandboxes_after_settle"].items()
                         if state in ("created", "exited", "dead"))
    checks = [
        ("0 stranded (queued or started after the settle period)", runs["stranded"],
         runs["stranded"] == 0),
        ("0 executed twice", runs["executed_twice"], runs["executed_twice"] == 0),
        ("0 accepted runs missing", len(result["async"]["accepted_but_missing"]),
         not result["async"]["accepted_but_missing"]),
        ("0 answers 500 (the platform's errors, or runs failed by the fault)",
         f"{result['answers_500']['total']}"
         + (f" ({_fmt_counts(result['answers_500']['by_reason'])})"
            if result["answers_500"]["total"] else ""),
         result["answers_500"]["total"] == 0),
        ("every 503 has Retry-After", result["answers_503_without_retry_after"],
         result["answers_503_without_retry_after"] == 0),
        (f"no sync call hangs past the code's timeout + {HANG_MARGIN:.0f} s",
         result["sync"]["hangs"], result["sync"]["hangs"] == 0),
        ("no dead sandbox left after the settle period (created or exited)",
         dead_sandboxes, dead_sandboxes == 0),
        (f"recovery ≤ {RECOVERY_TARGET:.0f} s after the part is back",
         "never" if worst is None else f"{worst} s",
         worst is not None and worst <= RECOVERY_TARGET),
    ]
    return [{"target": t, "measured": m, "met": ok} for t, m, ok in checks]


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} ×{value}" for key, value in sorted(
        counts.items(), key=lambda kv: -kv[1])) or "none"


def print_scenario(result: dict[str, Any]) -> None:
    faults = result["faults"]
    outages = [f["outage_s"] for f in faults if f["outage_s"] is not None]
    runs, sync, asyncs = result["runs"], result["sync"], result["async"]
    print(f"\n== {result['scenario']}: {result['title']} ==")
    print(f"faults: {len(faults)}; part back after " + (
        f"median {statistics.median(outages):.1f} s, max {max(outages):.1f} s"
        if outages else "—") + (f"; {len(faults) - len(outages)} never back"
                                if len(outages) < len(faults) else ""))
    print(f"async runs: submitted {asyncs['submitted']}, accepted {asyncs['accepted']}"
          f" (refused: {_fmt_counts(asyncs['refused'])})"
          + (f", MISSING {len(asyncs['accepted_but_missing'])}"
             if asyncs["accepted_but_missing"] else ""))
    print(f"runs in the database: {runs['total']} ({_fmt_counts(runs['by_kind'])}): "
          f"completed {runs['completed']}, failed: {_fmt_counts(runs['failed_by_reason'])}; "
          f"stranded {runs['stranded']}, executed twice {runs['executed_twice']}"
          + ("" if runs["executions_column"] else " (markers only: no executions column)")
          + f"; ran after an error answer {runs['ran_after_an_error_answer']}")
    print(f"sync calls: {sync['calls']} → {_fmt_counts(sync['answers'])}; "
          f"slowest {sync['slowest_s']} s, hangs {sync['hangs']}")
    print(f"answers 500: {result['answers_500']['total']} "
          f"({_fmt_counts(result['answers_500']['by_reason'])}); "
          f"503 without Retry-After: {result['answers_503_without_retry_after']}")
    rec = result["recovery"]
    print("recovery (first success after the part is back): " + (
        f"worst {rec['worst_s']} s, median {rec['median_s']} s" if rec["worst_s"] is not None
        else "NOT within the load's end for some fault: " + "; ".join(
            f"#{r['fault']}: {r['languages']}" for r in rec["per_fault"]
            if r["worst_s"] is None)[:600]))
    print(f"settled in {result['settle']['seconds']} s; sandboxes after: "
          f"{result['sandboxes_after_settle']}")
    if result["errors_seen"]:
        print("error answers seen: " + "; ".join(
            f"{body!r} ×{n}" for body, n in list(result["errors_seen"].items())[:5]))
    for target in result["targets"]:
        print(f"  [{'met ' if target['met'] else 'MISS'}] {target['target']}: "
              f"{target['measured']}")


def print_summary(results: list[dict[str, Any]]) -> None:
    print("\n== make chaos: summary ==")
    for r in results:
        if "error" in r:
            print(f"{r['scenario']}: could not run: {r['error'][:300]}")
    results = [r for r in results if "error" not in r]
    header = (f"{'scenario':<16}{'faults':>7}{'async ok/sent':>15}{'completed':>10}"
              f"{'failed':>8}{'stranded':>9}{'twice':>6}{'sync 200/all':>14}"
              f"{'500s':>6}{'recovery':>10}{'targets':>9}")
    print(header)
    for r in results:
        sync = r["sync"]
        worst = r["recovery"]["worst_s"]
        met = sum(t["met"] for t in r["targets"])
        print(f"{r['scenario']:<16}{len(r['faults']):>7}"
              f"{r['async']['accepted']:>8}/{r['async']['submitted']:<6}"
              f"{r['runs']['completed']:>10}{sum(r['runs']['failed_by_reason'].values()):>8}"
              f"{r['runs']['stranded']:>9}{r['runs']['executed_twice']:>6}"
              f"{sync['answers'].get('200', 0):>7}/{sync['calls']:<6}"
              f"{r['answers_500']['total']:>6}"
              f"{'never' if worst is None else f'{worst:.1f} s':>10}"
              f"{met:>6}/{len(r['targets'])}")
