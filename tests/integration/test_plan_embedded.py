"""`vmshift plan run` here (issue 14): a plan of phony guests and the real Debian guest, its
runner killed with SIGKILL in the middle of a copy, then run again: every guest completes
exactly once, the interrupted one by resuming its copy, and nothing temporary is left.

One plan run serves every test (a module fixture): the first `plan run --workers 1` converts
the phony RHEL guest with a 3 GiB data disk alone and is killed once a window of that disk is
journaled; the second converts the rest, two at a time, and resumes the RHEL guest's copy.
Conversions: three appliance runs and one resumed copy, the least a plan of three guests and a
kill can take.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import vmshift
from tests.guests.manifest import BuiltGuest
from tests.integration.convert_runs import users_of
from vmshift.fleet.state import CANCELLED, COPYING, DONE, QUEUED
from vmshift.fleet.state_sqlite import SqliteState

pytestmark = [pytest.mark.slow, pytest.mark.realguest]

MIB = 1 << 20
GIB = 1 << 30
CONVERTED = ("rhel", "debian12-vmware", "debian")


@dataclass(frozen=True)
class PlanRun:
    plan: Path
    state: Path
    out: Path
    work: Path
    killed: dict[str, dict[str, Any]]  # plan status --json after the kill, by guest
    first_rc: int
    second: subprocess.CompletedProcess[str]
    status: dict[str, Any]  # plan status --json at the end


def data_disk(path: Path, size: int) -> Path:
    """A raw disk full of non-zero bytes: its copy takes seconds, in windows of 1 then 2 GiB."""
    block = hashlib.sha256(b"plan data").digest() * (MIB // 32)
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(block)
    return path


def plan_text(linux: dict[str, BuiltGuest], debian: BuiltGuest, data: Path) -> str:
    def disks(*paths: Path | str) -> str:
        return json.dumps([str(p) for p in paths])

    return f"""
[defaults]
output = "local"
output-storage = "out"
workdir = "work"

[limits]
total = 2
per-source-host = 2

[[guest]]                 # the one killed in its copy
input = "disk"
args = {disks(linux["rhel"].disks[0], data)}

[[guest]]
input = "vmx"
args = {disks(debian.extra["vmx"])}

[[guest]]
input = "disk"
args = {disks(linux["debian"].disks[0])}

[[guest]]                 # cancelled before the plan runs
input = "disk"
args = {disks(linux["suse"].disks[0])}
output-name = "suse"

