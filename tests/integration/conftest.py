"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from codeactions.local.services.rabbitmq import RabbitMQServer
from tests.integration.callback_receiver import Receiver
from tests.integration.event_broker import PRIVATE_BROKER_PORT, PRIVATE_BROKER_STATE
from tests.integration.identity_provider import IdentityProvider


@pytest.fixture()
def receiver():  # noqa: ANN201
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    """A Keycloak-compatible user-info endpoint on loopback (the identity provider is out
    of our reach; this one speaks its protocol over a real socket)."""
    provider = IdentityProvider().start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def private_broker() -> Iterator[RabbitMQServer]:
    """A RabbitMQ node of the test's own, free to be stopped and restarted."""
    server = RabbitMQServer(PRIVATE_BROKER_STATE, PRIVATE_BROKER_PORT)
    server.start()
    yield server
    server.stop()
