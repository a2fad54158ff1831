"""Fleet plans (issue 14): a plan of small guests run by `vmshift plan run --workers N` against
the same guests converted one after another with `vmshift convert`.

The guests: copies of the smallest phony Linux guest of tests/guests (debian: Debian 12 on a
512 MiB vmdk holding a few MiB, cached in ~/.cache/vmshift-tests) under the names g01, g02 ...,
each converted `-i disk DISK -o local -os DIR` (raw output). Every conversion runs the
libguestfs appliance (TCG here when KVM is not usable) and copies its disk.

Modes, one after another, each writing to a fresh output directory:

- serial: the plan's guests converted one at a time, each with the very command line the plan
  runner gives its conversion child (`python -m vmshift.cli.main convert --machine-readable
  <the guest's options>`, run in the plan's directory);
- N workers, for each N of --workers: `vmshift plan run PLAN --workers N --state FILE` of a plan
  whose limits are total = N and per-source-host = N (every guest is on localhost, whose
  default limit of 2 would cap 4 workers), with its state in a fresh SQLite file.

Per mode: the wall time, its ratio to the serial time, the CPU time of the processes it ran
(user + system of the waited-for descendants), and the most conversions seen at once. Per
guest, from the plan's state (fleet/state.py, written by fleet/guest_run.py):

- engine overhead: from the moment a worker slot takes the guest (its record's started_at,
  set when run_guest launches the conversion child) to the child's first output line (the
  first change of stage after it in the guest's history: `stage source ...`). It includes the
  child's Python start-up, which the serial run pays too: the serial row shows that alone
  (launch to first line, read by the bench itself);
- dispatch gap: from the moment a slot became free (the end of the conversion that held it,
  or the guest's queued_at for the first wave) to the slot taking the guest: how long the
  runner leaves a free slot idle.

Goals on a 2-core machine: 2 workers take at most 0.6x the serial time; the engine overhead is
under 1 s per guest.

    .venv/bin/python -m bench.plan_bench [--guests 8] [--workers 1,2,4] [--json FILE]
                                         [--out DIR]

It exits 0 unless a conversion fails or leaves no output. Each conversion of the phony guest
takes about 40 s here under TCG: the default run takes about 15 minutes.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.guests.linux import build_all

from bench.copy_bench import bench_workdir, machine_info
from vmshift.fleet.plan import Plan, load_plan
from vmshift.fleet.state import DONE, QUEUED, GuestRecord, PlanState
from vmshift.fleet.stores import open_state

GOAL_RATIO = 0.6  # 2 workers' wall time / the serial time, at most
GOAL_OVERHEAD = 1.0  # seconds from a slot taking a guest to its conversion's first line, under
GUEST = "debian"  # the phony guest copied: the smallest with an operating system to convert


@dataclass(frozen=True)
class Interval:
    """One conversion of a guest: when a slot took it, its first output line, its end."""

    name: str
    taken: float
    first_line: float | None
    finished: float
    queued: float | None = None


@dataclass
class ModeResult:
    mode: str  # "serial", "1 worker", "2 workers" ...
    workers: int  # 0: serial
    seconds: float
    cpu_seconds: float
    at_once: int  # the most conversions running at the same moment
    overheads: list[float]  # per guest: slot takes it -> first output line (serial: launch)
    dispatch: list[float]  # per guest: its slot free -> taken (plan runs only)
    failures: list[str] = field(default_factory=list)
    guests: list[dict[str, Any]] = field(default_factory=list)  # state records (serial: runs)

    @property
    def ok(self) -> bool:
        return not self.failures


# --- what the state's records say ---------------------------------------------------------


def max_concurrency(intervals: Sequence[Interval]) -> int:
    """The most intervals [taken, finished) overlapping at one moment."""
    events = sorted([(i.taken, 1) for i in intervals] + [(i.finished, -1) for i in intervals])
    most = running = 0
    for _, step in events:  # at equal times the end (-1) sorts first: a slot handed over
        running += step
        most = max(most, running)
    return most


def dispatch_gaps(intervals: Sequence[Interval], slots: int) -> dict[str, float]:
    """Per guest, how long a free slot waited before taking it: the runner's scheduling delay.

    The slots are replayed in the order the guests were taken: each guest goes to the slot
    freed first (a guest queued later than that waits for its queued time instead; a slot
    never used yet is free from the start)."""
    free: list[float] = [float("-inf")] * slots
    gaps: dict[str, float] = {}
    for i in sorted(intervals, key=lambda i: i.taken):
        since = heapq.heappop(free)
        if i.queued is not None:
            since = max(since, i.queued)
        gaps[i.name] = max(i.taken - since, 0.0) if since != float("-inf") else 0.0
        heapq.heappush(free, i.finished)
    return gaps


def first_line_after(history: Sequence[tuple[float, str]], taken: float) -> float | None:
    """The first change of stage at or after taken, other than back to queued: the moment the
    conversion child's first line (a stage line) reached the state."""
    for at, stage in history:
        if at >= taken and stage != QUEUED:
            return at
    return None


