"""A plan's state in Redis: what a distributed run's workers write and every host can read.

Keys, all under `vmshift:plan:<plan id>:`:

    order               list: the guests' names, in the order they were registered
    guest:<name>        hash: the GuestRecord's fields, each a JSON value
    history:<name>      list: [time, stage] for every change of stage (JSON)
    log:<name>          list: the guest's log, its last LOG_LINES lines
    cancel              string: the whole plan was asked to cancel
    cancels             set: the guests asked to cancel
    owner:<name>, limit:...   the leases of fleet/leases.py

Registration and updates are Lua scripts, so a change of stage and its history entry are one
step even with several workers writing. Times are the writer's clock (time.time()), as in the
SQLite store; the leases use the Redis server's clock instead, the one clock every host shares.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from vmshift.errors import ConfigError, VmshiftError
from vmshift.fleet.state import GuestRecord

LOG_LINES = 2000  # lines of a guest's log kept
CONNECT_TIMEOUT = 10.0  # seconds

_FIELDS = tuple(f.name for f in fields(GuestRecord))

# KEYS: order; ARGV: prefix, now, name...  -> how many were added
_REGISTER = """
local added = 0
for i = 3, #ARGV do
  local name = ARGV[i]
  local key = ARGV[1] .. 'guest:' .. name
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'name', cjson.encode(name), 'stage', cjson.encode('queued'),
               'queued_at', ARGV[2], 'updated_at', ARGV[2])
    redis.call('RPUSH', KEYS[1], name)
    redis.call('RPUSH', ARGV[1] .. 'history:' .. name, '[' .. ARGV[2] .. ',"queued"]')
    added = added + 1
  end
end
return added
"""

# KEYS: guest hash, history; ARGV: now, new stage as JSON or '', field, value, ...
# -> 0 when there is no such guest
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  local old = redis.call('HGET', KEYS[1], 'stage')
  if old ~= ARGV[2] then
    redis.call('RPUSH', KEYS[2], '[' .. ARGV[1] .. ',' .. ARGV[2] .. ']')
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def connect(url: str) -> redis.Redis:
    """A client of the Redis at url that answered a PING; VmshiftError (one line naming the
    URL) when it is not a Redis URL or does not answer."""
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"--broker {url}: not a Redis URL (redis://HOST:PORT/DB)")
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=30
        )
        client.ping()
    except (ValueError, redis.RedisError) as exc:
        raise VmshiftError(
            f"cannot reach the broker {redacted(url)}: {exc}",
            hint="is redis-server running there, and listening on that address?",
        ) from exc
    return client


class RedisState:
    """The PlanState of fleet/state.py in the Redis at url, for the plan plan_id."""

    def __init__(self, url: str, plan_id: str) -> None:
        self.url = url
        self.plan_id = plan_id
        self.prefix = f"vmshift:plan:{plan_id}:"
        self.client = connect(url)
        self._register = self.client.register_script(_REGISTER)
        self._update = self.client.register_script(_UPDATE)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise VmshiftError(f"the broker {redacted(self.url)}: {exc}") from exc

    def register(self, names: Sequence[str]) -> None:
        with self._errors():
            self._register(keys=[self.prefix + "order"], args=[self.prefix, time.time(), *names])

    def guests(self) -> list[GuestRecord]:
        with self._errors():
            names = [text(n) for n in self.client.lrange(self.prefix + "order", 0, -1)]
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self.prefix + "guest:" + name)
            rows = pipe.execute()
        return [_record(row) for row in rows if row]

    def guest(self, name: str) -> GuestRecord:
        with self._errors():
            row = self.client.hgetall(self.prefix + "guest:" + name)
        if not row:
            raise ConfigError(f"no guest {name!r} in the plan's state ({self.plan_id})")
        return _record(row)

    def update(self, name: str, **values: Any) -> None:
        unknown = set(values) - set(_FIELDS) | ({"name"} & set(values))
        if unknown:
            raise ValueError(f"not fields of a guest record: {sorted(unknown)}")
        now = time.time()
        values["updated_at"] = now
        stage = values.get("stage")
        args: list[Any] = [now, json.dumps(stage) if stage is not None else ""]
        for key, value in values.items():
            args += [key, json.dumps(value)]
        keys = [self.prefix + "guest:" + name, self.prefix + "history:" + name]
        with self._errors():
            found = self._update(keys=keys, args=args)
        if not found:
            raise ConfigError(f"no guest {name!r} in the plan's state ({self.plan_id})")

    def history(self, name: str) -> list[tuple[float, str]]:
        with self._errors():
            rows = self.client.lrange(self.prefix + "history:" + name, 0, -1)
        return [(float(at), str(stage)) for at, stage in map(json.loads, rows)]

    def log(self, name: str, line: str) -> None:
        key = self.prefix + "log:" + name
        with self._errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.rpush(key, line)
            pipe.ltrim(key, -LOG_LINES, -1)
            pipe.execute()

    def log_tail(self, name: str, lines: int = 200) -> list[str]:
        with self._errors():
            rows = self.client.lrange(self.prefix + "log:" + name, -lines, -1)
        return [text(row) for row in rows]

    def cancel(self, name: str | None = None) -> None:
        with self._errors():
            if name is None:
                self.client.set(self.prefix + "cancel", time.time())
            else:
                self.client.sadd(self.prefix + "cancels", name)

    def cancel_requested(self, name: str) -> bool:
        with self._errors():
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(self.prefix + "cancel")
            pipe.sismember(self.prefix + "cancels", name)
            whole, one = pipe.execute()
        return bool(whole) or bool(one)

    def clear_cancels(self) -> None:
        with self._errors():
            self.client.delete(self.prefix + "cancel", self.prefix + "cancels")

    def close(self) -> None:
        self.client.close()


def text(value: bytes | str) -> str:
    """A string from Redis (bytes: the client does not decode responses)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _record(row: Mapping[bytes | str, bytes | str]) -> GuestRecord:
    values = {text(k): json.loads(v) for k, v in row.items()}
    return GuestRecord(**{k: v for k, v in values.items() if k in _FIELDS})
