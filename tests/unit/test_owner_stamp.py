"""process.Owner: the stamp that work directories and output locks carry, and how a run judges
another run from it (alive, dead, or not its to judge); workdir.py's sweep reads it too."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vmshift.process import Owner, proc_stat
from vmshift.workdir import OWNER, make_workdir, sweep_dead_runs


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_this_process_round_trips_and_is_alive() -> None:
    me = Owner.this_process()
    assert me.pid == os.getpid() and me.started and me.boot and me.pidns and me.host
    stamp = me.stamp()
    assert stamp.endswith("\n") and stamp.split()[0] == str(os.getpid())
    assert Owner.parse(stamp) == me
    assert me.state() == "alive"
    assert str(me) == f"pid {os.getpid()}"


def test_an_older_vmshifts_stamp_is_read() -> None:
    me = Owner.this_process()
    old = Owner.parse(f"{me.pid} {me.started}\n")
    assert old == Owner(me.pid, me.started)
    assert old.state() == "alive"
    assert Owner(dead_pid(), me.started).state() == "dead"


def test_a_reused_pid_is_not_its_owner() -> None:
    """Same number, another start time: the owner is gone, another process has its pid."""
    me = Owner.this_process()
    assert dataclasses.replace(me, started=str(int(me.started) - 1)).state() == "dead"
    assert dataclasses.replace(me, started="").state() == "dead"


def test_a_zombie_is_dead() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        started = (proc_stat(proc.pid) or [""] * 20)[19]
        owner = dataclasses.replace(Owner.this_process(), pid=proc.pid, started=started)
        assert owner.state() == "alive"
        proc.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (proc_stat(proc.pid) or ["Z"])[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert owner.state() == "dead"
    finally:
        proc.kill()
        proc.wait()


def test_elsewhere_is_not_ours_to_judge() -> None:
    me = Owner.this_process()
    other_host = dataclasses.replace(me, pid=dead_pid(), host="nfs-client-2")
    assert other_host.state() == "unknown"
    assert str(other_host) == f"pid {other_host.pid} on host nfs-client-2"
    assert dataclasses.replace(me, pid=dead_pid(), pidns="pid:[1]").state() == "unknown"
    # This host, an earlier boot: whatever that pid is now, it is not the owner.
    assert dataclasses.replace(me, boot="00000000-0000-0000-0000-000000000000").state() == "dead"


@pytest.mark.parametrize("text", ["", "hello", "12 34 56", "x 1", "1 2 3 4 5 6"])
def test_what_is_not_a_stamp(text: str) -> None:
    with pytest.raises(ValueError):
        Owner.parse(text)


def test_the_sweep_reads_the_stamp(tmp_path: Path) -> None:
    me = Owner.this_process()
    mine = make_workdir(tmp_path)
    assert Owner.parse((mine / OWNER).read_text()) == me
    dead = make_workdir(tmp_path)
    (dead / OWNER).write_text(dataclasses.replace(me, pid=dead_pid()).stamp())
    old_dead = make_workdir(tmp_path)
    (old_dead / OWNER).write_text(f"{dead_pid()} {me.started}\n")
    elsewhere = make_workdir(tmp_path)
    (elsewhere / OWNER).write_text(dataclasses.replace(me, pid=dead_pid(), host="b").stamp())
    assert sweep_dead_runs(tmp_path) == sorted([dead, old_dead])
    assert sorted(tmp_path.iterdir()) == sorted([mine, elsewhere])