def intervals_of(records: Sequence[GuestRecord], state: PlanState) -> list[Interval]:
    out = []
    for r in records:
        if r.started_at is None or r.finished_at is None:
            continue
        first = first_line_after(state.history(r.name), r.started_at)
        out.append(Interval(r.name, r.started_at, first, r.finished_at, r.queued_at))
    return out


# --- the guests and the plans ---------------------------------------------------------------


def copy_guests(source: Path, where: Path, count: int) -> list[Path]:
    """count copies of source named g01, g02 ... (reflinked where the filesystem can)."""
    where.mkdir(parents=True, exist_ok=True)
    disks = []
    for n in range(1, count + 1):
        disk = where / f"g{n:02d}{source.suffix}"
        if not disk.exists():
            subprocess.run(["cp", "--reflink=auto", "--sparse=always", str(source), str(disk)],
                           check=True)  # fmt: skip
        disks.append(disk)
    return disks


def plan_toml(disks: Sequence[Path], output: Path, workers: int) -> str:
    """A plan converting each disk `-i disk DISK -o local -os OUTPUT`, workers at once."""
    lines = [
        "[defaults]",
        'input = "disk"',
        'output = "local"',
        f"output-storage = {json.dumps(str(output))}",
        "",
        "[limits]",
        f"total = {workers}",
        f"per-source-host = {workers}",
    ]
    for disk in disks:
        lines += ["", "[[guest]]", f"args = [{json.dumps(str(disk))}]"]
    return "\n".join(lines) + "\n"


def write_plan(directory: Path, disks: Sequence[Path], workers: int) -> Plan:
    directory.mkdir(parents=True)
    (directory / "out").mkdir()
    path = directory / "plan.toml"
    path.write_text(plan_toml(disks, directory / "out", workers))
    return load_plan(path)


def missing_outputs(plan: Plan) -> list[str]:
    """The guests with no domain XML in the plan's output directory (write_plan's out/)."""
    out = plan.directory / "out"
    return [g.name for g in plan.guests if not (out / f"{g.name}.xml").is_file()]


# --- the runs -----------------------------------------------------------------------------


