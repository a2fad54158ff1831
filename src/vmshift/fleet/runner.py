"""The embedded runner: a plan's guests converted here, several at a time, within its limits.

Each guest is one `vmshift convert` child (fleet/guest_run.py) driven by a thread of a pool;
the scheduler starts the next guest only when the plan's limits allow it (conversions at
once in total, per source host, per target storage), in the plan's order, passing over a
guest whose source host or target storage is busy for one that can start. A guest that fails
does not stop the others. Finished guests (done, cancelled) are left alone, so running a plan
again takes up only what is left; a guest whose conversion had started gets --resume.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from vmshift.fleet.guest_run import run_guest
from vmshift.fleet.plan import GuestSpec, Limits, Plan
from vmshift.fleet.state import (
    CANCELLED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    QUEUED,
    GuestRecord,
    PlanState,
)

TICK = 0.5  # seconds between looks at the running guests (and redraws)
CANCEL_LOOK = 2.0  # seconds between looks at the waiting guests' cancel flags
STOPPED = 130  # run_plan's code when stop ended the run early (the CLI adds its signal)


def worker_name() -> str:
    """HOST:PID: who runs a guest's conversion (GuestRecord.worker)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def may_start(spec: GuestSpec, running: list[GuestSpec], limits: Limits, slots: int) -> bool:
    """Whether spec may start while the running guests run (slots: conversions at once)."""
    if len(running) >= min(slots, limits.total):
        return False
    if spec.remote_source and (
        sum(g.source_host == spec.source_host for g in running) >= limits.per_source_host
    ):
        return False
    per_storage = limits.per_target_storage
    return per_storage is None or (
        sum(g.target_storage == spec.target_storage for g in running) < per_storage
    )


def unfinished(
    active: Sequence[GuestSpec],
    state: PlanState,
    *,
    taken: Callable[[str], bool] = lambda _name: False,
    message: str | None = None,
) -> list[GuestSpec]:
    """Register the guests and queue again the ones to run now (their error cleared): not
    those finished (done, cancelled), nor those taken (someone runs it now); a guest whose
    cancel was asked is marked cancelled instead."""
    state.register([g.name for g in active])
    records = {r.name: r for r in state.guests()}
    now = time.time()
    queued: list[GuestSpec] = []
    for spec in active:
        if records[spec.name].stage in FINISHED or taken(spec.name):
            continue
        if state.cancel_requested(spec.name):
            state.update(spec.name, stage=CANCELLED, finished_at=now, rate=0.0)
            continue
        fields: dict[str, object] = {"stage": QUEUED, "queued_at": now, "error": None, "rate": 0.0}
        if message is not None:
            fields["message"] = message
        state.update(spec.name, **fields)
        queued.append(spec)
    return queued


def run_plan(
    plan: Plan,
    state: PlanState,
    *,
    workers: int,
    python: str,
    environ: Mapping[str, str],
    stop: threading.Event,
    show: Callable[[list[GuestRecord]], None],
) -> int:
    """Run the plan's guests that are not finished; 0 when every one is done (or cancelled),
    1 when one failed, STOPPED when stop was set before the end."""
    active = plan.active()
    names = {g.name for g in active}
    pending = unfinished(active, state)

    def shown() -> list[GuestRecord]:
        return [r for r in state.guests() if r.name in names]

    worker = worker_name()
    running: dict[Future[str], GuestSpec] = {}
    results: Counter[str] = Counter()
    next_look = 0.0
    with ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="guest") as pool:
        while pending or running:
            current = shown()
            show(current)
            cancelled = {r.name for r in current if r.stage == CANCELLED}
            if time.monotonic() >= next_look:  # a cancel asked for a guest still waiting
                next_look = time.monotonic() + CANCEL_LOOK
                for spec in pending:
                    if spec.name not in cancelled and state.cancel_requested(spec.name):
                        state.update(spec.name, stage=CANCELLED, finished_at=time.time())
                        cancelled.add(spec.name)
            pending = [g for g in pending if g.name not in cancelled]
            if not stop.is_set():
                for spec in list(pending):
                    if may_start(spec, list(running.values()), plan.limits, workers):
                        pending.remove(spec)
                        future = pool.submit(
                            run_guest, plan, spec, state, worker=worker, python=python,
                            environ=environ, stop=stop,
                        )  # fmt: skip
                        running[future] = spec
            elif not running:
                break
            if not running:
                continue
            finished, _ = wait(running, timeout=TICK, return_when=FIRST_COMPLETED)
            for future in finished:
                spec = running.pop(future)
                results[_result(state, spec, future)] += 1
    show(shown())
    if stop.is_set() and (pending or results[INTERRUPTED]):
        return STOPPED
    return 1 if results[FAILED] else 0


def _result(state: PlanState, spec: GuestSpec, future: Future[str]) -> str:
    """The guest's final stage; an error of the runner itself (its state unreachable ...)
    fails that guest alone."""
    try:
        return future.result()
    except Exception as exc:  # one guest's trouble must not end the plan
        with contextlib.suppress(Exception):  # the state itself may be what failed
            state.update(spec.name, stage=FAILED, error=f"the runner: {exc}", rate=0.0)
        return FAILED
