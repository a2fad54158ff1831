"""The cross-worker leases (fleet/leases.py) and the Redis plan state (fleet/state_redis.py),
on a real redis-server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from tests.redis_fixture import RedisServer, free_port, redis_server
from vmshift.errors import ConfigError, VmshiftError
from vmshift.fleet.leases import Heartbeat, Leases, Limit
from vmshift.fleet.state import COPYING, DONE, QUEUED
from vmshift.fleet.state_redis import LOG_LINES, RedisState

__all__ = ["redis_server"]


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url)
    c.flushdb()
    yield c
    c.close()


TOTAL = Limit("limit:total", 3, "total")
HOST_A = Limit("limit:source-host:a", 1, "host a")
HOST_B = Limit("limit:source-host:b", 2, "host b")


def test_limits_are_taken_all_or_nothing(client: redis.Redis) -> None:
    leases = Leases(client, "p:", ttl=30)
    assert leases.acquire([TOTAL, HOST_A], "w1") is None
    assert leases.acquire([TOTAL, HOST_A], "w2") == HOST_A  # host a is full
    # w2 took no place under the total either: two more fit there
    assert leases.holders(["limit:total"]) == [["w1"]]
    assert leases.acquire([TOTAL, HOST_B], "w2") is None
    assert leases.acquire([TOTAL, HOST_B], "w3") is None
    assert leases.acquire([TOTAL, HOST_B], "w4") == TOTAL
    assert leases.acquire([TOTAL, HOST_A], "w1") is None  # a holder asking again keeps its place
    leases.release([TOTAL, HOST_A], "w1")
    assert leases.acquire([TOTAL, HOST_A], "w4") is None
    assert sorted(leases.holders(["limit:total"])[0]) == ["w2", "w3", "w4"]


def test_an_expired_place_is_free_and_a_renewed_one_is_not(client: redis.Redis) -> None:
    # Renewed every 0.5 s against a 1.5 s TTL: room for a loaded machine's late wake-ups.
    short = Leases(client, "p:", ttl=1.5)
    assert short.acquire([HOST_A], "dead") is None
    assert short.acquire([HOST_B], "alive") is None
    for _ in range(4):
        time.sleep(0.5)
        assert short.renew([HOST_B], "alive") == 1
    assert short.renew([HOST_A], "dead") == 0  # it ran out: not brought back
    assert short.acquire([HOST_A], "next") is None
    assert short.holders(["limit:source-host:a", "limit:source-host:b"]) == [["next"], ["alive"]]


def test_one_owner_per_guest(client: redis.Redis) -> None:
    leases = Leases(client, "p:", ttl=0.5)
    assert leases.acquire_owner("web01", "w1") is None
    assert leases.acquire_owner("web01", "w2") == "w1"
    assert leases.acquire_owner("web01", "w1") is None
    leases.release_owner("web01", "w2")  # not its lease: nothing happens
    assert leases.owner("web01") == "w1"
    time.sleep(0.7)  # w1 died: its lease ran out
    assert leases.renew_owner("web01", "w1") is False
    assert leases.acquire_owner("web01", "w2") is None
    leases.release_owner("web01", "w2")
    assert leases.owner("web01") is None


def test_the_heartbeat_keeps_the_leases_and_says_when_one_was_lost(client: redis.Redis) -> None:
    # A TTL with room for a loaded 2-core machine: renewals come every ttl/3 = 0.5 s.
    leases = Leases(client, "p:", ttl=1.5)
    assert leases.acquire_owner("g", "w1") is None
    assert leases.acquire([HOST_A], "w1") is None
    lost = threading.Event()
    with Heartbeat(leases, "g", "w1", [HOST_A], lost):
        time.sleep(4.5)  # three TTLs
        assert leases.owner("g") == "w1"
        assert leases.acquire([HOST_A], "w2") == HOST_A
        assert not lost.is_set()
        client.set("p:owner:g", "w2")  # another took the guest
        assert lost.wait(10.0)


def test_the_state_keeps_records_history_logs_and_cancels(redis_server: RedisServer) -> None:
    state = RedisState(redis_server.url, "plan-1")
    other = RedisState(redis_server.url, "plan-2")
    try:
        state.register(["b", "a"])
        state.register(["a", "c"])
        assert [r.name for r in state.guests()] == ["b", "a", "c"]
        assert other.guests() == []
        state.update("a", stage=COPYING, done=5, total=10, rate=1.5, worker="h:1", error=None)
        state.update("a", stage=COPYING, done=7)
        state.update("a", stage=DONE, finished_at=123.5)
        record = state.guest("a")
        assert (record.stage, record.done, record.total, record.rate) == (DONE, 7, 10, 1.5)
        assert (record.worker, record.finished_at, record.error) == ("h:1", 123.5, None)
        assert [s for _t, s in state.history("a")] == [QUEUED, COPYING, DONE]
        with pytest.raises(ConfigError, match="no guest 'x'"):
            state.update("x", stage=DONE)
        with pytest.raises(ValueError, match="bogus"):
            state.update("a", bogus=1)
        for i in range(LOG_LINES + 5):
            state.log("b", f"line {i}")
        tail = state.log_tail("b", 3)
        assert tail == [f"line {LOG_LINES + 2}", f"line {LOG_LINES + 3}", f"line {LOG_LINES + 4}"]
        assert len(state.log_tail("b", LOG_LINES * 2)) == LOG_LINES
        assert not state.cancel_requested("a")
        state.cancel("a")
        assert state.cancel_requested("a") and not state.cancel_requested("b")
        state.cancel()
        assert state.cancel_requested("b") and not other.cancel_requested("b")
        state.clear_cancels()
        assert not state.cancel_requested("a")
    finally:
        state.close()
        other.close()


def test_an_unreachable_broker_is_one_line_naming_it() -> None:
    port = free_port()
    with pytest.raises(VmshiftError) as caught:
        RedisState(f"redis://user:secret@127.0.0.1:{port}/0", "p")
    message = caught.value.message
    assert message.startswith(f"cannot reach the broker redis://user:***@127.0.0.1:{port}/0: ")
    assert "\n" not in message and "secret" not in message
    with pytest.raises(ConfigError, match="--broker http://x: not a Redis URL"):
        RedisState("http://x", "p")


def test_a_running_guest_whose_owner_is_gone_is_an_orphan_after_the_grace(
    client: redis.Redis,
) -> None:
    """What `plan run --broker` sends again while it watches (distributed.orphans)."""
    from vmshift.fleet.distributed import orphans
    from vmshift.fleet.state import GuestRecord

    leases = Leases(client, "p:", ttl=30)
    assert leases.acquire_owner("alive", "w1") is None
    records = [
        GuestRecord("alive", stage=COPYING),  # its worker renews its lease
        GuestRecord("dead", stage=COPYING),  # no lease: its worker died
        GuestRecord("waiting", stage=QUEUED),  # not started: nobody owns it yet
        GuestRecord("finished", stage=DONE),
    ]
    seen: dict[str, float] = {}
    assert orphans(records, leases, seen, now=100.0, grace=10.0) == []
    assert orphans(records, leases, seen, now=105.0, grace=10.0) == []
    assert orphans(records, leases, seen, now=110.0, grace=10.0) == ["dead"]
    # Sent again: counted afresh, and a guest whose new owner took it is no orphan.
    assert orphans(records, leases, seen, now=111.0, grace=10.0) == []
    assert leases.acquire_owner("dead", "w2") is None
    assert orphans(records, leases, seen, now=130.0, grace=10.0) == []
    assert seen == {}
