"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from tests.integration.callback_receiver import Receiver


@pytest.fixture()
def receiver():  # noqa: ANN201
    server = Receiver()
    yield server
    server.close()
