"""A fleet-wide cap on how many runs of one project execute at once: a counting semaphore
in Redis.

Each slot is a member of a sorted set scored by the moment its lease ends. The holder renews
the lease while its run executes; a worker that dies stops renewing, so its slot frees itself
when the lease runs out. Acquire, renew and release are Lua scripts (atomic across workers)
and read the time from Redis, so workers' clocks do not matter.
"""

from __future__ import annotations

import redis

KEY = "codeactions:project-slots:{project}"
LEASE_SECONDS = 30.0

_NOW = "local t = redis.call('TIME'); local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
_ACQUIRE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[2])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return 1
"""
_RENEW = _NOW + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return 1
"""
_HELD = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')\n"


class ProjectSlots:
    def __init__(self, client: redis.Redis, limit: int,
                 lease_seconds: float = LEASE_SECONDS) -> None:
        self.client = client
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._held = client.register_script(_HELD)

    def try_acquire(self, project: str, holder: str) -> bool:
        """Take a slot for `holder` (a run id) if one is free; taking it again is a renewal."""
        key = KEY.format(project=project)
        return bool(self._acquire(keys=[key], args=[self.limit, holder, self.lease_seconds]))

    def renew(self, project: str, holder: str) -> bool:
        """Extend the lease; False if it had already run out (the slot may be someone's)."""
        key = KEY.format(project=project)
        return bool(self._renew(keys=[key], args=[holder, self.lease_seconds]))

    def release(self, project: str, holder: str) -> None:
        self.client.zrem(KEY.format(project=project), holder)

    def held(self, project: str) -> int:
        """Slots with a live lease."""
        return int(self._held(keys=[KEY.format(project=project)]))
