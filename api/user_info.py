"""Who a token belongs to: the identity provider's user-info answer, cached in Redis.

The seed asked Keycloak on every management request; we ask once per token per
`oidc_cache_seconds`. A burst of requests with a token not yet cached waits on a per-token
Redis lock, so one of them asks and the others read its answer (one call across every API
process). Rejections are cached too. Tokens are stored only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import redis
import requests

from shared.settings import Settings

log = logging.getLogger(__name__)

CACHE_KEY = "codeactions:userinfo:{digest}"
REJECTED_STATUSES = (400, 401, 403)


@dataclass(frozen=True)
class UserInfo:
    email: str
    # `can_communicate_internally`: a trusted service of the platform, allowed everything.
    internal: bool


class TokenRejected(Exception):
    """The identity provider does not know this token."""


class IdentityProviderDown(Exception):
    """The identity provider did not answer usefully; nothing can be decided."""


def userinfo_url(settings: Settings) -> str:
    host = settings.oidc_host.rstrip("/")
    return f"{host}/realms/{settings.oidc_realm}/protocol/openid-connect/userinfo"


class UserInfoClient:
    def __init__(self, settings: Settings, redis_client: redis.Redis) -> None:
        self.url = userinfo_url(settings)
        self.ttl = max(1, settings.oidc_cache_seconds)
        self.timeout = settings.oidc_timeout
        self.redis = redis_client
        self.http = requests.Session()

    def lookup(self, token: str) -> UserInfo:
        """The token's user; raises `TokenRejected` or `IdentityProviderDown`."""
        digest = hashlib.sha256(f"{self.url}\0{token}".encode()).hexdigest()
        key = CACHE_KEY.format(digest=digest)
        answer = self._cached(key)
        if answer is None:
            answer = self._ask_once(key, token)
        if answer.get("rejected"):
            raise TokenRejected()
        return UserInfo(email=answer.get("email", ""), internal=bool(answer.get("internal")))

    def _cached(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self.redis.get(key)
        except redis.RedisError as exc:  # no cache: every request asks the provider
            log.warning("user-info cache unavailable: %s", exc)
            return None
        return json.loads(raw) if raw else None

    def _ask_once(self, key: str, token: str) -> dict[str, Any]:
        wait = self.timeout + 1
        try:
            lock = self.redis.lock(key + ":lock", timeout=wait, blocking_timeout=wait)
            held = lock.acquire()
        except redis.RedisError:
            return self._ask(token)
        try:
            if held:  # whoever held the lock before us may have cached the answer
                answer = self._cached(key)
                if answer is not None:
                    return answer
            answer = self._ask(token)
            try:
                self.redis.set(key, json.dumps(answer), ex=self.ttl)
            except redis.RedisError as exc:
                log.warning("user-info cache unavailable: %s", exc)
            return answer
        finally:
            if held:
                try:
                    lock.release()
                except redis.RedisError:  # LockError too: the lock expired under us
                    pass

    def _ask(self, token: str) -> dict[str, Any]:
        try:
            response = self.http.get(
                self.url, headers={"Authorization": f"Bearer {token}"}, timeout=self.timeout
            )
        except requests.RequestException as exc:
            log.error("identity provider unreachable: %s", exc)
            raise IdentityProviderDown(str(exc)) from None
        if response.status_code in REJECTED_STATUSES:
            return {"rejected": True}
        if response.status_code != 200:
            log.error("identity provider answered %s", response.status_code)
            raise IdentityProviderDown(f"status {response.status_code}")
        try:
            info = response.json()
        except ValueError:
            info = None
        if not isinstance(info, dict):
            log.error("identity provider answered something other than a JSON object")
            raise IdentityProviderDown("not a JSON object")
        internal = info.get("can_communicate_internally")
        return {
            "email": str(info.get("email") or "").strip().lower(),
            "internal": internal is True or str(internal).lower() == "true",
        }
