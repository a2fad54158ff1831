"""fleet/state_sqlite.py: a plan's state in one SQLite file, written by several processes at
once (the runner's conversions, `plan cancel`) and read by others (`plan status`)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from vmshift.errors import ConfigError
from vmshift.fleet.state import CANCELLED, COPYING, DONE, QUEUED
from vmshift.fleet.state_sqlite import SqliteState

WRITES = 300


def _writer(path: str, me: str, start: multiprocessing.synchronize.Event) -> None:
    """One process of the race: WRITES progress updates and log lines on its own guest and on
    the shared one, a change of stage every 100."""
    state = SqliteState(Path(path))
    start.wait()
    for i in range(WRITES):
        stage = (QUEUED, COPYING, DONE)[i // 100]
        state.update(me, stage=stage, done=i, total=WRITES, worker=me)
        state.log(me, f"{me} line {i}")
        state.log("shared", f"{me} line {i}")
        state.update("shared", done=i)
    state.cancel(me)
    state.close()


def test_two_processes_write_at_once_and_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "plan.sqlite"
    state = SqliteState(path)
    state.register(["a", "b", "shared"])
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), name, start)) for name in "ab"]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    records = {r.name: r for r in state.guests()}
    assert [r.name for r in state.guests()] == ["a", "b", "shared"]
    for name in "ab":
        assert records[name].stage == DONE
        assert records[name].done == WRITES - 1 and records[name].worker == name
        assert [stage for _t, stage in state.history(name)] == [QUEUED, COPYING, DONE]
        assert state.log_tail(name, 1000) == [f"{name} line {i}" for i in range(WRITES)]
        assert state.cancel_requested(name)
    shared = state.log_tail("shared", 1000)
    assert len(shared) == 2 * WRITES
    for name in "ab":  # each writer's lines in its order, interleaved with the other's
        assert [line for line in shared if line.startswith(name)] == [
            f"{name} line {i}" for i in range(WRITES)
        ]
    assert records["shared"].done == WRITES - 1
    assert not state.cancel_requested("shared")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_registering_again_keeps_what_a_guest_has_done(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "s.sqlite")
    state.register(["one", "two"])
    state.update("one", stage=COPYING, done=5, total=10, attempts=1)
    state.update("one", done=6)  # no change of stage: no history
    state.register(["two", "three", "one"])
    assert [r.name for r in state.guests()] == ["one", "two", "three"]
    one = state.guest("one")
    assert (one.stage, one.done, one.total, one.attempts) == (COPYING, 6, 10, 1)
    assert [stage for _t, stage in state.history("one")] == [QUEUED, COPYING]
    assert state.guest("three").queued_at is not None


def test_log_tail_cancels_and_their_withdrawal(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "s.sqlite")
    state.register(["one", "two"])
    for i in range(10):
        state.log("one", f"l{i}")
    assert state.log_tail("one", 3) == ["l7", "l8", "l9"] and state.log_tail("two") == []
    state.cancel("one")
    assert state.cancel_requested("one") and not state.cancel_requested("two")
    state.cancel()
    assert state.cancel_requested("two")
    state.clear_cancels()
    assert not state.cancel_requested("one") and not state.cancel_requested("two")
    state.update("two", stage=CANCELLED)
    other = SqliteState(tmp_path / "s.sqlite")  # another reader sees it
    assert other.guest("two").stage == CANCELLED


def test_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "s.sqlite")
    with pytest.raises(ConfigError, match=r"s.sqlite: no guest 'nope' in the plan's state"):
        state.guest("nope")
    with pytest.raises(ConfigError, match="no guest 'nope'"):
        state.update("nope", stage=DONE)
    with pytest.raises(ValueError, match="speed"):
        state.update("nope", speed=3)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not sqlite at all " * 100)
    with pytest.raises(ConfigError) as caught:
        SqliteState(garbage)
    assert caught.value.message == (
        f"{garbage}: cannot use it as the plan's state: file is not a database"
    )
