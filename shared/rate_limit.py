"""Per-code rate limit on the public endpoints, shared by every API process through Redis.

A moving window from the `limits` library (atomic Lua in Redis). If Redis is unreachable the
limiter fails open: availability of customers' endpoints beats strict counting, and the
failure is logged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


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

    def hit(self, code_id: str) -> LimitDecision:
        if not self.enabled:
            return LimitDecision(True)
        try:
            if self.limiter.hit(self.item, "code", code_id):
                return LimitDecision(True)
            reset_at, _ = self.limiter.get_window_stats(self.item, "code", code_id)
            return LimitDecision(False, max(1, math.ceil(reset_at - time.time())))
        except Exception as exc:  # fail open, loudly
            log.error("rate limiter unavailable, allowing request: %s", exc)
            return LimitDecision(True)
