"""A small Keycloak-compatible user-info endpoint on loopback (real HTTP): the identity
provider is outside our reach, so tests run this stand-in that speaks its protocol.

GET /realms/<realm>/protocol/openid-connect/userinfo with `Authorization: Bearer <token>`
→ 200 and the token's claims as JSON, or 401 for a token it does not know. It counts calls
per token, and can be switched to answer 500 (`failing`).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REALM = "weni"


class IdentityProvider:
    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.failing = False
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, token: str, **claims: Any) -> str:
        self.users[token] = claims
        return token

    def start(self) -> IdentityProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self
        path = f"/realms/{REALM}/protocol/openid-connect/userinfo"

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                header = self.headers.get("Authorization", "")
                token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
                with provider._lock:
                    provider.calls[token] += 1
                if self.path != path:
                    return self._answer(404, {"error": "not found"})
                if provider.failing:
                    return self._answer(500, {"error": "unknown_error"})
                claims = provider.users.get(token)
                if claims is None:
                    return self._answer(401, {"error": "invalid_token"})
                return self._answer(200, {"sub": token[:8], **claims})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
