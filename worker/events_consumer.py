"""`codeactions events`: apply the platform's project and permission events (pika).

- Each queue is used as it is when it exists (the rest of the platform may own it);
  otherwise it is declared durable and bound to its topic exchange with `#`, as the seed
  bound it. Its dead-letter queue is `<queue>.dead-letter`.
- One message at a time per queue, acknowledged only after the database commit: a crash or a
  broker restart redelivers it, and applying an event twice changes nothing.
- A message that is not JSON or does not fit the event's shape goes to the dead-letter queue
  at once. One whose handling fails otherwise is published again at the queue's tail with an
  attempt count, and dead-lettered after `events_max_attempts`, so it never blocks the queue.
  A database outage is not the message's fault: the consumer waits and retries it uncounted.
- A lost broker connection is re-established with exponential backoff (0.5 s … 30 s).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.exc import InterfaceError, OperationalError

from shared.access.permission_sync import apply_permission_event
from shared.access.project_sync import apply_project_event
from shared.db import Database
from shared.errors import InvalidInput
from shared.settings import Settings

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-codeactions-attempts"
ERROR_HEADER = "x-codeactions-error"
SOURCE_QUEUE_HEADER = "x-codeactions-queue"
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
BROKER_ERRORS = (pika.exceptions.AMQPError, OSError)


@dataclass(frozen=True)
class Subscription:
    exchange: str
    queue: str
    apply: Callable[[Database, Any], str]

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead-letter"


def subscriptions(settings: Settings) -> list[Subscription]:
    return [
        Subscription(settings.project_exchange, settings.project_queue, apply_project_event),
        Subscription(settings.permission_exchange, settings.permission_queue,
                     apply_permission_event),
    ]


def connection_parameters(url: str) -> pika.URLParameters:
    # Celery/kombu write the default vhost "/" as "//"; pika wants it percent-encoded.
    if url.endswith("//"):
        url = url[:-2] + "/%2F"
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    parameters.blocked_connection_timeout = 60
    return parameters


class _Stopping(Exception):
    """Stop requested while a message waited: leave it unacknowledged for redelivery."""


class EventsConsumer:
    def __init__(
        self, settings: Settings, db: Database, subs: list[Subscription] | None = None
    ) -> None:
        self.parameters = connection_parameters(settings.rabbitmq_url)
        self.db = db
        self.subscriptions = subs or subscriptions(settings)
        self.max_attempts = settings.events_max_attempts
        self._stopping = False
        self._connected = False

    def stop(self) -> None:
        self._stopping = True

    def run_forever(self) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping:
            try:
                self._consume()
            except _Stopping:
                break
            except BROKER_ERRORS as exc:
                if self._connected:  # it worked for a while: start the backoff over
                    delay, self._connected = BACKOFF_FIRST, False
                log.warning("broker connection lost or refused (%s); reconnecting in %.1f s",
                            str(exc) or type(exc).__name__, delay)
                self._pause(delay)
                delay = min(BACKOFF_MAX, delay * 2)

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, seconds))

    def _consume(self) -> None:
        connection = pika.BlockingConnection(self.parameters)
        try:
            for sub in self.subscriptions:
                _declare(connection, sub)
            channel = connection.channel()
            channel.confirm_delivery()  # a republish or dead-letter is safe before the ack
            channel.basic_qos(prefetch_count=1)
            pending: deque = deque()
            for sub in self.subscriptions:
                channel.basic_consume(
                    sub.queue,
                    lambda _ch, method, props, body, sub=sub: pending.append(
                        (sub, method, props, body)
                    ),
                )
            log.info("consuming %s", ", ".join(s.queue for s in self.subscriptions))
            self._connected = True
            # Messages are handled here, outside pika's callbacks, so waiting out a database
            # outage can keep the connection's heartbeats going.
            while not self._stopping:
                connection.process_data_events(time_limit=1)
                while pending and not self._stopping:
                    self._handle(connection, channel, *pending.popleft())
        finally:
            if connection.is_open:
                try:
                    connection.close()
                except BROKER_ERRORS:
                    pass

    def _handle(self, connection: pika.BlockingConnection, channel: BlockingChannel,
                sub: Subscription, method: Any, props: pika.BasicProperties,
                body: bytes) -> None:
        headers = dict(props.headers or {})
        attempt = int(headers.get(ATTEMPTS_HEADER, 0) or 0) + 1
        try:
            payload = json.loads(body)
        except ValueError as exc:  # UnicodeDecodeError included
            self._dead_letter(channel, sub, props, body, f"invalid JSON: {exc}", attempt)
        else:
            try:
                outcome = self._apply(connection, sub, payload)
            except InvalidInput as exc:
                self._dead_letter(channel, sub, props, body, exc.message, attempt)
            except _Stopping:
                raise
            except Exception as exc:
                log.exception("event on %s failed (attempt %d of %d)", sub.queue, attempt,
                              self.max_attempts)
                reason = f"{type(exc).__name__}: {exc}"[:1000]
                if attempt >= self.max_attempts:
                    self._dead_letter(channel, sub, props, body, reason, attempt)
                else:
                    self._publish(channel, sub.queue, props, body,
                                  {ATTEMPTS_HEADER: attempt, ERROR_HEADER: reason})
            else:
                log.info("event on %s: %s", sub.queue, outcome)
        channel.basic_ack(method.delivery_tag)

    def _apply(self, connection: pika.BlockingConnection, sub: Subscription,
               payload: Any) -> str:
        delay = BACKOFF_FIRST
        while True:
            try:
                return sub.apply(self.db, payload)
            except (OperationalError, InterfaceError) as exc:
                if self._stopping:
                    raise _Stopping() from None
                log.warning("database unavailable (%s); retrying in %.1f s",
                            str(exc).splitlines()[0], delay)
                connection.sleep(delay)  # keeps heartbeats going
                delay = min(BACKOFF_MAX, delay * 2)

    def _dead_letter(self, channel: BlockingChannel, sub: Subscription,
                     props: pika.BasicProperties, body: bytes, reason: str,
                     attempt: int) -> None:
        log.error("event on %s dead-lettered: %s", sub.queue, reason)
        self._publish(channel, sub.dead_letter_queue, props, body,
                      {ATTEMPTS_HEADER: attempt, ERROR_HEADER: reason,
                       SOURCE_QUEUE_HEADER: sub.queue})

    @staticmethod
    def _publish(channel: BlockingChannel, queue: str, props: pika.BasicProperties,
                 body: bytes, extra_headers: dict[str, Any]) -> None:
        properties = pika.BasicProperties(
            content_type=props.content_type,
            content_encoding=props.content_encoding,
            message_id=props.message_id,
            timestamp=props.timestamp,
            delivery_mode=pika.DeliveryMode.Persistent,
            headers={**(props.headers or {}), **extra_headers},
        )
        channel.basic_publish("", queue, body, properties, mandatory=True)


def _declare(connection: pika.BlockingConnection, sub: Subscription) -> None:
    """Use what exists as it is; declare what is missing."""
    if not _passive(connection, lambda ch: ch.exchange_declare(sub.exchange, passive=True)):
        _on_channel(connection, lambda ch: ch.exchange_declare(sub.exchange, "topic",
                                                               durable=True))
    for queue in (sub.queue, sub.dead_letter_queue):
        if not _passive(connection, lambda ch, q=queue: ch.queue_declare(q, passive=True)):
            _on_channel(connection, lambda ch, q=queue: ch.queue_declare(q, durable=True))
    _on_channel(connection, lambda ch: ch.queue_bind(sub.queue, sub.exchange, routing_key="#"))


def _on_channel(connection: pika.BlockingConnection,
                action: Callable[[BlockingChannel], Any]) -> None:
    channel = connection.channel()
    action(channel)
    channel.close()


def _passive(connection: pika.BlockingConnection,
             probe: Callable[[BlockingChannel], Any]) -> bool:
    """True if the probe found its object; a 404 closes the channel, hence one per probe."""
    try:
        _on_channel(connection, probe)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return False
        raise
    return True
