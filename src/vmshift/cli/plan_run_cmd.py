"""`vmshift plan run PLAN`: convert the plan's guests, here (a pool of conversions, the state in
SQLite) or, with --broker, on the Celery workers of the conversion hosts.

Ctrl-C, SIGTERM or SIGHUP stop the run cleanly: no guest is started any more, each running
conversion is sent SIGINT (it keeps its copy under way for a resume), and the runner waits for
them all before it ends; running the plan again resumes them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import IO

from rich.console import Console
from rich.live import Live

from vmshift.cli.mode_options import read_password_file
from vmshift.cli.plan_options import add_plan_arguments, open_plan
from vmshift.cli.plan_view import PlainLines, plan_renderable, summary
from vmshift.cli.signals import GUARD, HANDLED
from vmshift.errors import ConfigError, UsageError
from vmshift.fleet.plan import Plan
from vmshift.fleet.runner import STOPPED, run_plan
from vmshift.fleet.state import CANCELLED, INTERRUPTED, QUEUED, GuestRecord, PlanState
from vmshift.fleet.state_sqlite import SqliteState

HELP = "run a plan's guests: here in a pool of conversions, or on Celery workers (--broker)"

Show = Callable[[list[GuestRecord]], None]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_plan_arguments(p)
    p.add_argument(
        "--workers",
        metavar="N",
        type=int,
        help="conversions at once here (default: the plan's limits.total)",
    )
    p.add_argument(
        "--retry-cancelled",
        action="store_true",
        help="run the guests cancelled before again (otherwise they stay cancelled)",
    )


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: give at least 1")
    if args.workers is not None and args.broker is not None:
        raise UsageError("--workers is for a run here; with --broker, the workers' own "
                         "--concurrency says how many conversions each host runs")  # fmt: skip
    plan, state = open_plan(args)
    try:
        if plan.sources:
            from vmshift.fleet.vsphere_select import expand_sources

            plan = expand_sources(plan, read_password_file)
        if args.retry_cancelled:
            retry_cancelled(state)
        console = Console(highlight=False)
        title = f"plan {plan.path}"
        if args.broker is not None:
            return _distributed(plan, args.broker, state, console, title)
        with _running_here(state):
            return _embedded(plan, state, args.workers or plan.limits.total, console, title)
    finally:
        state.close()


def retry_cancelled(state: PlanState) -> None:
    """Withdraw the cancel requests and queue the cancelled guests again."""
    state.clear_cancels()
    for record in state.guests():
        if record.stage == CANCELLED:
            state.update(record.name, stage=QUEUED, error=None)


@contextlib.contextmanager
def _running_here(state: PlanState) -> Iterator[None]:
    """One embedded runner per plan state at a time: two would convert the same guests."""
    if not isinstance(state, SqliteState):
        yield
        return
    path = state.path.with_name(state.path.name + ".lock")
    try:
        lock = path.open("a+")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the plan's lock: {exc.strerror}") from exc
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            who = lock.read().strip() or "another process"
            raise ConfigError(
                f"{state.path}: the plan is already running (vmshift plan run, pid {who})",
                hint="see it with `vmshift plan status`, or stop that run first",
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


@contextlib.contextmanager
def _view(console: Console, title: str) -> Iterator[Show]:
    """A live table on a terminal, else plain lines of the changes."""
    if not console.is_terminal:
        plain = PlainLines(console)
        yield plain.show
        return
    with Live(console=console, refresh_per_second=2, transient=False) as live:

        def show(records: list[GuestRecord]) -> None:
            live.update(plan_renderable(title, records, detail=False))

        yield show


class _Stopper:
    """The signals of a plan run: the first sets stop (the conversions are told to keep their
    copies and end); the next ones only say that the run is still stopping. The usual guard's
    watcher (cli/signals.py) is switched off for the run: it would SIGTERM every child at once."""

    def __init__(self, stop: threading.Event, err: IO[str]) -> None:
        self.stop = stop
        self.err = err

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if GUARD.signum is None:
            GUARD.signum = signum
            self.stop.set()
            print(
                f"vmshift: {GUARD.message()}: stopping the running conversions (a copy under way "
                "is kept for a resume)",
                file=self.err,
                flush=True,
            )
            return
        print("vmshift: still stopping: waiting for the conversions to end", file=self.err)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        wakeup = signal.set_wakeup_fd(-1)
        previous = {s: signal.signal(s, self.handle) for s in HANDLED}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if wakeup != -1:
                signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)


def _embedded(plan: Plan, state: PlanState, workers: int, console: Console, title: str) -> int:
    stop = threading.Event()
    with _Stopper(stop, sys.stderr).installed(), _view(console, title) as show:
        rc = run_plan(
            plan, state, workers=workers, python=sys.executable, environ=dict(os.environ),
            stop=stop, show=show,
        )  # fmt: skip
    records = [r for r in state.guests() if r.name in {g.name for g in plan.active()}]
    if rc == STOPPED:
        signum = GUARD.signum or signal.SIGINT
        stopped = [r.name for r in records if r.stage in (INTERRUPTED, QUEUED)]
        print(
            f"vmshift: {GUARD.message()}; not finished: {_names(stopped)}; "
            "run the plan again to resume them",
            file=sys.stderr,
        )
        return 128 + signum
    _report(console, records)
    return rc


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def _report(console: Console, records: Sequence[GuestRecord]) -> None:
    """The last lines: the count by stage and every failed guest with its reason."""
    console.print(f"plan: {summary(records)}", markup=False, soft_wrap=True)
    for r in records:
        if r.error:
            print(f"vmshift: {r.name}: {r.error}", file=sys.stderr)


def _distributed(plan: Plan, broker: str, state: PlanState, console: Console, title: str) -> int:
    from vmshift.fleet.distributed import run_distributed

    try:
        with _view(console, title) as show:
            rc: int = run_distributed(plan, broker, state, show=show)
    except KeyboardInterrupt:
        print(
            "vmshift: stopped watching; the workers go on with the plan "
            f"(vmshift plan status {plan.path} --broker URL; vmshift plan cancel to stop it)",
            file=sys.stderr,
        )
        return 128 + (GUARD.signum or signal.SIGINT)
    _report(console, [r for r in state.guests() if r.name in {g.name for g in plan.active()}])
    return rc
