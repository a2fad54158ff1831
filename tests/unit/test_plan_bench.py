"""bench/plan_bench.py's own logic: the plan it writes, and what it reads from a plan's state."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from bench.plan_bench import (
    Interval,
    dispatch_gaps,
    first_line_after,
    max_concurrency,
    parse_workers,
    plan_toml,
)

from vmshift.fleet.plan import load_plan


def test_the_bench_plan_is_a_valid_plan_of_disk_guests(tmp_path: Path) -> None:
    disks = [tmp_path / "guests" / f"g{n:02d}.vmdk" for n in (1, 2, 3)]
    out = tmp_path / "out dir"
    path = tmp_path / "plan.toml"
    path.write_text(plan_toml(disks, out, 4))
    plan = load_plan(path)
    assert [g.name for g in plan.guests] == ["g01", "g02", "g03"]
    assert plan.limits.total == 4
    assert plan.limits.per_source_host == 4  # all on localhost: the default 2 would cap it
    argv = plan.guests[1].argv()
    assert argv[-1] == str(disks[1])
    pairs = dict(zip(argv[:-1:2], argv[1:-1:2], strict=True))
    assert pairs == {"-i": "disk", "-o": "local", "-os": str(out)}


def test_max_concurrency_counts_overlaps_not_handovers() -> None:
    runs = [
        Interval("a", 0.0, 0.3, 10.0),
        Interval("b", 1.0, 1.3, 5.0),
        Interval("c", 5.0, 5.2, 9.0),  # takes b's slot as it ends
        Interval("d", 9.5, 9.7, 12.0),
    ]
    assert max_concurrency(runs) == 2
    assert max_concurrency([*runs, Interval("e", 9.6, 9.8, 11.0)]) == 3
    assert max_concurrency([]) == 0


def test_dispatch_gaps_replay_the_slots() -> None:
    runs = [
        Interval("a", 100.2, None, 140.0, queued=100.0),
        Interval("b", 100.3, None, 130.0, queued=100.0),
        Interval("c", 130.4, None, 170.0, queued=100.0),  # b's slot, free at 130
        Interval("d", 141.0, None, 180.0, queued=100.0),  # a's slot, free at 140
        Interval("e", 200.5, None, 230.0, queued=200.0),  # queued after both slots freed
    ]
    gaps = dispatch_gaps(runs, 2)
    assert gaps == pytest.approx({"a": 0.2, "b": 0.3, "c": 0.4, "d": 1.0, "e": 0.5})


def test_dispatch_gaps_without_queued_times_start_at_zero() -> None:
    runs = [Interval("a", 5.0, None, 9.0), Interval("b", 9.25, None, 12.0)]
    assert dispatch_gaps(runs, 1) == pytest.approx({"a": 0.0, "b": 0.25})


def test_first_line_is_the_first_stage_change_of_this_attempt() -> None:
    history = [
        (10.0, "queued"),
        (11.0, "checking"),  # an earlier attempt
        (12.0, "interrupted"),
        (20.0, "queued"),  # the rerun queues it again
        (20.6, "checking"),
        (30.0, "converting"),
    ]
    assert first_line_after(history, 20.1) == 20.6
    assert first_line_after(history, 31.0) is None


@pytest.mark.parametrize("text", ["", "0", "2,x", "1,-2"])
def test_bad_worker_lists_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_workers(text)
    assert parse_workers("1, 2,4") == [1, 2, 4]
