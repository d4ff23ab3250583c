"""What a worker makes sure of before it takes runs: images, sandbox network, log bucket."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime

from shared.codes.model import TIMEOUT_MAX
from shared.settings import Settings
from worker.sandbox.container_owner import KIND_LABEL, LONG_LIVED_KINDS, OWNER_LABEL, owner_gone

log = logging.getLogger(__name__)


def worker_name(languages: list[str], settings: Settings | None = None) -> str:
    """Stable across restarts of the same worker, distinct between workers of one host
    (and between platforms sharing one Docker engine, by `FLOWS_CODE_ACTIONS_WORKER_ID`)."""
    host = (settings.worker_id if settings else "") or socket.gethostname()
    return f"{host}-{'-'.join(sorted(languages))}"


def prepare_worker_host(settings: Settings, languages: list[str]) -> dict[str, str]:
    import docker

    from shared.logs.archive import LogArchive
    from worker.images import ensure_images
    from worker.network.firewall import FirewallGuard

    client = docker.DockerClient(base_url=settings.docker_host) if settings.docker_host else (
        docker.from_env()
    )
    tags = ensure_images(client, languages)
    FirewallGuard(settings).check()
    name = worker_name(languages, settings)
    remove_leftovers(client, name)
    LogArchive(settings).ensure_bucket()
    sync_catalog_from_images(settings, client, tags, {"codeactions.worker": name})
    return tags


def sync_catalog_from_images(
    settings: Settings, client, tags: dict[str, str], labels: dict[str, str]  # noqa: ANN001
) -> None:
    """GET /codelib lists what the images this worker runs really ship: each image with a
    build-time manifest replaces its language's catalog rows (the others list theirs by
    hand; `codeactions migrate` syncs those). A failure here costs the catalog, not the runs."""
    from shared.codelibs.catalog import sync_language
    from shared.db import Database
    from worker.image_manifest import manifest_libraries, read_manifest

    db = Database(settings)
    try:
        for language, tag in tags.items():
            try:
                manifest = read_manifest(client, tag, labels)
                if manifest is not None:
                    count = sync_language(db, language, manifest_libraries(manifest))
                    log.info("codelib catalog: %d %s libraries from %s", count, language, tag)
            except Exception as exc:
                log.error("codelib catalog for %s not synced from %s: %s", language, tag, exc)
    finally:
        db.dispose()


def remove_leftovers(client, name: str) -> int:  # noqa: ANN001
    """Remove sandboxes a dead worker left: our own predecessor's (same worker name), warm
    containers whose owner process is gone, and one-shot ones older than the longest
    possible run (whoever started those is gone). Other platforms' live containers stay."""
    removed = 0
    oldest_live = time.time() - (TIMEOUT_MAX + 120)
    # One listing call (labels and creation time included), no inspect per container, so
    # nothing races a live platform's short-lived sandboxes.
    for container in client.api.containers(all=True, filters={"label": "codeactions.sandbox"}):
        if not is_leftover(container.get("Labels") or {}, container["Created"], name,
                           oldest_live):
            continue
        try:
            client.api.remove_container(container["Id"], force=True)
            removed += 1
        except Exception as exc:
            log.warning("could not remove leftover sandbox %s: %s", container["Id"][:12], exc)
    return removed


def is_leftover(labels: dict[str, str], created: float, name: str, oldest_live: float) -> bool:
    if labels.get("codeactions.worker") == name:
        return True
    if labels.get(KIND_LABEL) in LONG_LIVED_KINDS:
        return owner_gone(labels.get(OWNER_LABEL, ""))
    return created < oldest_live


#: An exited sandbox of this worker older than this is nobody's any more (a run reads its
#: container's end within seconds; a Docker restart leaves the killed ones behind).
EXITED_GRACE_SECONDS = 30


def sweep_leftovers(client, name: str, grace: float = EXITED_GRACE_SECONDS) -> int:  # noqa: ANN001
    """While the worker runs: what `remove_leftovers` removes of other (dead) workers, and
    this worker's own sandboxes that exited, or were created and never started, over
    `grace` seconds ago."""
    removed = 0
    oldest_live = time.time() - (TIMEOUT_MAX + 120)
    now = datetime.now(UTC)
    for container in client.api.containers(all=True, filters={"label": "codeactions.sandbox"}):
        labels = container.get("Labels") or {}
        if labels.get("codeactions.worker") == name:
            state = container.get("State")
            if state == "created":
                # Created and never started: a launch that Docker's restart cut short.
                if time.time() - container["Created"] < grace:
                    continue
            elif state not in ("exited", "dead"):
                continue
            elif not _exited_long_ago(client, container["Id"], now, grace):
                continue
        elif not is_leftover(labels, container["Created"], name, oldest_live):
            continue
        try:
            client.api.remove_container(container["Id"], force=True)
            removed += 1
        except Exception as exc:
            log.debug("leftover sandbox %s not removed: %s", container["Id"][:12], exc)
    if removed:
        log.info("removed %d leftover sandboxes", removed)
    return removed


def _exited_long_ago(client, container_id: str, now: datetime, grace: float) -> bool:  # noqa: ANN001
    try:
        finished = client.api.inspect_container(container_id)["State"]["FinishedAt"]
    except Exception:  # gone meanwhile
        return False
    return (now - _docker_time(finished)).total_seconds() >= grace


def _docker_time(text: str) -> datetime:
    """Docker's RFC 3339 times carry nanoseconds, which `fromisoformat` does not take."""
    value = text.replace("Z", "+00:00")
    if "." in value:
        head, fraction = value.split(".", 1)
        digits, _, zone = fraction.partition("+")
        value = f"{head}.{digits[:6]}+{zone or '00:00'}"
    return datetime.fromisoformat(value)
