"""A sync call is answered from the run its completion signal carries (no read of the row
back): the answer is the stored run, to the byte, for small results; a result too big to carry
and a signal without the run (a plain status) are answered from the row, just the same."""

from __future__ import annotations

import json
import threading

import redis
import requests

from shared.runs.completion import CHANNEL
from tests.integration.helpers import create_code, run_now

SMALL = 'def Run(engine):\n    engine.log.info("hi")\n    engine.result.set("ok " + "x" * 10)\n'
BIG = 'def Run(engine):\n    engine.result.set("y" * 200000)\n'


class _Signals:
    """What the platform's completion channel carries, as a second subscriber hears it."""

    def __init__(self, url: str) -> None:
        self.messages: dict[str, str] = {}
        self._pubsub = redis.Redis.from_url(url).pubsub()
        self._pubsub.psubscribe(CHANNEL.format(run_id="*"))
        self._pubsub.get_message(timeout=5)  # the subscription's confirmation
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message and message["type"] == "pmessage":
                run_id = message["channel"].decode().rsplit(":", 1)[1]
                self.messages[run_id] = message["data"].decode()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pubsub.close()


def _stored(platform, run_id: str) -> dict:  # noqa: ANN001
    return requests.get(platform.url(f"/coderun/{run_id}"), timeout=10).json()


def test_the_answer_is_the_stored_run_whether_or_not_the_signal_carries_it(platform):
    signals = _Signals(platform.settings().redis)
    try:
        small = create_code(platform, SMALL)
        answered = run_now(platform, small["id"])
        assert answered["status"] == "completed" and answered["result"] == "ok " + "x" * 10
        assert answered == _stored(platform, answered["id"])
        big = create_code(platform, BIG)
        large = run_now(platform, big["id"])
        assert large["result"] == "y" * 200000 and large == _stored(platform, large["id"])
        endpoint = requests.post(platform.url(f"/action/endpoint/{small['id']}"), timeout=60)
        assert endpoint.status_code == 200 and endpoint.text == "ok " + "x" * 10
    finally:
        signals.close()
    carried = json.loads(signals.messages[answered["id"]])
    assert carried["status"] == "completed" and carried["run"]["result"] == answered["result"]
    assert signals.messages[large["id"]] == "completed"  # too big to carry: the row is read
