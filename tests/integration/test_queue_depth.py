"""The queue depth behind the API's back-pressure (shared/messaging/queue_depth.py), against
the test platform's RabbitMQ: one kept connection, looks cached briefly, and a broker that
cannot tell (queue missing, broker away) gives `DepthUnknown`, cached as briefly."""

from __future__ import annotations

import socket
import time

import pytest

from shared.messaging.celery_app import make_celery
from shared.messaging.queue_depth import DepthUnknown, QueueDepth, QueueMissing
from shared.runs.submission import any_over_capacity


def test_looks_reuse_one_connection(platform) -> None:  # noqa: ANN001
    depth = QueueDepth(make_celery(platform.settings()), cache_seconds=0.05)
    assert depth.ready_messages("python") >= 0
    kept = depth._connection
    time.sleep(0.1)  # past the cache: a second look, on the same connection
    assert depth.ready_messages("python") >= 0
    assert depth._connection is kept and kept.connected


def test_a_missing_queue_is_unknown_and_keeps_the_connection(platform) -> None:  # noqa: ANN001
    depth = QueueDepth(make_celery(platform.settings()), cache_seconds=0.05)
    assert depth.ready_messages("python") >= 0
    kept = depth._connection
    with pytest.raises(DepthUnknown):
        depth.ready_messages("cobol")  # runs.cobol does not exist: 404 on its own channel
    assert depth.ready_messages("python") >= 0
    assert depth._connection is kept


def test_a_broker_away_is_unknown_and_that_is_cached(platform) -> None:  # noqa: ANN001
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    away = f"amqp://guest:guest@127.0.0.1:{port}//"
    settings = platform.settings(broker_url=away, rabbitmq_url=away)
    depth = QueueDepth(make_celery(settings), cache_seconds=30)
    with pytest.raises(DepthUnknown) as first:
        depth.ready_messages("python")
    with pytest.raises(DepthUnknown) as second:  # from the cache: no second attempt
        depth.ready_messages("python")
    assert second.value.__cause__ is first.value.__cause__
    assert depth._connection is None


def test_any_queue_over_capacity_looks_past_a_missing_queue(platform) -> None:  # noqa: ANN001
    depth = QueueDepth(make_celery(platform.settings()), cache_seconds=0.05)
    with pytest.raises(QueueMissing):
        depth.ready_messages("cobol")
    # A queue not there yet holds nothing; the next one is still looked at.
    assert any_over_capacity(depth, ("cobol", "python"), limit=-1) is True
    assert any_over_capacity(depth, ("cobol", "python"), limit=10**6) is False


def test_any_queue_over_capacity_stops_at_a_broker_away(platform) -> None:  # noqa: ANN001
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    away = f"amqp://guest:guest@127.0.0.1:{port}//"
    depth = QueueDepth(make_celery(platform.settings(broker_url=away, rabbitmq_url=away)),
                       cache_seconds=30)
    assert any_over_capacity(depth, ("python", "javascript", "go"), limit=-1) is False
    # One look, not one per language: the others were never tried.
    assert set(depth._cache) == {"python"}
