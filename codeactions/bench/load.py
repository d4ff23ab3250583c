"""Load for the bench: sync calls of `/action/endpoint/<id>` over kept-alive connections,
timed from request to full response, one at a time (paced or back to back) or from many
concurrent clients."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was measured."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # ceil
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Latencies:
    seconds: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, float | int | dict]:
        ms = [s * 1000 for s in self.seconds]
        return {
            "requests": len(ms),
            "p50_ms": round(percentile(ms, 0.50), 2),
            "p90_ms": round(percentile(ms, 0.90), 2),
            "p99_ms": round(percentile(ms, 0.99), 2),
            "max_ms": round(max(ms), 2) if ms else None,
            "statuses": dict(self.statuses),
        }


class Client:
    """One kept-alive HTTP connection to the API."""

    def __init__(self, base_url: str, timeout: float = 120) -> None:
        parts = urlsplit(base_url)
        self._host, self._port = parts.hostname, parts.port or 80
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self._timeout)
            try:
                self._conn.request(method, path, body=body)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def sequential(base_url: str, path: str, count: int, rate: float | None = None) -> Latencies:
    """`count` calls one after the other; with `rate`, started at that many per second."""
    client = Client(base_url)
    out = Latencies()
    interval = 1.0 / rate if rate else 0.0
    next_start = time.monotonic()
    try:
        for _ in range(count):
            if interval:
                delay = next_start - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_start += interval
            _timed_call(client, path, out)
    finally:
        client.close()
    return out


def _timed_call(client: Client, path: str, out: Latencies) -> None:
    """One POST, its latency and status recorded (0: the connection failed)."""
    started = time.perf_counter()
    try:
        status, _ = client.request("POST", path)
    except OSError:
        status = 0
    out.seconds.append(time.perf_counter() - started)
    out.statuses[status] += 1


def concurrent(base_url: str, path: str, clients: int, seconds: float) -> dict:
    """`clients` threads calling back to back for `seconds`: completed runs per second."""
    stop_at = time.monotonic() + seconds
    results = [Latencies() for _ in range(clients)]

    def _client(out: Latencies) -> None:
        client = Client(base_url)
        try:
            while time.monotonic() < stop_at:
                _timed_call(client, path, out)
        finally:
            client.close()

    threads = [threading.Thread(target=_client, args=(out,)) for out in results]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    merged = Latencies()
    for out in results:
        merged.seconds += out.seconds
        merged.statuses.update(out.statuses)
    ok = merged.statuses.get(200, 0)
    return {"clients": clients, "seconds": round(elapsed, 2),
            "runs_per_second": round(ok / elapsed, 1),
            "errors": sum(n for status, n in merged.statuses.items() if status != 200),
            **merged.summary()}