def _environ() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def warm_up(disk: Path) -> None:
    """One untimed conversion (-o null) first: the libguestfs appliance cache and the page
    cache are then as warm for the first timed mode as for the others."""
    argv = [sys.executable, "-m", "vmshift.cli.main", "-q", "convert", "-i", "disk", str(disk),
            "-o", "null"]  # fmt: skip
    proc = subprocess.run(argv, env=_environ(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"the warm-up conversion failed:\n{proc.stderr[-2000:]}")


def run_serial(plan: Plan) -> ModeResult:
    """Each guest's conversion child, one after another, as the plan runner would start it."""
    overheads: list[float] = []
    intervals: list[Interval] = []
    failures: list[str] = []
    cpu = _cpu()
    started = time.monotonic()
    for spec in plan.active():
        argv = [sys.executable, "-m", "vmshift.cli.main", "convert", "--machine-readable",
                *spec.argv()]  # fmt: skip
        errors = plan.directory / f"{spec.name}.stderr"
        launched = time.time()
        first: float | None = None
        tail: list[str] = []
        with errors.open("w") as err:
            proc = subprocess.Popen(argv, cwd=plan.directory, env=_environ(),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=err, text=True)  # fmt: skip
            assert proc.stdout is not None
            for line in proc.stdout:
                if first is None:
                    first = time.time()
                tail = [*tail[-4:], line.rstrip("\n")]
            rc = proc.wait()
        intervals.append(Interval(spec.name, launched, first, time.time()))
        if first is not None:
            overheads.append(first - launched)
        if rc != 0:
            why = errors.read_text().strip().splitlines()[-1:] or tail[-1:] or [f"exit {rc}"]
            failures.append(f"{spec.name}: {why[0]}")
        print(f"serial: {spec.name} exit {rc}", file=sys.stderr)
    seconds = time.monotonic() - started
    failures += [f"{n}: no output" for n in missing_outputs(plan) if not _named(failures, n)]
    return ModeResult("serial", 0, seconds, _cpu() - cpu, max_concurrency(intervals),
                      overheads, [], failures, [asdict(i) for i in intervals])  # fmt: skip


def _named(failures: Sequence[str], name: str) -> bool:
    return any(f.startswith(f"{name}: ") for f in failures)


def run_plan(plan: Plan, workers: int, state_file: Path) -> ModeResult:
    """`vmshift plan run PLAN --workers N --state FILE`, then the plan's state read back."""
    exe = Path(sys.executable).parent / "vmshift"
    argv = [str(exe), "plan", "run", str(plan.path), "--workers", str(workers),
            "--state", str(state_file)]  # fmt: skip
    log = plan.directory / "plan-run.log"
    cpu = _cpu()
    started = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(argv, env=_environ(), stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, check=False).returncode  # fmt: skip
    seconds = time.monotonic() - started
    cpu = _cpu() - cpu
    mode = f"{workers} worker{'s' if workers > 1 else ''}"
    failures = [] if rc == 0 else [f"plan run: exit {rc} (see {log})"]
    state = open_state(plan, state_file=state_file, broker=None, data_home=plan.directory)
    try:
        records = state.guests()
        intervals = intervals_of(records, state)
    finally:
        state.close()
    for r in records:
        if r.stage != DONE:
            failures.append(f"{r.name}: {r.stage}" + (f": {r.error}" if r.error else ""))
        elif r.attempts != 1:
            failures.append(f"{r.name}: converted in {r.attempts} attempts, not 1")
    failures += [f"{n}: no output" for n in missing_outputs(plan) if not _named(failures, n)]
    gaps = dispatch_gaps(intervals, workers)
    return ModeResult(
        mode, workers, seconds, cpu, max_concurrency(intervals),
        [i.first_line - i.taken for i in intervals if i.first_line is not None],
        [gaps[i.name] for i in intervals], failures, [r.to_json() for r in records],
    )  # fmt: skip


# --- the report -----------------------------------------------------------------------------


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def render(results: Sequence[ModeResult]) -> str:
    serial = next((r for r in results if r.workers == 0), None)
    lines = [
        f"{'mode':10} {'ok':3} {'wall s':>8} {'ratio':>6} {'CPU s':>8} {'at once':>7} "
        f"{'overhead s med / max':>21} {'dispatch s med / max':>21}"
    ]
    for r in results:
        ratio = f"{r.seconds / serial.seconds:.2f}" if serial and serial.ok else "-"
        lines.append(
            f"{r.mode:10} {'yes' if r.ok else 'NO':3} {r.seconds:8.1f} {ratio:>6} "
            f"{r.cpu_seconds:8.1f} {r.at_once:7d} {_spread(r.overheads):>21} "
            f"{_spread(r.dispatch):>21}"
        )
    lines.append(
        "overhead: a slot taking the guest -> its conversion's first line (serial: launch -> "
        "first line, the child's start-up alone); dispatch: a slot free -> it takes a guest"
    )
    lines += goal_lines(results)
    for r in results:
        lines += [f"{r.mode}: FAILED {f}" for f in r.failures]
    return "\n".join(lines)


def goal_lines(results: Sequence[ModeResult]) -> list[str]:
    serial = next((r for r in results if r.workers == 0 and r.ok), None)
    two = next((r for r in results if r.workers == 2 and r.ok), None)
    lines = []
    if serial and two:
        ratio = two.seconds / serial.seconds
        lines.append(f"2 workers: {ratio:.2f}x the serial time (goal <= {GOAL_RATIO}: "
                     f"{'met' if ratio <= GOAL_RATIO else 'NOT met'})")  # fmt: skip
    worst = max((o for r in results if r.workers and r.ok for o in r.overheads), default=None)
    if worst is not None:
        startup = ""
        if serial and serial.overheads:
            startup = (f"; the conversion child's own start-up, serially: median "
                       f"{statistics.median(serial.overheads):.2f} s")  # fmt: skip
        lines.append(f"engine overhead: at most {worst:.2f} s per guest (goal < {GOAL_OVERHEAD} "
                     f"s: {'met' if worst < GOAL_OVERHEAD else 'NOT met'}){startup}")  # fmt: skip
    return lines


def parse_workers(text: str) -> list[int]:
    try:
        counts = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a list of numbers like 1,2,4") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: worker counts of at least 1, like 1,2,4")
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.plan_bench",
        description="A plan of small guests with 1, 2 and 4 workers against serial conversions.",
    )
    p.add_argument("--guests", type=int, default=8, help="guests in the plan (default 8)")
    p.add_argument("--workers", type=parse_workers, default=[1, 2, 4],
                   help="worker counts to time, comma-separated (default 1,2,4)")  # fmt: skip
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the report there")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where the guests' copies, plans, states and outputs go, in a new directory per "
        "run (default: a temporary directory under /var/tmp, removed at the end)",
    )
    args = p.parse_args(argv)
    if args.guests < 1:
        p.error("--guests must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base, keep = bench_workdir(args.out)
    work = Path(tempfile.mkdtemp(prefix="plan-bench-", dir=base)) if keep else base
    try:
        disks = copy_guests(build_all()[GUEST].disks[0], work / "guests", args.guests)
        print("warm-up conversion (untimed)", file=sys.stderr)
        warm_up(disks[0])
        load = os.getloadavg()
        results = [run_serial(write_plan(work / "serial", disks, 1))]
        for n in args.workers:
            plan = write_plan(work / f"workers-{n}", disks, n)
            results.append(run_plan(plan, n, plan.directory / "state.sqlite"))
            print(f"{results[-1].mode}: {results[-1].seconds:.1f} s", file=sys.stderr)
        report = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine_info(work),
            "load before / after": [list(load), list(os.getloadavg())],
            "guests": args.guests,
            "guest": f"tests/guests phony {GUEST!r}, copied to g01.. (-i disk -o local)",
            "results": [{**asdict(r), "ok": r.ok} for r in results],
            "goals": goal_lines(results),
        }
        print("machine: " + "; ".join(f"{k}: {v}" for k, v in report["machine"].items()))
        print(f"{args.guests} guests; load before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
        print(render(results))
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        if keep:
            print(f"kept in {work}")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
