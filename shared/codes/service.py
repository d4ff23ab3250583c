"""Create, update and delete code actions, with the seed's validation rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.adoption import project_ids
from shared.adoption.legacy_values import as_uuid
from shared.codes import store as code_store
from shared.codes.model import (
    CODE_MODES,
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
from shared.runs import store as run_store
from shared.runs.ending import after_end
from shared.runs.statuses import ExitReason, RunStatus
from shared.settings import LANGUAGES, Settings
from shared.storable import ensure_storable

if TYPE_CHECKING:
    from shared.platform import Platform


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
    mode: str | None = None
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
    """Any name up to 255 characters, empty included: the Go service's clients create codes
    without one."""
    value = value or ""
    if not isinstance(value, str):
        raise InvalidInput("name must be a string", field="name")
    if len(value) > 255:
        raise InvalidInput("name must be at most 255 characters", field="name")
    return value


def _check_timeout(value: int | str | None) -> int:
    if value is None or value == "":
        return TIMEOUT_DEFAULT
    try:
        timeout = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1e999 is infinity
        raise InvalidInput(f"timeout must be an integer, got {value!r}", "timeout") from None
    if not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX:
        raise InvalidInput(
            f"timeout must be between {TIMEOUT_MIN} and {TIMEOUT_MAX} seconds, got {timeout}",
            field="timeout",
        )
    return timeout


def _check_mode(data: CodeInput, current: str) -> str:
    """The mode asked for: `mode`, or `warm` as its alias (true: warm, or resident when the
    code is resident already; false: pool); both given must agree."""
    mode = None
    if _given(data.mode):
        if data.mode not in CODE_MODES:
            raise InvalidInput(
                f"mode must be one of {', '.join(CODE_MODES)}, got {data.mode!r}", field="mode"
            )
        mode = str(data.mode)
    if _given(data.warm):
        warm = _check_bool(data.warm, "warm")
        if mode is not None and (mode != "pool") != warm:
            raise InvalidInput(f"warm={str(warm).lower()} contradicts mode={mode}", field="warm")
        if mode is None:
            mode = ("resident" if current == "resident" else "warm") if warm else "pool"
    return mode or current


def _check_compat(value: str | None) -> str:
    if value not in COMPAT_MODES:
        raise InvalidInput(
            f"compat must be one of {', '.join(COMPAT_MODES)}, got {value!r}", field="compat"
        )
    return value


def _check_url(value: str | None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput("url must be a string", field="url")
    if value is not None and len(value) > 512:
        raise InvalidInput("url must be at most 512 characters", field="url")
    return value or None


def _given(value: object) -> bool:
    """Present in the request: absent and empty (`?warm=`) both mean "not given"."""
    return value is not None and value != ""


def _check_bool(value: bool | str | None, field: str) -> bool:
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


def get(db: Database, code_id: EntityId) -> Code:
    """The code, to read (a detached copy: changes go through `update`)."""
    with db.session(one_statement=True) as session:
        code = code_store.read(session, code_id)
    if code is None:
        raise NotFound("code not found")
    return code


def list_for_project(
    db: Database, project_uuid: uuid.UUID, code_type: str | None, order: str = "desc"
) -> list[Code]:
    with db.session() as session:
        return code_store.list_for_project(session, project_uuid, code_type, order=order)


def project_for_listing(db: Database, value: str | None) -> uuid.UUID:
    """A project id as clients of the Go service send it: a UUID, or one of its old ids
    that were not UUIDs (adopted under a UUIDv5 of the text, `legacy_project_ids`)."""
    if value and as_uuid(value) is None:
        with db.session() as session:
            adopted = project_ids.resolve(session, value)
        if adopted is not None:
            return adopted
    return parse_project_uuid(value)


def _check_storable(data: CodeInput) -> None:
    for name, value in vars(data).items():
        ensure_storable(value, name)


def create(platform: Platform, data: CodeInput) -> Code:
    settings = platform.settings
    _check_storable(data)
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
        mode=_check_mode(data, settings.default_mode),
        compat=_check_compat(data.compat) if _given(data.compat) else "strict",
    )
    code.warm = code.mode != "pool"
    _check_source(settings, code.source)
    with platform.unit_of_work() as uow:
        code_store.add(uow.session, code)
        uow.commit()
    metrics.record_code_created(code.project_uuid, code.id)
    return code


def update(platform: Platform, code_id: EntityId, data: CodeInput) -> Code:
    """Change only what was given; an empty source keeps the stored one (seed behaviour)."""
    settings = platform.settings
    _check_storable(data)
    with platform.unit_of_work() as uow:
        code = code_store.get(uow.session, code_id)
        if code is None:
            raise NotFound("code not found")
        # An empty name or type keeps the stored one, as in the Go service.
        if _given(data.name):
            code.name = _check_name(data.name)
        if _given(data.type):
            code.type = _check_type(data.type)
        if _given(data.timeout):
            code.timeout = _check_timeout(data.timeout)
        if data.url is not None:
            code.url = _check_url(data.url)
        if _given(data.network):
            code.network = _check_bool(data.network, "network")
        if _given(data.mode) or _given(data.warm):
            code.mode = _check_mode(data, code.mode)
            code.warm = code.mode != "pool"
        if _given(data.compat):
            code.compat = _check_compat(data.compat)
        if data.source:
            _check_source(settings, data.source)
            code.source = data.source
        uow.session.flush()
        uow.commit()
    metrics.record_code_updated(code.project_uuid, code.id)
    return code


def delete(platform: Platform, code_id: EntityId) -> None:
    """Its runs still in flight end first (`code_deleted`), so whoever waits for one is
    answered at once instead of at its timeout."""
    with platform.unit_of_work() as uow:
        code = code_store.get(uow.session, code_id)
        if code is None:
            raise NotFound("code not found")
        message = "the run's code was deleted before the run ended"
        for run_id, status in run_store.unfinished_of_code(uow.session, code.id):
            ended = run_store.finish(
                uow.connection, run_id, RunStatus.FAILED, from_status=status, result=message,
                exit_reason=ExitReason.CODE_DELETED,
                extra={"status_code": 410, "content_type": "json", "error": message},
            )
            if ended:
                after_end(uow, run_id, RunStatus.FAILED, ended.wants_callback)
        code_store.delete(uow.session, code)
        uow.commit()
