"""Leases in Redis that hold across every worker of a distributed run.

Limit leases: Celery's rate limits count per worker, but an ESXi host throttles the copies of
all of them, so each limit (the plan's total, one per source host, one per target storage) is
a sorted set: a member per holder (its token), scored by the time its lease expires. Taking a
conversion's leases is one Lua script: drop the expired members, check every key is under its
limit, then add the token to all of them; all or nothing, so two workers never each hold half.

The ownership lease: one holder per guest at a time (SET NX with a TTL), so that a task
delivered twice (a re-delivery, a plan run twice) never converts a guest another live worker
is converting. A killed worker stops renewing: its leases run out after their TTL and its
guest can be taken over.

Expiry times are the Redis server's clock (TIME in the scripts): the hosts' clocks may differ.
A Heartbeat thread renews a holder's leases; when the ownership lease was lost (the worker was
stopped longer than the TTL and another took the guest) it sets an event the conversion stops on.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from vmshift.fleet.defaults import DEFAULT_TTL
from vmshift.fleet.state_redis import text

# KEYS: the limit sets; ARGV: ttl in ms, token, limit of each key
# -> 0 when taken, else the position (1-based) of the first key at its limit
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
end
for i, key in ipairs(KEYS) do
  if not redis.call('ZSCORE', key, ARGV[2]) then
    if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then return i end
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[1]), ARGV[2])
end
return 0
"""

# KEYS: the limit sets; ARGV: ttl in ms, token -> how many still held and renewed
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = 0
for i, key in ipairs(KEYS) do
  local score = redis.call('ZSCORE', key, ARGV[2])
  if score and tonumber(score) > now then
    redis.call('ZADD', key, 'XX', now + tonumber(ARGV[1]), ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""

# KEYS: the limit sets; ARGV: none -> the live holders of each key (expired ones dropped)
_HOLDERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  out[i] = redis.call('ZRANGE', key, 0, -1)
end
return out
"""

# KEYS: owner key; ARGV: token, ttl in ms -> 1 when still held (and renewed)
_RENEW_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: owner key; ARGV: token
_RELEASE_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Limit:
    key: str  # the sorted set's name, under the plan's prefix: limit:source-host:esxi-a
    limit: int  # holders at once
    what: str  # for messages: "the per-source-host limit (esxi-a: 2 at once)"


class Leases:
    """The leases of one plan (keys under prefix) in the Redis of client."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: float = DEFAULT_TTL) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._holders = client.register_script(_HOLDERS)
        self._renew_owner = client.register_script(_RENEW_OWNER)
        self._release_owner = client.register_script(_RELEASE_OWNER)

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def _keys(self, limits: Sequence[Limit]) -> list[str]:
        return [self.prefix + lim.key for lim in limits]

    def acquire(self, limits: Sequence[Limit], token: str) -> Limit | None:
        """Take a place under every limit for token, or none: None when taken, else the
        first limit that is full."""
        if not limits:
            return None
        args: list[str | int] = [self._ttl_ms, token, *(lim.limit for lim in limits)]
        full = int(self._acquire(keys=self._keys(limits), args=args))
        return None if full == 0 else limits[full - 1]

    def renew(self, limits: Sequence[Limit], token: str) -> int:
        """Push the expiry of token's places on; how many it still held."""
        if not limits:
            return 0
        return int(self._renew(keys=self._keys(limits), args=[self._ttl_ms, token]))

    def release(self, limits: Sequence[Limit], token: str) -> None:
        if limits:
            pipe = self.client.pipeline(transaction=True)
            for key in self._keys(limits):
                pipe.zrem(key, token)
            pipe.execute()

    def holders(self, keys: Sequence[str]) -> list[list[str]]:
        """The live holders (tokens) of each limit key (under the prefix)."""
        if not keys:
            return []
        rows = self._holders(keys=[self.prefix + k for k in keys], args=[])
        return [[text(m) for m in row] for row in rows]

    # --- one owner per guest --------------------------------------------------------------

    def _owner_key(self, guest: str) -> str:
        return f"{self.prefix}owner:{guest}"

    def acquire_owner(self, guest: str, token: str) -> str | None:
        """Become guest's owner: None when token now holds it, else the current holder."""
        key = self._owner_key(guest)
        if self.client.set(key, token, nx=True, px=self._ttl_ms):
            return None
        held = self.client.get(key)
        if held is None:  # it expired between the two calls: try once more
            return None if self.client.set(key, token, nx=True, px=self._ttl_ms) else "?"
        holder = text(held)
        return None if holder == token else holder

    def owner(self, guest: str) -> str | None:
        held = self.client.get(self._owner_key(guest))
        return None if held is None else text(held)

    def renew_owner(self, guest: str, token: str) -> bool:
        return bool(self._renew_owner(keys=[self._owner_key(guest)], args=[token, self._ttl_ms]))

    def release_owner(self, guest: str, token: str) -> None:
        self._release_owner(keys=[self._owner_key(guest)], args=[token])


class Heartbeat:
    """A thread renewing token's ownership of guest and its limit places every ttl/3 while a
    conversion runs. lost is set when the ownership was lost (or Redis could not be reached
    for a whole TTL): the conversion must stop, another worker may have taken the guest."""

    def __init__(
        self, leases: Leases, guest: str, token: str, limits: Sequence[Limit], lost: threading.Event
    ) -> None:
        self.leases = leases
        self.guest = guest
        self.token = token
        self.limits = list(limits)
        self.lost = lost
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{guest}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        interval = self.leases.ttl / 3
        failures = 0
        while not self._done.wait(interval):
            try:
                held = self.leases.renew_owner(self.guest, self.token)
                self.leases.renew(self.limits, self.token)
                failures = 0
            except redis.RedisError:
                failures += 1
                held = failures < 3  # Redis away for about a TTL: the leases are gone
            if not held:
                self.lost.set()
                return
