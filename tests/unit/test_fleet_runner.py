"""fleet/runner.py and fleet/guest_run.py on a stand-in for `python -m vmshift.cli.main convert`:
a script that prints the machine-readable lines of a conversion, notes when it starts and ends,
and holds on while told to. No appliance: what is tested is the scheduling (the plan's limits,
with the concurrency recorded), the state it writes, failures, cancel, stop and a killed
runner."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import vmshift
from vmshift.cli.plan_run_cmd import retry_cancelled
from vmshift.fleet.plan import Plan, load_plan
from vmshift.fleet.runner import STOPPED, run_plan
from vmshift.fleet.state import (
    CANCELLED,
    COPYING,
    DONE,
    FAILED,
    FINALIZING,
    INTERRUPTED,
    GuestRecord,
)
from vmshift.fleet.state_sqlite import SqliteState

# Started as `FAKE -c CODE PPID FAKE -m vmshift.cli.main convert ARGS`, it lets the real python
# run the code (the runner's die-with-parent step), which execs it again as the conversion.
FAKE = """\
#!{python}
import os, signal, sys, time
if sys.argv[1] == "-c":
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
args = sys.argv[4:]
name = os.path.basename(args[-1]).removesuffix(".img")
here = os.environ["FAKE_DIR"]

def note(what):
    fd = os.open(os.path.join(here, "events"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{{what}} {{name}} {{' '.join(args)}}\\n".encode())
    os.close(fd)

def stopped(signum, frame):
    note("-" if signum == signal.SIGINT else "TERM")
    print("vmshift: interrupted by " + signal.Signals(signum).name, file=sys.stderr, flush=True)
    sys.exit(128 + signum)

signal.signal(signal.SIGINT, stopped)
signal.signal(signal.SIGTERM, stopped)
note("+")
print("stage source 0.0 reading the source", flush=True)
print("stage inspect 0.1 inspecting the guest", flush=True)
print("stage copy 0.2 copying disks", flush=True)
if "--resume" in args:
    print("warning " + name + "-sda: resuming the copy after 8 MiB", flush=True)
for i in range(0, 101, 25):
    print(f"copy {{name}}-sda {{i}} 100 {{i}}%", flush=True)
    time.sleep(float(os.environ.get("FAKE_HOLD", "0.2")) / 5)
while os.path.exists(os.path.join(here, "hold-" + name)):
    time.sleep(0.05)
if os.path.exists(os.path.join(here, "fail-" + name)):
    print("vmshift: error: " + name + ": the disk is on fire", file=sys.stderr, flush=True)
    print("vmshift: hint: put it out", file=sys.stderr, flush=True)
    note("-")
    sys.exit(1)
print("stage finalize 0.5 creating the guest on the target", flush=True)
print("stage created 0.6 cleaning up (the guest is complete on the target)", flush=True)
if os.path.exists(os.path.join(here, "die-" + name)):  # killed in its cleanup
    note("KILLED")
    os.kill(os.getpid(), signal.SIGKILL)
note("-")
"""


class Fake:
    """The stand-in conversion and what it noted."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.python = directory / "python"
        self.python.write_text(FAKE.format(python=sys.executable))
        self.python.chmod(0o755)
        self.environ = {**os.environ, "FAKE_DIR": str(directory)}

    def events(self) -> list[tuple[str, str, list[str]]]:
        path = self.dir / "events"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            what, name, *args = line.split(" ")
            out.append((what, name, args))
        return out

    def flag(self, kind: str, name: str, on: bool = True) -> None:
        path = self.dir / f"{kind}-{name}"
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def wait_for(self, what: Callable[[], bool], seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not what():
            assert time.monotonic() < deadline, f"still waiting; events: {self.events()}"
            time.sleep(0.05)


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    (tmp_path / "fake").mkdir()
    return Fake(tmp_path / "fake")


def plan_of(tmp_path: Path, limits: str, guests: list[dict[str, str]]) -> Plan:
    lines = ["[defaults]", 'input = "disk"', 'output = "local"', 'output-storage = "/out"',
             "[limits]", limits]  # fmt: skip
    for g in guests:
        lines.append("[[guest]]")
        lines += [f"{k} = {v!r}" if k != "args" else f'args = ["{v}"]' for k, v in g.items()]
    path = tmp_path / "plan.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return load_plan(path)


def run(plan: Plan, state: SqliteState, fake: Fake, stop: threading.Event | None = None,
        workers: int | None = None) -> tuple[int, list[list[GuestRecord]]]:  # fmt: skip
    shown: list[list[GuestRecord]] = []
    rc = run_plan(
        plan, state, workers=workers or plan.limits.total, python=str(fake.python),
        environ=fake.environ, stop=stop or threading.Event(), show=shown.append,
    )  # fmt: skip
    return rc, shown


def concurrency(events: list[tuple[str, str, list[str]]], key: Callable[[str], str]) -> int:
    """The most conversions running at once with the same key (over the start and end notes,
    in the order they happened)."""
    running: Counter[str] = Counter()
    most = 0
    for what, name, _args in events:
        running[key(name)] += 1 if what == "+" else -1
        most = max(most, *running.values())
    return most


def test_the_scheduler_honours_total_and_per_source_host(tmp_path: Path, fake: Fake) -> None:
    hosts = {"a1": "esx-a", "a2": "esx-a", "a3": "esx-a", "a4": "esx-a",
             "b1": "esx-b", "b2": "esx-b", "c1": "esx-c"}  # fmt: skip
    plan = plan_of(
        tmp_path, "total = 3\nper-source-host = 2",
        [{"args": f"{n}.img", "source-host": h} for n, h in hosts.items()],
    )  # fmt: skip
    state = SqliteState(tmp_path / "state.sqlite")
    fake.environ["FAKE_HOLD"] = "1.5"
    rc, shown = run(plan, state, fake)
    assert rc == 0
    events = fake.events()
    assert sorted(n for w, n, _ in events if w == "+") == sorted(hosts)  # each one once
    assert concurrency(events, lambda _n: "all") == 3
    assert concurrency(events, lambda n: hosts[n]) == 2
    for r in state.guests():
        assert r.stage == DONE and r.attempts == 1 and r.error is None
        assert (r.done, r.total) == (100, 100)
        assert r.queued_at is not None and r.started_at is not None and r.finished_at is not None
        assert r.queued_at <= r.started_at <= r.finished_at
        stages = [s for _t, s in state.history(r.name)]
        assert stages == ["queued", "checking", "converting", "copying", "finalizing", "done"]
        log = state.log_tail(r.name)
        assert log[0].startswith(f"--- attempt 1 on {r.worker}: vmshift convert --machine-")
        assert (
            "stage copy 0.2 copying disks" in log and log[-1] == "--- the conversion ended: exit 0"
        )
        assert not any(line.startswith("copy ") for line in log)  # progress is not logged
    assert any(r.stage == COPYING for records in shown for r in records)
    assert all(r.stage == DONE for r in shown[-1])


def test_guests_read_here_count_only_against_the_total(tmp_path: Path, fake: Fake) -> None:
    """Files on this machine have no source host that throttles: per-source-host does not
    count them (a host named in the plan does, even beside them)."""
    hosts = {"l1": None, "l2": None, "l3": None, "r1": "esx-a", "r2": "esx-a"}
    plan = plan_of(
        tmp_path, "total = 3\nper-source-host = 1",
        [{"args": f"{n}.img", **({"source-host": h} if h else {})} for n, h in hosts.items()],
    )  # fmt: skip
    assert [g.remote_source for g in plan.guests] == [False, False, False, True, True]
    state = SqliteState(tmp_path / "state.sqlite")
    fake.environ["FAKE_HOLD"] = "1.5"
    assert run(plan, state, fake)[0] == 0
    events = fake.events()
    assert concurrency(events, lambda _n: "all") == 3
    assert concurrency(events, lambda n: hosts[n] or "local") == 3  # the three local at once
    assert concurrency(events, lambda n: hosts[n] or n) == 1  # esx-a: one at a time


def test_the_scheduler_honours_per_target_storage(tmp_path: Path, fake: Fake) -> None:
    storage = {"s1": "/x", "s2": "/x", "s3": "/x", "t1": "/y", "t2": "/y"}
    plan = plan_of(
        tmp_path, "total = 4\nper-source-host = 4\nper-target-storage = 1",
        [{"args": f"{n}.img", "output-storage": s} for n, s in storage.items()],
    )  # fmt: skip
    state = SqliteState(tmp_path / "state.sqlite")
    fake.environ["FAKE_HOLD"] = "1"
    assert run(plan, state, fake)[0] == 0
    events = fake.events()
    assert concurrency(events, lambda n: storage[n]) == 1
    assert concurrency(events, lambda _n: "all") == 2
    assert all("-os" in args for _w, _n, args in events)


def test_a_failure_stops_no_other_guest_and_a_rerun_retries_it_with_resume(
    tmp_path: Path, fake: Fake
) -> None:
    plan = plan_of(tmp_path, "total = 2", [{"args": f"{n}.img"} for n in ("ok1", "bad", "ok2")])
    state = SqliteState(tmp_path / "state.sqlite")
    fake.flag("fail", "bad")
    rc, _shown = run(plan, state, fake)
    assert rc == 1
    stages = {r.name: r.stage for r in state.guests()}
    assert stages == {"ok1": DONE, "bad": FAILED, "ok2": DONE}
    bad = state.guest("bad")
    assert bad.error == "bad: the disk is on fire"
    assert "vmshift: hint: put it out" in state.log_tail("bad")

    fake.flag("fail", "bad", on=False)
    (fake.dir / "events").unlink()
    rc, _shown = run(plan, state, fake)
    assert rc == 0
    assert [(w, n) for w, n, _ in fake.events()] == [("+", "bad"), ("-", "bad")]
    assert "--resume" in fake.events()[0][2]
    bad = state.guest("bad")
    assert (bad.stage, bad.attempts, bad.error) == (DONE, 2, None)
    assert [s for _t, s in state.history("bad")].count(DONE) == 1
    assert "warning bad-sda: resuming the copy after 8 MiB" in state.log_tail("bad")
    assert state.guest("ok1").attempts == 1


def test_cancel_stop_and_the_rerun_after_them(tmp_path: Path, fake: Fake) -> None:
    plan = plan_of(tmp_path, "total = 2", [{"args": f"{n}.img"} for n in ("g1", "g2", "g3", "g4")])
    state = SqliteState(tmp_path / "state.sqlite")
    for name in ("g1", "g2", "g3", "g4"):
        fake.flag("hold", name)
    stop = threading.Event()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(run(plan, state, fake, stop)[0]))
    runner.start()

    def started(name: str) -> Callable[[], bool]:
        return lambda: any(w == "+" and g == name for w, g, _ in fake.events())

    fake.wait_for(lambda: started("g1")() and started("g2")())
    state.cancel("g1")  # running: told to stop
    state.cancel("g4")  # queued: never started
    fake.wait_for(lambda: state.guest("g1").stage == CANCELLED)
    fake.wait_for(started("g3"))  # g1's place
    stop.set()
    runner.join(timeout=60)
    assert result == [STOPPED]
    stages = {r.name: r.stage for r in state.guests()}
    assert stages == {"g1": CANCELLED, "g2": INTERRUPTED, "g3": INTERRUPTED, "g4": CANCELLED}
    assert state.guest("g2").error is None
    assert not started("g4")()
    assert "--- stopping: SIGINT" in state.log_tail("g2")
    assert "--- cancelled: SIGINT" in state.log_tail("g1")

    # Run again: the cancelled stay so, the interrupted resume.
    for name in ("g1", "g2", "g3", "g4"):
        fake.flag("hold", name, on=False)
    (fake.dir / "events").unlink()
    assert run(plan, state, fake)[0] == 0
    assert sorted((n, "--resume" in a) for w, n, a in fake.events() if w == "+") == [
        ("g2", True), ("g3", True),
    ]  # fmt: skip
    assert {r.name: r.stage for r in state.guests()}["g1"] == CANCELLED

    # --retry-cancelled: g1 resumes its copy, g4 starts afresh.
    retry_cancelled(state)
    (fake.dir / "events").unlink()
    assert run(plan, state, fake)[0] == 0
    assert sorted((n, "--resume" in a) for w, n, a in fake.events() if w == "+") == [
        ("g1", True), ("g4", False),
    ]  # fmt: skip
    assert all(r.stage == DONE for r in state.guests())
    for name in ("g1", "g2", "g3", "g4"):
        assert [s for _t, s in state.history(name)].count(DONE) == 1


RUNNER = """
import os, sys, threading
from pathlib import Path
from vmshift.fleet.guest_run import run_guest
from vmshift.fleet.plan import load_plan
from vmshift.fleet.state_sqlite import SqliteState
plan = load_plan(Path(sys.argv[1]))
state = SqliteState(Path(sys.argv[2]))
state.register([g.name for g in plan.guests])
environ = {**os.environ, "FAKE_DIR": sys.argv[4]}
run_guest(plan, plan.guests[0], state, worker="w", python=sys.argv[3], environ=environ,
          stop=threading.Event())
"""


@pytest.fixture
def runner_process(tmp_path: Path, fake: Fake) -> Iterator[subprocess.Popen[str]]:
    plan = plan_of(tmp_path, "total = 1", [{"args": "lone.img"}])
    fake.flag("hold", "lone")
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(RUNNER), str(plan.path),
         str(tmp_path / "state.sqlite"), str(fake.python), str(fake.dir)],
        text=True,
    )  # fmt: skip
    yield proc
    proc.kill()
    proc.wait()
    fake.flag("hold", "lone", on=False)


