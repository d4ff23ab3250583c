"""Who may do what on the management routes (SPEC.md "Authorization"), when
`FLOWS_CODE_ACTIONS_OIDC_AUTH_ENABLED` is on; with it off everything stays open.

- Every request under `/code`, `/coderun`, `/codelog`, `/codelib` and `/admin` is
  authenticated before its handler runs (`install`): no token or a rejected one is 401
  before anything is looked up, an unreachable identity provider 503.
- Each handler then makes one call naming the project (or the code or run that leads to it)
  and the role it needs: `READ` (role ≥ 1) or `WRITE` (role 3). A trusted service
  (`can_communicate_internally`) passes every check. Otherwise 403.
- `/action/endpoint/*`, `/endpoint/*`, `/run/*` (its own static token), health, metrics and
  the API docs are not management routes.
"""

from __future__ import annotations

import uuid

from flask import Flask, current_app, g, request

from api.context import ctx
from api.user_info import IdentityProviderDown, TokenRejected, UserInfo, UserInfoClient
from shared.access import permission_store
from shared.access.permission import MODERATOR, VIEWER
from shared.codes import store as code_store
from shared.codes.model import Code
from shared.codes.service import parse_project_uuid
from shared.errors import Forbidden, NotFound, Saturated, Unauthorized
from shared.ids import parse_id
from shared.runs import store as run_store
from shared.runs.model import CodeRun

READ, WRITE = VIEWER, MODERATOR
MANAGEMENT_PREFIXES = ("code", "coderun", "codelog", "codelib", "admin")
EXTENSION = "codeactions.user_info"
IDP_RETRY_AFTER = 5


def install(app: Flask) -> None:
    """Authenticate management routes before their handlers (only when auth is enabled)."""
    c = app.extensions["codeactions"]
    if not c.settings.oidc_auth_enabled:
        return
    if not c.settings.oidc_host or not c.settings.oidc_realm:
        raise ValueError(
            "FLOWS_CODE_ACTIONS_OIDC_AUTH_ENABLED needs FLOWS_CODE_ACTIONS_OIDC_HOST and "
            "FLOWS_CODE_ACTIONS_OIDC_REALM"
        )
    app.extensions[EXTENSION] = UserInfoClient(c.settings, c.redis)
    app.before_request(_authenticate)


def is_management_path(path: str) -> bool:
    return path.strip("/").split("/", 1)[0] in MANAGEMENT_PREFIXES


def _token(header: str) -> str:
    """`Bearer <token>` or a bare token; like the seed, the last word of a two-word header."""
    parts = header.split()
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts[1]
    return ""


def _authenticate() -> None:
    if is_management_path(request.path):
        g.codeactions_user = _user_from_token()


def _user_from_token() -> UserInfo:
    token = _token(request.headers.get("Authorization", ""))
    if not token:
        raise Unauthorized("an Authorization: Bearer <token> header is required",
                           field="Authorization")
    client: UserInfoClient = current_app.extensions[EXTENSION]
    try:
        return client.lookup(token)
    except TokenRejected:
        raise Unauthorized("the token was rejected by the identity provider",
                           field="Authorization") from None
    except IdentityProviderDown:
        raise Saturated("the identity provider is unavailable; try again shortly",
                        retry_after=IDP_RETRY_AFTER) from None


def current_user() -> UserInfo | None:
    """The caller, or None when authorization is off (everyone may do everything)."""
    if EXTENSION not in current_app.extensions:
        return None
    if "codeactions_user" not in g:  # a route outside the prefixes that still checks roles
        g.codeactions_user = _user_from_token()
    return g.codeactions_user


def _checked_user() -> UserInfo | None:
    """The caller whose role must be checked; None when there is nothing to check."""
    user = current_user()
    if user is None or user.internal:
        return None
    return user


def authorize(project_uuid: uuid.UUID | str | None, role: int) -> None:
    """403 unless the caller holds `role` (READ or WRITE) on the project."""
    user = _checked_user()
    if user is None:
        return
    project = parse_project_uuid(str(project_uuid) if project_uuid else None)
    held = None
    if user.email:
        with ctx().db.session() as session:
            held = permission_store.role_of(session, project, user.email)
    if not allows(held, role):
        needed = "read" if role == READ else "change"
        raise Forbidden(f"you may not {needed} what belongs to project {project}",
                        field="project_uuid")


def allows(held: int | None, role: int) -> bool:
    """Known roles only (1 viewer, 2 contributor, 3 moderator): reading needs any of them,
    writing needs moderator. Other values an event may carry grant nothing."""
    if held is None or not VIEWER <= held <= MODERATOR:
        return False
    return held >= role


def authorize_code(code: Code | str, role: int) -> None:
    """Like `authorize`, for the project of a code given itself or by id (404 if missing)."""
    if _checked_user() is None:
        return
    if not isinstance(code, Code):
        with ctx().db.session() as session:
            code = code_store.get(session, parse_id(code, "code id"))
        if code is None:
            raise NotFound("code not found")
    authorize(code.project_uuid, role)


def authorize_run(run: CodeRun | str, role: int) -> None:
    """Like `authorize`, for the project of a run's code, the run given itself or by id."""
    if _checked_user() is None:
        return
    with ctx().db.session() as session:
        if not isinstance(run, CodeRun):
            run = run_store.get(session, parse_id(run, "run id"))
            if run is None:
                raise NotFound("run not found")
        code = session.get(Code, run.code_id)
    if code is None:
        raise NotFound("code not found")
    authorize(code.project_uuid, role)
