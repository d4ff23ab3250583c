"""Per-code rate limit on the public endpoints, shared by every API process through Redis.

A moving window from the `limits` library (atomic Lua in Redis). If Redis is unreachable the
limiter fails open: availability of customers' endpoints beats strict counting. Each request
let through unchecked counts in `ca_rate_limit_fail_open_total`, and the log says so once per
pause. After a failure the limiter leaves Redis alone for `PAUSE_AFTER_FAILURE` seconds, so
an unreachable Redis costs requests no connect timeout each.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from shared.observability import metrics

log = logging.getLogger(__name__)

PAUSE_AFTER_FAILURE = 5.0

@dataclass
class LimitDecision:
    allowed: bool
    retry_after: int = 0


class CodeRateLimiter:
    def __init__(self, redis_url: str, max_requests: int, window_seconds: int) -> None:
        from limits import RateLimitItemPerSecond
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        self.item = RateLimitItemPerSecond(max_requests, window_seconds)
        self.enabled = max_requests > 0
        storage = storage_from_string(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self.limiter = MovingWindowRateLimiter(storage)
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def hit(self, code_id: str) -> LimitDecision:
        if not self.enabled:
            return LimitDecision(True)
        if time.monotonic() < self._paused_until:
            metrics.record_rate_limit_fail_open()
            return LimitDecision(True)
        try:
            if self.limiter.hit(self.item, "code", code_id):
                return LimitDecision(True)
            reset_at, _ = self.limiter.get_window_stats(self.item, "code", code_id)
            return LimitDecision(False, max(1, math.ceil(reset_at - time.time())))
        except Exception as exc:  # fail open, loudly
            metrics.record_rate_limit_fail_open()
            with self._lock:
                if time.monotonic() >= self._paused_until:
                    log.error("rate limiter unavailable, letting requests through unchecked "
                              "for %.0f s: %s", PAUSE_AFTER_FAILURE, exc)
                    self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
            return LimitDecision(True)