def test_a_guest_made_before_its_conversion_died_is_done_once(tmp_path: Path, fake: Fake) -> None:
    """Killed after it said the guest is complete on the target (in its boot check or cleanup),
    a conversion has made the guest: it is done, and never converted again (a second run
    would find its outputs and refuse)."""
    plan = plan_of(tmp_path, "total = 1", [{"args": "made.img"}])
    state = SqliteState(tmp_path / "state.sqlite")
    fake.flag("die", "made")
    assert run(plan, state, fake)[0] == 0
    record = state.guest("made")
    assert record.stage == DONE and record.error is None and record.created_at is not None
    assert [w for w, _n, _a in fake.events()] == ["+", "KILLED"]
    assert "--- the guest was complete on the target before it stopped" in state.log_tail("made")
    # As its killed runner leaves it: in finalizing, its attempt never ended.
    state.update("made", stage=FINALIZING, finished_at=None)
    assert run(plan, state, fake)[0] == 0
    assert [w for w, _n, _a in fake.events()] == ["+", "KILLED"]  # not converted again
    record = state.guest("made")
    assert record.stage == DONE and record.attempts == 1
    assert [s for _t, s in state.history("made")].count(DONE) == 2  # once per run that saw it
    # An attempt that ended by itself after making the guest (a failed boot check) is not
    # taken for one that died: the rerun converts it again.
    fake.flag("die", "made", on=False)
    state.update("made", stage=FAILED, finished_at=time.time())
    assert run(plan, state, fake)[0] == 0
    assert [w for w, _n, _a in fake.events()] == ["+", "KILLED", "+", "-"]


