"""A distributed plan run (issue 14): a real redis-server on 127.0.0.1, two `vmshift worker`
processes standing in for two conversion hosts, `vmshift plan run --broker`.

One guest's copy is slow (a 1 GiB data disk full of data); the worker converting it is killed
with SIGKILL (its whole process group) in the middle of that copy. Its guest is taken over by
the other worker and resumes its copy; every guest is done exactly once, nothing temporary is
left at the target, and the per-source-host limit holds across both workers all along: the
conversions at once are sampled from the processes themselves and from the limit's lease.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.guests.manifest import BuiltGuest
from tests.redis_fixture import RedisServer, private_redis
from vmshift.fleet.leases import Leases
from vmshift.fleet.plan import load_plan
from vmshift.fleet.state import COPYING, DONE, INTERRUPTED
from vmshift.fleet.state_redis import RedisState

MIB = 1 << 20
PER_SOURCE_HOST = 2
LEASE_TTL = 15  # seconds: longer than a SIGTERMed conversion takes to keep its copy and end
VISIBILITY_TIMEOUT = 30  # seconds: a killed worker's messages come back this soon
EXE = Path(sys.executable).parent / "vmshift"


@dataclass
class Samples:
    """The conversions at once, as seen every SAMPLE seconds."""

    processes: list[int] = field(default_factory=list)  # `vmshift convert` children alive
    leases: list[int] = field(default_factory=list)  # holders of the source host's lease


SAMPLE = 0.2


def conversions(directory: Path) -> int:
    """The `vmshift convert` runs of the plan in directory alive now: each one runs there, in
    a session of its own (run_guest), led by the conversion process (the runner's stub execs
    it); its own children share its command line for a moment, not its session's lead."""
    n = 0
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"vmshift.cli.main" not in argv or b"convert" not in argv:
                continue
            session = (proc / "stat").read_text().rsplit(")", 1)[1].split()[3]
            n += session == proc.name and (proc / "cwd").readlink() == directory
    return n


@contextlib.contextmanager
def sampling(directory: Path, leases: Leases) -> Iterator[Samples]:
    samples, done = Samples(), threading.Event()

    def run() -> None:
        while not done.wait(SAMPLE):
            samples.processes.append(conversions(directory))
            samples.leases.append(len(leases.holders(["limit:source-host:esxi-a"])[0]))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    """`vmshift worker` in a session of its own (a conversion host of its own, to kill whole)."""
    argv = [str(EXE), "-v", "worker", "--broker", url, "--concurrency", "2",
            "--visibility-timeout", str(VISIBILITY_TIMEOUT), "--restore-interval", "1",
            "--lease-ttl", str(LEASE_TTL)]  # fmt: skip
    with log.open("wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until(what: str, predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def plan_file(linux_guests: dict[str, BuiltGuest], tmp_path: Path) -> Path:
    """Three guests from one source host ("esxi-a"): "slow" with a 1 GiB data disk full of
    data, "web" and "db" (the phony RHEL guest each time), to -o local in tmp_path/out."""
    rhel = Path(linux_guests["rhel"].disks[0])
    data = tmp_path / "data.raw"
    with data.open("wb") as f:
        block = hashlib.sha256(b"data").digest() * (MIB // 32)
        for _ in range(1024):
            f.write(block)
    (tmp_path / "out").mkdir()
    (tmp_path / "work").mkdir()
    plan = tmp_path / "plan.toml"
    guests = [("slow", [rhel, data]), ("web", [rhel]), ("db", [rhel])]
    text = (
        '[defaults]\ninput = "disk"\noutput = "local"\noutput-storage = "out"\n'
        'workdir = "work"\n'
        f"[limits]\ntotal = 4\nper-source-host = {PER_SOURCE_HOST}\n"
    )
    for name, disks in guests:
        args = ", ".join(f'"{d}"' for d in disks)
        text += f'[[guest]]\nargs = [{args}]\noutput-name = "{name}"\nsource-host = "esxi-a"\n'
    plan.write_text(text)
    return plan


@pytest.mark.slow
def test_a_killed_workers_guest_is_taken_over_and_the_limit_holds(
    plan_file: Path, tmp_path: Path
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    plan_id = load_plan(plan_file).id
    with private_redis(tmp_path / "redis") as server:
        state = RedisState(server.url, plan_id)
        workers = [start_worker(server.url, tmp_path / f"worker-{n}.log") for n in (1, 2)]
        try:
            run_distributed_and_kill(server, state, workers, plan_file)
        finally:
            for proc in workers:
                stop_worker(proc)
            state.close()
    # The outputs, each guest's once, and nothing temporary; the work dirs gone.
    assert sorted(p.name for p in out.iterdir()) == [
        "db-sda", "db.xml", "slow-sda", "slow-sdb", "slow.xml", "web-sda", "web.xml",
    ]  # fmt: skip
    assert list(work.iterdir()) == []


def run_distributed_and_kill(
    server: RedisServer,
    state: RedisState,
    workers: list[subprocess.Popen[bytes]],
    plan_file: Path,
) -> None:
    leases = Leases(state.client, state.prefix)
    log = (plan_file.parent / "run.log").open("wb")
    with sampling(plan_file.parent, leases) as samples, log:
        run = subprocess.Popen(
            [str(EXE), "plan", "run", str(plan_file), "--broker", server.url],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:

            def slow_copying() -> bool:
                if "slow" not in {r.name for r in state.guests()}:
                    return False
                record = state.guest("slow")  # in the copy of its data disk (its 2nd)
                return record.stage == COPYING and record.message.endswith("-sdb")

            wait_until("the copy of the slow guest's data disk", slow_copying, 300)
            owner = state.guest("slow").worker
            assert owner is not None
            pid = int(owner.rsplit(":", 1)[1])  # the pool process converting it
            victim = next(w for w in workers if os.getpgid(pid) == w.pid)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            rc = run.wait(timeout=420)
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    survivor = next(w for w in workers if w is not victim)
    report = (plan_file.parent / "run.log").read_text(errors="replace")
    assert rc == 0, report

    records = {r.name: r for r in state.guests()}
    assert sorted(records) == ["db", "slow", "web"]
    for name, record in records.items():
        stages = [s for _t, s in state.history(name)]
        assert record.stage == DONE and stages.count(DONE) == 1, (name, stages)
    # The slow guest: taken over by the other worker, which resumed the kept copy.
    slow = records["slow"]
    assert slow.worker is not None and slow.worker != owner
    assert os.getpgid(int(slow.worker.rsplit(":", 1)[1])) == survivor.pid
    assert INTERRUPTED in [s for _t, s in state.history("slow")]
    log_text = "\n".join(state.log_tail("slow", 1000))
    taken_over = log_text.split(f"--- {owner} stopped under it; taken over by ")
    assert len(taken_over) == 2, log_text
    # The new attempt resumed: the converted disks and the copy under way were kept, so no
    # appliance again, and the copy went on from what was journaled.
    after = taken_over[1]
    assert "vmshift convert --machine-readable --resume " in after, log_text
    assert "stage appliance" not in after and "resuming the copy" in after, log_text
    assert slow.attempts >= 2
    # The limit held across both workers, and was reached (so the samples mean something).
    assert max(samples.processes) == PER_SOURCE_HOST, samples
    assert max(samples.leases) == PER_SOURCE_HOST, samples
