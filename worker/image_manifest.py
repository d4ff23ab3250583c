"""What an engine image says it ships: its build-time manifest, read out of the image.

An engine whose image installs packages writes, while it is built, the list of what imports
with versions (engines/python/manifest.py → ``/opt/codeactions/libraries.json``). The worker
copies that file out of a container it creates but never starts, and the codelibs catalog
(``GET /codelib``) is synced from it: the catalog is what the image really has, never a second
list kept by hand.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from typing import Any

import docker.errors

from shared.codelibs.catalog import Library
from worker.sandbox.hardening import remove_quietly

log = logging.getLogger(__name__)

MANIFEST_PATH = "/opt/codeactions/libraries.json"
#: Far more than any manifest: a bigger file is not one.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024


def read_manifest(client: Any, image: str, labels: dict[str, str] | None = None) -> dict | None:
    """The image's manifest, or None when it has none (an engine that lists its libraries
    by hand, in engines/<language>/libraries.txt)."""
    container = client.api.create_container(
        image, command=["true"], network_disabled=True,
        labels={"codeactions.sandbox": "1", **(labels or {})},
    )["Id"]
    try:
        stream, _ = client.api.get_archive(container, MANIFEST_PATH)
        archive = b"".join(stream)
    except docker.errors.NotFound:
        return None
    finally:
        remove_quietly(client.api, container)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        if member is None or not member.isfile() or member.size > MANIFEST_MAX_BYTES:
            raise ValueError(f"{MANIFEST_PATH} in {image} is not a manifest file")
        data = tar.extractfile(member).read()  # type: ignore[union-attr]
    manifest = json.loads(data)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("packages"), list):
        raise ValueError(f"{MANIFEST_PATH} in {image} has no package list")
    return manifest


def manifest_libraries(manifest: dict) -> list[Library]:
    """The catalog rows of a manifest: one per installed package, with its version and what
    to import."""
    libraries = []
    for package in manifest["packages"]:
        name, version = package.get("name"), package.get("version")
        if isinstance(name, str) and name and isinstance(version, str):
            modules = tuple(m for m in package.get("modules", []) if isinstance(m, str))
            libraries.append(Library(name=name, version=version, modules=modules))
    return libraries
