"""The load `make chaos` keeps up while it breaks things: per language, one caller making sync
calls back to back (`/action/endpoint/<id>`) and one submitter of async runs at a steady
rate (`POST /coderun`). Every answer is recorded with when it was sent and received.

Each request names itself in its parameters (`kind`, `seq`), so every run row in the
database can be traced to the request that made it, even one whose caller got an error."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

#: What a connection that never answered is recorded as (no HTTP status).
NO_ANSWER = "no answer"
CONNECTION_FAILED = "connection failed"


@dataclass
class Answer:
    kind: str  # "sync" or "async"
    language: str
    seq: int
    sent: float  # time.time()
    answered: float
    status: int | str  # the HTTP status, or NO_ANSWER / CONNECTION_FAILED
    run_id: str | None = None
    retry_after: bool = False
    run_failed: bool = False  # a 500 naming its run: the run failed (not the platform)
    execution: str | None = None  # the marker a sync answer carries (see codes.py)
    body: str = ""  # the start of an answer that is not a success

    @property
    def ok(self) -> bool:
        return self.status == (200 if self.kind == "sync" else 202)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadPlan:
    sync_interval: float = 0.3  # seconds between the starts of one caller's sync calls
    async_per_second: dict[str, float] = field(default_factory=lambda: {
        "python": 0.6, "javascript": 0.4, "go": 0.3})
    async_sleep: dict[str, str] = field(default_factory=lambda: {
        "python": "1", "javascript": "1", "go": "1"})
    sync_timeout: float = 40.0  # the codes' timeout is 10 s: past 40 s a call hangs


class Load:
    def __init__(self, api_url: str, codes: dict[str, str], plan: LoadPlan) -> None:
        self.api_url = api_url
        self.codes = codes  # language -> code id
        self.plan = plan
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for language in self.codes:
            for target in (self._sync_caller, self._async_submitter):
                thread = threading.Thread(target=target, args=(language,), daemon=True,
                                          name=f"{target.__name__}-{language}")
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        """Stop sending; wait for the calls under way (each ends by its own timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def _sync_caller(self, language: str) -> None:
        url = f"{self.api_url}/action/endpoint/{self.codes[language]}"
        seq = 0
        while not self._stop.is_set():
            seq += 1
            sent = time.time()
            answer = self._call("sync", language, seq, sent, lambda s=seq: requests.post(
                url, params={"kind": "sync", "seq": str(s), "sleep": "0"},
                timeout=self.plan.sync_timeout))
            self._record(answer)
            pause = self.plan.sync_interval if answer.ok else max(0.5, self.plan.sync_interval)
            self._stop.wait(max(0.0, sent + pause - time.time()))

    def _async_submitter(self, language: str) -> None:
        rate = self.plan.async_per_second.get(language, 0.5)
        sleep = self.plan.async_sleep.get(language, "1")
        url = f"{self.api_url}/coderun"
        seq = 0
        next_at = time.time()
        while not self._stop.is_set():
            seq += 1
            sent = time.time()
            body = {"code_id": self.codes[language],
                    "params": {"kind": "async", "seq": str(seq), "sleep": sleep}}
            self._record(self._call("async", language, seq, sent, lambda b=body: requests.post(
                url, json=b, timeout=30)))
            next_at += 1.0 / rate
            self._stop.wait(max(0.0, next_at - time.time()))

    @staticmethod
    def _call(kind: str, language: str, seq: int, sent: float, send) -> Answer:  # noqa: ANN001
        try:
            response = send()
        except requests.Timeout:
            return Answer(kind, language, seq, sent, time.time(), NO_ANSWER)
        except requests.RequestException as exc:
            return Answer(kind, language, seq, sent, time.time(), CONNECTION_FAILED,
                          body=type(exc).__name__)
        answered = time.time()
        answer = Answer(kind, language, seq, sent, answered, response.status_code,
                        retry_after="Retry-After" in response.headers)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if isinstance(payload, dict):
            if kind == "async" and response.status_code == 202:
                answer.run_id = payload.get("id")
            elif kind == "sync" and response.status_code == 200:
                answer.execution = payload.get("execution")
            else:
                answer.run_id = payload.get("run_id")
        answer.run_failed = response.status_code == 500 and bool(answer.run_id)
        if not answer.ok:
            answer.body = response.text[:300]
        return answer
