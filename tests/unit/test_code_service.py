"""Codes: the seed's validation rules, each naming its field; nothing stored on bad input."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from shared.codes import service
from shared.codes.model import Code
from shared.codes.service import CodeInput
from shared.errors import InvalidInput, NotFound
from shared.ids import EntityId

PROJECT = str(uuid.uuid4())


def _input(**values: object) -> CodeInput:
    fields = {"name": "n", "language": "python", "type": "endpoint", "project_uuid": PROJECT,
              "source": "def Run(engine): pass", **values}
    return CodeInput(**fields)


def _count(db) -> int:  # noqa: ANN001
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Code))


@pytest.mark.parametrize(("values", "field"), [
    ({"language": "ruby"}, "language"),
    ({"type": "cron"}, "type"),
    ({"name": "x" * 256}, "name"),
    ({"timeout": 4}, "timeout"),
    ({"timeout": 301}, "timeout"),
    ({"timeout": "soon"}, "timeout"),
    ({"project_uuid": None}, "project_uuid"),
    ({"url": "u" * 513}, "url"),
    ({"warm": "maybe"}, "warm"),
    ({"compat": "loose"}, "compat"),
])
def test_bad_input_names_its_field_and_stores_nothing(fast_platform, db, values, field):
    with pytest.raises(InvalidInput) as caught:
        service.create(fast_platform, _input(**values))
    assert caught.value.field == field
    assert _count(db) == 0


def test_an_empty_name_is_accepted_as_the_go_service_did(fast_platform):
    assert service.create(fast_platform, _input(name="")).name == ""


@pytest.mark.parametrize("timeout", [5, 300])
def test_timeouts_at_the_limits_are_accepted(fast_platform, timeout):
    assert service.create(fast_platform, _input(timeout=timeout)).timeout == timeout


def test_source_at_the_size_limit_is_refused_and_below_it_accepted(fast_platform):
    limit = fast_platform.settings.source_max_bytes
    with pytest.raises(InvalidInput, match="too big"):
        service.create(fast_platform, _input(source="x" * limit))
    assert service.create(fast_platform, _input(source="x" * (limit - 1)))


def test_update_changes_only_what_was_given(fast_platform, db):
    code = service.create(fast_platform, _input(timeout=30))
    service.update(fast_platform, EntityId(uuid=code.id), CodeInput(name="renamed", source=""))
    stored = service.get(db, EntityId(uuid=code.id))
    assert (stored.name, stored.timeout, stored.source) == ("renamed", 30, code.source)


def test_delete_then_get_is_not_found(fast_platform, db):
    code = service.create(fast_platform, _input())
    service.delete(fast_platform, EntityId(uuid=code.id))
    with pytest.raises(NotFound):
        service.get(db, EntityId(uuid=code.id))
    with pytest.raises(NotFound):
        service.delete(fast_platform, EntityId(uuid=code.id))
