"""Small conveniences for talking to the test platform over HTTP."""

from __future__ import annotations

import uuid

import requests

PROJECT = "5b5c5e8e-7d0a-4b59-9a36-0b9d7b8c1a11"


def create_code(
    platform,  # noqa: ANN001
    source: str,
    *,
    type: str = "endpoint",
    language: str = "python",
    project_uuid: str = PROJECT,
    timeout: int | None = None,
    name: str | None = None,
    warm: bool | None = None,
    network: bool | None = None,
) -> dict:
    params = {
        "name": name or f"test-{uuid.uuid4().hex[:8]}",
        "language": language,
        "type": type,
        "project_uuid": project_uuid,
    }
    if timeout is not None:
        params["timeout"] = timeout
    if warm is not None:
        params["warm"] = str(warm).lower()
    if network is not None:
        params["network"] = str(network).lower()
    response = requests.post(platform.url("/code"), params=params, data=source.encode(),
                             timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def call(platform, code_id: str, method: str = "POST", **kwargs) -> requests.Response:  # noqa: ANN001
    kwargs.setdefault("timeout", 120)
    return requests.request(method, platform.url(f"/action/endpoint/{code_id}"), **kwargs)
