"""Create, update and delete code actions, with the seed's validation rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.codes import store as code_store
from shared.codes.model import (
    CODE_TYPES,
    COMPAT_MODES,
    TIMEOUT_DEFAULT,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    Code,
)
from shared.db import Database
from shared.errors import InvalidInput, NotFound
from shared.ids import EntityId
from shared.observability import metrics
from shared.settings import LANGUAGES, Settings


@dataclass
class CodeInput:
    name: str | None = None
    language: str | None = None
    type: str | None = None
    project_uuid: str | None = None
    source: str | None = None
    timeout: int | str | None = None
    url: str | None = None
    network: bool | str | None = None
    warm: bool | str | None = None
    compat: str | None = None


def _check_source(settings: Settings, source: str) -> None:
    if len(source.encode()) >= settings.source_max_bytes:
        raise InvalidInput("source code is too big", field="source")
    for term in settings.blacklist_terms:  # plain substring match, as the seed did
        if term in source:
            raise InvalidInput("source code contains blacklisted term", field="source")


def _check_type(value: str | None) -> str:
    if value not in CODE_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(CODE_TYPES)}, got {value!r}", "type")
    return value


def _check_name(value: str | None) -> str:
    if not value or not value.strip():
        raise InvalidInput("name is required", field="name")
    if len(value) > 255:
        raise InvalidInput("name must be at most 255 characters", field="name")
    return value


def _check_timeout(value: int | str | None) -> int:
    if not _given(value):
        return TIMEOUT_DEFAULT
    try:
        timeout = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"timeout must be an integer, got {value!r}", "timeout") from None
    if not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX:
        raise InvalidInput(
            f"timeout must be between {TIMEOUT_MIN} and {TIMEOUT_MAX} seconds, got {timeout}",
            field="timeout",
        )
    return timeout


def _check_compat(value: str | None) -> str:
    if value not in COMPAT_MODES:
        raise InvalidInput(
            f"compat must be one of {', '.join(COMPAT_MODES)}, got {value!r}", field="compat"
        )
    return value


def _check_url(value: str | None) -> str | None:
    if value is not None and len(value) > 512:
        raise InvalidInput("url must be at most 512 characters", field="url")
    return value or None


def _given(value: object) -> bool:
    """Present in the request: absent and empty (`?warm=`) both mean "not given"."""
    return value is not None and value != ""


def _check_bool(value: bool | str, field: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise InvalidInput(f"{field} must be true or false, got {value!r}", field=field)


def parse_project_uuid(value: str | None) -> uuid.UUID:
    if not value:
        raise InvalidInput("project_uuid is required", field="project_uuid")
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidInput(f"project_uuid must be a UUID, got {value!r}", "project_uuid") from None


def create(db: Database, settings: Settings, data: CodeInput) -> Code:
    if data.language not in LANGUAGES:
        raise InvalidInput(
            f"language must be one of {', '.join(LANGUAGES)}, got {data.language!r}", "language"
        )
    code = Code(
        name=_check_name(data.name),
        type=_check_type(data.type),
        language=data.language,
        project_uuid=parse_project_uuid(data.project_uuid),
        timeout=_check_timeout(data.timeout),
        url=_check_url(data.url),
        source=data.source or "",
        network=_check_bool(data.network, "network") if _given(data.network) else True,
        warm=_check_bool(data.warm, "warm") if _given(data.warm) else False,
        compat=_check_compat(data.compat) if _given(data.compat) else "strict",
    )
    _check_source(settings, code.source)
    with db.session() as session:
        code_store.add(session, code)
        session.commit()
    metrics.record_code_created(code.project_uuid, code.id)
    return code


def update(db: Database, settings: Settings, code_id: EntityId, data: CodeInput) -> Code:
    """Change only what was given; an empty source keeps the stored one (seed behaviour)."""
    with db.session() as session:
        code = code_store.get(session, code_id)
        if code is None:
            raise NotFound("code not found")
        if data.name is not None:
            code.name = _check_name(data.name)
        if data.type is not None:
            code.type = _check_type(data.type)
        if _given(data.timeout):
            code.timeout = _check_timeout(data.timeout)
        if data.url is not None:
            code.url = _check_url(data.url)
        if _given(data.network):
            code.network = _check_bool(data.network, "network")
        if _given(data.warm):
            code.warm = _check_bool(data.warm, "warm")
        if _given(data.compat):
            code.compat = _check_compat(data.compat)
        if data.source:
            _check_source(settings, data.source)
            code.source = data.source
        session.flush()
        session.commit()
        metrics.record_code_updated(code.project_uuid, code.id)
        return code


def delete(db: Database, code_id: EntityId) -> None:
    with db.session() as session:
        code = code_store.get(session, code_id)
        if code is None:
            raise NotFound("code not found")
        code_store.delete(session, code)
        session.commit()
