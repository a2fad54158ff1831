"""A distributed plan run: the guests handed to the Celery workers of the conversion hosts.

run_distributed() registers the plan's guests in its RedisState, sends one convert_guest task
per guest that is not finished (fleet/celery_app.py), then watches the state until every
guest has ended. The workers do the rest: it holds no lease and converts nothing, so stopping
it (Ctrl-C: a KeyboardInterrupt the CLI reports) stops the watching only.

While it watches, it also looks after guests whose worker died: a guest in a running stage
whose ownership lease has run out (the worker renews it every few seconds while it lives) is
sent again at once, so another worker resumes it without waiting for the broker's visibility
timeout (hours, since it must be longer than any conversion). The dead worker's own message
comes back after that timeout and finds the guest done or owned: a guest is never converted
twice (celery_app.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from vmshift.errors import ConfigError
from vmshift.fleet.celery_app import TASK, WorkerSettings, make_app
from vmshift.fleet.leases import Leases
from vmshift.fleet.plan import Plan
from vmshift.fleet.runner import unfinished
from vmshift.fleet.state import (
    CANCELLED,
    DONE,
    FAILED,
    RUNNING,
    GuestRecord,
    PlanState,
)
from vmshift.fleet.state_redis import RedisState

POLL = 1.0  # seconds between looks at the state
# Seconds a guest in a running stage must be seen without an owner before it is sent again
# (its worker writes the final stage before it releases the lease; a worker taking a guest
# over holds the lease before it changes the stage).
ORPHAN_GRACE = 10.0
ENDED = frozenset({DONE, FAILED, CANCELLED})


def submit(plan: Plan, broker: str, state: RedisState) -> list[str]:
    """Register the plan's guests and send a task for each one not finished and not being
    converted by a live worker now; the names sent."""
    leases = Leases(state.client, state.prefix)
    app = make_app(WorkerSettings(broker=broker))
    plan_path = str(plan.path.resolve())
    try:
        # Not a guest a live worker converts now (a plan run again while it runs).
        queued = unfinished(plan.active(), state, message="sent to the workers",
                            taken=lambda name: leases.owner(name) is not None)  # fmt: skip
        for spec in queued:
            app.send_task(TASK, args=[plan_path, plan.text, spec.name])
    finally:
        app.close()
    return [spec.name for spec in queued]


def send_again(plan: Plan, broker: str, state: RedisState, name: str) -> None:
    """A new task for a guest whose worker died under it (the guest's record keeps its stage:
    the worker that takes it marks it interrupted and resumes it)."""
    state.log(name, "--- its worker stopped renewing its lease; sent to the workers again")
    app = make_app(WorkerSettings(broker=broker))
    try:
        app.send_task(TASK, args=[str(plan.path.resolve()), plan.text, name])
    finally:
        app.close()


def orphans(
    records: list[GuestRecord], leases: Leases, seen: dict[str, float], now: float, grace: float
) -> list[str]:
    """The guests in a running stage seen without an owner for grace seconds (seen: since
    when each was first seen so, updated here)."""
    found = []
    for r in records:
        if r.stage not in RUNNING or leases.owner(r.name) is not None:
            seen.pop(r.name, None)
            continue
        since = seen.setdefault(r.name, now)
        if now - since >= grace:
            found.append(r.name)
            del seen[r.name]
    return found


def run_distributed(
    plan: Plan,
    broker: str,
    state: PlanState,
    *,
    show: Callable[[list[GuestRecord]], None],
    poll: float = POLL,
    grace: float = ORPHAN_GRACE,
) -> int:
    """Hand the plan's guests to the workers and watch them until each one has ended: 0 when
    every one is done (or cancelled), 1 when one failed. A guest whose worker died is sent
    again (orphans())."""
    if not isinstance(state, RedisState):
        raise ConfigError(f"{plan.path}: a distributed run keeps its state in the broker")
    submit(plan, broker, state)
    names = {g.name for g in plan.active()}
    leases = Leases(state.client, state.prefix)
    seen: dict[str, float] = {}
    while True:
        records = [r for r in state.guests() if r.name in names]
        show(records)
        if all(r.stage in ENDED for r in records):
            break
        for name in orphans(records, leases, seen, time.monotonic(), grace):
            send_again(plan, broker, state, name)
        time.sleep(poll)
    return 1 if any(r.stage == FAILED for r in records) else 0
