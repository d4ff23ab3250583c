"""Where a sync call's time goes, from the run's own timestamps (`POST /run/<id>` returns
them): request → run stored (API), → claimed by a worker (queue), → finished (sandbox and
storing), → response back (signal, re-read, answer)."""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime
from typing import Any

from codeactions.bench.load import Client


def segments(platform: Any, code_id: str, calls: int, rate: float | None = None) -> dict:
    client = Client(platform.base_url)
    parts: dict[str, list[float]] = {"api_until_stored": [], "queue_until_claimed": [],
                                     "run_and_store": [], "signal_and_answer": [], "total": []}
    interval = 1.0 / rate if rate else 0.0
    try:
        for _ in range(calls):
            started = time.time()
            status, body = client.request("POST", f"/run/{code_id}")
            ended = time.time()
            if status != 200:
                continue
            run = json.loads(body)["result"]
            created, claimed, finished = (datetime.fromisoformat(run[name]).timestamp()
                                          for name in ("created_at", "started_at",
                                                       "finished_at"))
            parts["api_until_stored"].append(created - started)
            parts["queue_until_claimed"].append(claimed - created)
            parts["run_and_store"].append(finished - claimed)
            parts["signal_and_answer"].append(ended - finished)
            parts["total"].append(ended - started)
            if interval:
                time.sleep(max(0.0, interval - (ended - started)))
    finally:
        client.close()
    # Database timestamps are each transaction's start: a statement's own time falls in the
    # next part. Medians of each part (they need not add up to the median total).
    return {name: round(statistics.median(values) * 1000, 1) if values else None
            for name, values in parts.items()}
