"""The shapes of the platform's project and permission events (SPEC.md "Events").

Extra fields are ignored (the project event carries many); anything that does not fit is an
`InvalidInput` naming the field, which the consumer dead-letters at once.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from shared.errors import InvalidInput

EMAIL_MAX = 320  # the column's size
NAME_MAX = 255


def _email(value: Any) -> str:
    if not isinstance(value, str) or "@" not in value.strip():
        raise ValueError("must be an email address")
    email = value.strip().lower()
    if len(email) > EMAIL_MAX:
        raise ValueError(f"must be at most {EMAIL_MAX} characters")
    return email


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Authorization(_Event):
    user_email: str
    role: StrictInt = Field(ge=0, le=2**31 - 1)

    _check_email = field_validator("user_email", mode="before")(_email)


class ProjectEvent(_Event):
    uuid: uuid.UUID
    name: str | None = ""
    authorizations: list[Authorization] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str:
        return (value or "")[:NAME_MAX]  # a long name is cut, not a reason to lose a project


class PermissionEvent(_Event):
    action: Literal["create", "update", "delete"]
    project: uuid.UUID
    user: str
    role: StrictInt | None = Field(None, ge=0, le=2**31 - 1)

    _check_user = field_validator("user", mode="before")(_email)


def parse(model: type[_Event], payload: Any) -> Any:
    """Validate an event; the first problem becomes an `InvalidInput` naming its field."""
    if not isinstance(payload, dict):
        raise InvalidInput("the event must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or None
        raise InvalidInput(f"{field}: {problem['msg']}", field=field) from None