[[guest]]
input = "disk"
args = {disks(linux["ubuntu"].disks[0])}
skip = true
"""


def status(plan: Path, state: Path) -> dict[str, Any]:
    got = vmshift(["plan", "status", plan, "--state", state, "--json"], check=True)
    doc: dict[str, Any] = json.loads(got.stdout)
    return doc


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in doc["guests"]}


def wait_for_journaled_window(work: Path, disk: str, runner: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        assert runner.poll() is None, "the plan run ended before its copy"
        for journal in work.glob("vmshift-*/copy.journal"):
            if f"{disk} " in journal.read_text():
                return
        time.sleep(0.05)
    raise AssertionError("no window was journaled")


@pytest.fixture(scope="module")
def plan_run(
    linux_guests: dict[str, BuiltGuest],
    real_debian: BuiltGuest,
    tmp_path_factory: pytest.TempPathFactory,
) -> PlanRun:
    base = tmp_path_factory.mktemp("plan")
    (base / "out").mkdir()
    (base / "work").mkdir()
    data = data_disk(base / "data.raw", 3 * GIB)
    plan = base / "plan.toml"
    plan.write_text(plan_text(linux_guests, real_debian, data))
    state = base / "state.sqlite"

    cancel = vmshift(["plan", "cancel", plan, "suse", "--state", state], check=True)
    assert cancel.stdout == "vmshift: cancel asked for suse; not finished then: suse\n"

    exe = Path(sys.executable).parent / "vmshift"
    with (base / "first.log").open("w") as log:
        runner = subprocess.Popen(
            [str(exe), "plan", "run", str(plan), "--state", str(state), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            wait_for_journaled_window(base / "work", "sdb", runner)
        finally:
            runner.send_signal(signal.SIGKILL)
            first_rc = runner.wait()
    # Told to stop by its dying runner (SIGTERM), the conversion keeps its copy and ends.
    deadline = time.monotonic() + 120
    while users_of(base / "work") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not users_of(base / "work")
    killed = by_name(status(plan, state))

    second = vmshift(["plan", "run", plan, "--state", state], timeout=1500)
    return PlanRun(
        plan=plan, state=state, out=base / "out", work=base / "work", killed=killed,
        first_rc=first_rc, second=second, status=status(plan, state),
    )  # fmt: skip


def test_the_killed_run_left_its_guest_in_its_copy(plan_run: PlanRun) -> None:
    assert plan_run.first_rc == -signal.SIGKILL
    rhel = plan_run.killed["rhel"]
    assert (rhel["stage"], rhel["attempts"]) == (COPYING, 1)
    assert rhel["worker"] and rhel["started_at"] >= rhel["queued_at"]
    assert plan_run.killed["debian12-vmware"]["stage"] == QUEUED
    assert plan_run.killed["debian"]["attempts"] == 0
    assert plan_run.killed["suse"]["stage"] == CANCELLED


def test_the_rerun_completes_every_guest_exactly_once(plan_run: PlanRun) -> None:
    assert plan_run.second.returncode == 0, plan_run.second.stderr
    guests = by_name(plan_run.status)
    assert list(guests) == [*CONVERTED, "suse"]  # the skipped guest is not in the plan's run
    assert {n: g["stage"] for n, g in guests.items()} == {
        "rhel": DONE, "debian12-vmware": DONE, "debian": DONE, "suse": CANCELLED,
    }  # fmt: skip
    assert {n: g["attempts"] for n, g in guests.items()} == {
        "rhel": 2, "debian12-vmware": 1, "debian": 1, "suse": 0,
    }  # fmt: skip
    state = SqliteState(plan_run.state)
    for name in CONVERTED:
        stages = [stage for _t, stage in state.history(name)]
        assert stages.count(DONE) == 1, (name, stages)
        assert stages[-1] == DONE
        assert guests[name]["error"] is None
    assert [stage for _t, stage in state.history("suse")] == [QUEUED, CANCELLED]
    assert state.log_tail("suse") == []  # never started
    assert "ubuntu" not in {r.name for r in state.guests()}
    assert plan_run.second.stdout.splitlines()[-1] == "plan: 4 guests: 3 done, 1 cancelled"


def test_the_interrupted_guest_resumed_its_copy(plan_run: PlanRun) -> None:
    log = SqliteState(plan_run.state).log_tail("rhel", 5000)
    attempts = [line for line in log if line.startswith("--- attempt ")]
    assert len(attempts) == 2
    assert " --resume " not in attempts[0] and " --resume " in attempts[1]
    second = log[log.index(attempts[1]) :]
    assert any("resuming the copy after" in line for line in second), second
    assert "stage appliance" not in "\n".join(second)  # the conversion was not done again
    assert second[-1] == "--- the conversion ended: exit 0"


def test_outputs_exist_and_nothing_temporary_is_left(plan_run: PlanRun) -> None:
    names = sorted(p.name for p in plan_run.out.iterdir())
    assert names == sorted([
        "rhel-sda", "rhel-sdb", "rhel.xml", "debian12-vmware-sda", "debian12-vmware.xml",
        "debian-sda", "debian.xml",
    ])  # fmt: skip
    assert (plan_run.out / "rhel-sdb").stat().st_size == 3 * GIB
    assert list(plan_run.work.iterdir()) == []
    assert not users_of(plan_run.work)


def test_the_run_showed_the_guests_progress(plan_run: PlanRun) -> None:
    out = plan_run.second.stdout
    for name in CONVERTED:
        assert f" {name}: done" in out
    assert " debian12-vmware: copying" in out or " debian12-vmware: finalizing" in out