def test_a_killed_runners_conversion_is_told_to_stop(
    runner_process: subprocess.Popen[str], fake: Fake
) -> None:
    fake.wait_for(lambda: any(w == "+" for w, _n, _a in fake.events()))
    runner_process.send_signal(signal.SIGKILL)
    runner_process.wait()
    fake.wait_for(lambda: any(w != "+" for w, _n, _a in fake.events()))
    assert [w for w, _n, _a in fake.events()] == ["+", "TERM"]


# `vmshift plan run` itself, its conversions the fake (the children are sys.executable).
PLAN_RUN = """
import os, sys
from vmshift.cli.main import main
sys.executable = sys.argv[1]
os.environ["FAKE_DIR"] = sys.argv[2]
sys.exit(main(["plan", "run", *sys.argv[3:]]))
"""


def test_ctrl_c_stops_plan_run_and_the_next_run_resumes(tmp_path: Path, fake: Fake) -> None:
    """SIGINT to `vmshift plan run`: the running conversions are told to stop (SIGINT), it
    waits for them, names what is not finished and exits 130; the next run resumes them."""
    plan = plan_of(tmp_path, "total = 2", [{"args": f"{n}.img"} for n in ("a", "b", "c")])
    state_file = tmp_path / "state.sqlite"
    for name in ("a", "b"):
        fake.flag("hold", name)
    proc = subprocess.Popen(
        [sys.executable, "-c", PLAN_RUN, str(fake.python), str(fake.dir), str(plan.path),
         "--state", str(state_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        fake.wait_for(lambda: sum(w == "+" for w, _n, _a in fake.events()) == 2)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert sorted((w, n) for w, n, _a in fake.events()) == [("+", "a"), ("+", "b"), ("-", "a"),
                                                             ("-", "b")]  # fmt: skip
    last = err.strip().splitlines()[-1]
    assert last == (
        "vmshift: interrupted by SIGINT; not finished: a, b, c; run the plan again to resume them"
    ), err
    assert "Traceback" not in err
    state = SqliteState(state_file)
    assert {r.name: r.stage for r in state.guests()} == {
        "a": INTERRUPTED, "b": INTERRUPTED, "c": "queued",
    }  # fmt: skip
    for name in ("a", "b"):
        fake.flag("hold", name, on=False)
    rerun = subprocess.run(
        [sys.executable, "-c", PLAN_RUN, str(fake.python), str(fake.dir), str(plan.path),
         "--state", str(state_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert all(r.stage == DONE for r in state.guests())
    started = [(n, "--resume" in a) for w, n, a in fake.events() if w == "+"]
    assert sorted(started[2:]) == [("a", True), ("b", True), ("c", False)]


# --- the CLI around the runner (no conversion) ---------------------------------------------


def test_a_second_runner_of_the_same_state_is_refused(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "total = 1", [{"args": "lone.img"}])
    state = tmp_path / "state.sqlite"
    lock = tmp_path / "state.sqlite.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        got = vmshift(["plan", "run", plan.path, "--state", state])
    assert got.returncode == 1
    assert got.stderr.splitlines()[0] == (
        f"vmshift: error: {state}: the plan is already running (vmshift plan run, pid 4242)"
    )
    assert SqliteState(state).guests() == []  # nothing was started


def test_status_and_cancel_of_a_plan_that_never_ran(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, "total = 1", [{"args": f"{n}.img"} for n in ("one", "two")])
    state = tmp_path / "state.sqlite"
    got = vmshift(["plan", "status", plan.path, "--state", state, "--json"], check=True)
    doc = json.loads(got.stdout)
    assert doc["plan"] == plan.id and doc["path"] == str(plan.path)
    assert [(g["name"], g["stage"], g["attempts"]) for g in doc["guests"]] == [
        ("one", "queued", 0), ("two", "queued", 0),
    ]  # fmt: skip
    got = vmshift(["plan", "cancel", plan.path, "two", "--state", state], check=True)
    assert got.stdout == "vmshift: cancel asked for two; not finished then: two\n"
    table = vmshift(["plan", "status", plan.path, "--state", state], check=True).stdout
    assert re.search(r"\bone\s+queued\b", table) and re.search(r"\btwo\s+cancelled\b", table)
    bad = vmshift(["plan", "cancel", plan.path, "three", "--state", state])
    assert (bad.returncode, bad.stderr.splitlines()[0]) == (
        1, f"vmshift: error: {plan.path}: no guest 'three' in the plan",
    )  # fmt: skip
    bad = vmshift(["plan", "status", tmp_path / "missing.toml"])
    assert bad.stderr.splitlines()[0] == (
        f"vmshift: error: {tmp_path / 'missing.toml'}: cannot read the plan: No such file or "
        "directory"
    )
