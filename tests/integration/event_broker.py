"""Test helpers for the events consumer: run `codeactions events` as a real process, publish
to the real RabbitMQ with pika, read dead-letter queues, and a private RabbitMQ node that a
test may restart without disturbing the session's stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from worker.events_consumer import connection_parameters

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_PORT = int(os.environ.get("CODEACTIONS_TEST_BASE_PORT", "25430"))
# A second RabbitMQ node: AMQP on base+7, its distribution and epmd ports at +107/+108
# (inside the range reserved for this checkout's tests).
PRIVATE_BROKER_PORT = BASE_PORT + 7
PRIVATE_BROKER_STATE = REPO_ROOT / ".state" / "test-private-broker"


def eventually(check: Callable[[], Any], timeout: float = 30, every: float = 0.2) -> Any:
    """The first truthy result of `check`, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        time.sleep(every)


class Publisher:
    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(connection_parameters(url))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def publish(self, exchange: str, payload: Any, routing_key: str = "event") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent,
                                          content_type="application/json")
        self.channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)

    def drain(self, queue: str) -> list[tuple[dict, bytes]]:
        """Every message waiting in `queue` (acknowledged): (headers, body)."""
        messages = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((dict(properties.headers or {}), body))

    def consumers(self, queue: str) -> int:
        channel = self.connection.channel()
        try:
            return channel.queue_declare(queue, passive=True).method.consumer_count
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        finally:
            if channel.is_open:
                channel.close()

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


class ConsumerProcess:
    """`codeactions events` as the platform runs it, its output kept in `log_path`."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "codeactions.cli", "events"], env=env, cwd=REPO_ROOT,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
