"""Send one callback attempt: POST the finished run as JSON to the caller's URL.

The address is checked (shared/callbacks/target.py) and the connection goes to exactly the
address checked, with the original Host header and TLS name. Redirects are not followed
(they could lead anywhere); only a 2xx answer counts as delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid

import certifi
import urllib3

from shared.callbacks import delivery as callback_delivery
from shared.callbacks.target import CallbackRefused, parse_callback_url, resolve_allowed
from shared.db import Database
from shared.errors import InvalidInput
from shared.runs.document import run_document
from shared.settings import Settings

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-CodeActions-Signature"
RESPONSE_READ_LIMIT = 64 * 1024


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the timestamp is signed
    too, so a receiver can refuse replays of old deliveries."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class CallbackSender:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def deliver(self, run_id: str, attempt: int) -> float | None:
        """One attempt; returns the seconds to wait before the next one, or None when done
        (delivered, given up, or nothing to deliver)."""
        rid = uuid.UUID(run_id)
        run = callback_delivery.pending_run(self.db, rid)
        if run is None:
            return None
        body = json.dumps(run_document(run)).encode()
        started = time.monotonic()
        status_code, error = self._post(run.callback["url"], run_id, attempt, body)
        status = callback_delivery.record_attempt(
            self.db, rid, attempt, self.settings.callback_max_attempts,
            status_code=status_code, error=error,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        log.info("callback of run %s, attempt %d: %s (%s)", run_id, attempt, status,
                 error or status_code)
        if status != callback_delivery.PENDING:
            return None
        return callback_delivery.retry_delay(attempt, self.settings.callback_retry_delay)

    def _post(
        self, url: str, run_id: str, attempt: int, body: bytes
    ) -> tuple[int | None, str | None]:
        try:
            target = parse_callback_url(url)
            address = resolve_allowed(target, self.settings.callback_networks)
        except (CallbackRefused, InvalidInput) as exc:  # InvalidInput: stored before a rule
            return None, f"refused: {exc}"
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": "CodeActions-Callback/1",
            "X-CodeActions-Run-Id": run_id,
            "X-CodeActions-Attempt": str(attempt),
        }
        if self.settings.callback_signing_secret:
            headers[SIGNATURE_HEADER] = signature(
                self.settings.callback_signing_secret, int(time.time()), body
            )
        timeout = urllib3.Timeout(connect=min(5.0, self.settings.callback_timeout),
                                  read=self.settings.callback_timeout)
        pool_options = {"timeout": timeout, "retries": False, "maxsize": 1}
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                str(address), target.port, server_hostname=target.host,
                assert_hostname=target.host, cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(), **pool_options,
            )
        else:
            pool = urllib3.HTTPConnectionPool(str(address), target.port, **pool_options)
        try:
            response = pool.urlopen(
                "POST", target.path, body=body, headers=headers, redirect=False,
                preload_content=False, assert_same_host=False,
            )
            response.read(RESPONSE_READ_LIMIT)
            response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        finally:
            pool.close()
        if 200 <= response.status < 300:
            return response.status, None
        return response.status, f"receiver answered {response.status}"
