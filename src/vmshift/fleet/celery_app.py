"""The Celery application of a distributed plan run, and its one task: convert one guest.

Settings, for conversions that take an hour:
- task_acks_late: a task's message is acknowledged when the conversion has ended, not when it
  starts, so a worker that dies (SIGKILL, a host down) leaves it unacknowledged; Redis gives it
  back to the queue after the visibility timeout and another worker takes the guest.
- task_reject_on_worker_lost: a pool process killed under its task sends the message back too.
- worker_prefetch_multiplier = 1: a worker process reserves one guest at a time, so guests are
  not held in a busy worker's buffer while another worker is idle.
- visibility_timeout (default 12 h): how long a delivered, unacknowledged message waits before
  Redis gives it to another worker. Longer than any conversion: a message still being worked on
  is handed out again when it runs out (the ownership lease then keeps the second delivery from
  converting the guest, but it is wasted work). kombu looks for such messages every
  unacked_restore_interval x unacked_restore_throttle seconds (10 x 10), settable here so that a
  test sees a dead worker's guest come back within seconds.
- No result backend: the guest's record in the plan's RedisState (fleet/state_redis.py) is the
  result, with its stage, progress, error and log, readable from any host after the submitter
  has gone; Celery's results would be a second, expiring copy of it that nothing reads.

The task, convert_guest(plan_path, plan_text, guest_name) (see deliver()): the plan travels in
the message, so a worker needs only the disks and the target at the same paths. It takes the
guest's ownership lease and the limit leases (fleet/leases.py); when another live worker owns
the guest or a limit is full it retries later (a new message with a countdown), which frees the
worker process for another guest. A cancel is the state's flag, checked by run_guest();
Celery's revoke(terminate=True) would kill the conversion without its cleanup.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery, Task  # type: ignore[import-untyped]

from vmshift.errors import VmshiftError
from vmshift.fleet.defaults import DEFAULT_TTL, QUEUE, VISIBILITY_TIMEOUT
from vmshift.fleet.leases import Heartbeat, Leases, Limit
from vmshift.fleet.plan import GuestSpec, Plan, load_plan, plan_id
from vmshift.fleet.runner import worker_name
from vmshift.fleet.state import CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED, RUNNING
from vmshift.fleet.state_redis import RedisState

TASK = "vmshift.convert_guest"
WAIT_COUNTDOWN = 5.0  # seconds before a guest waiting for a limit asks again


@dataclass(frozen=True)
class WorkerSettings:
    """What the workers (and the submitter, which needs only broker) are built with."""

    broker: str
    python: str = sys.executable  # runs the conversions: `python -m vmshift.cli.main convert`
    environ: Mapping[str, str] = field(default_factory=dict)  # the conversions' environment
    lease_ttl: float = DEFAULT_TTL
    wait_countdown: float = WAIT_COUNTDOWN
    visibility_timeout: float = VISIBILITY_TIMEOUT
    restore_interval: float | None = None  # kombu's unacked restore sweep (None: its own)


@dataclass(frozen=True)
class Delivery:
    """What one delivery of the task did: ran the conversion to stage, or nothing (stage None
    and retry_in: ask again that many seconds later; neither: nothing left to do)."""

    stage: str | None = None
    retry_in: float | None = None
    why: str = ""


def limits_of(plan: Plan, spec: GuestSpec) -> list[Limit]:
    """The limits a guest's conversion counts against."""
    limits = [
        Limit("limit:total", plan.limits.total, f"the plan's total limit ({plan.limits.total})")
    ]
    if spec.remote_source:
        limits.append(
            Limit(
                f"limit:source-host:{spec.source_host}",
                plan.limits.per_source_host,
                f"the per-source-host limit ({spec.source_host}: "
                f"{plan.limits.per_source_host} at once)",
            )
        )
    if plan.limits.per_target_storage is not None:
        n = plan.limits.per_target_storage
        limits.append(
            Limit(
                f"limit:target-storage:{spec.target_storage}",
                n,
                f"the per-target-storage limit ({spec.target_storage}: {n} at once)",
            )
        )
    return limits


def deliver(
    settings: WorkerSettings,
    plan_path: str,
    plan_text: str,
    guest_name: str,
    *,
    task_id: str | None = None,
    stop: threading.Event | None = None,
) -> Delivery:
    """One delivery of a guest's task, in a worker process (task_id: the Celery task's, the
    same in every delivery and retry of one submission)."""
    plan = load_plan(Path(plan_path), text=plan_text)
    spec = plan.guest(guest_name)
    state = RedisState(settings.broker, plan.id)
    try:
        return _deliver(
            settings, plan, spec, state, stop=stop or threading.Event(), task_id=task_id
        )
    finally:
        state.close()


def _deliver(
    settings: WorkerSettings,
    plan: Plan,
    spec: GuestSpec,
    state: RedisState,
    *,
    stop: threading.Event,
    task_id: str | None,
) -> Delivery:
    name = spec.name
    if state.guest(name).stage in FINISHED:
        return Delivery(why="nothing left to do")
    worker = worker_name()
    token = f"{worker}:{uuid.uuid4().hex[:8]}"
    leases = Leases(state.client, state.prefix, settings.lease_ttl)
    holder = leases.acquire_owner(name, token)
    if holder is not None:
        # A live worker converts it. Ask again once its lease would have run out, so that
        # if that worker dies the guest is still taken over.
        return Delivery(retry_in=settings.lease_ttl + 1, why=f"converted by {holder}")
    limits: list[Limit] = []
    try:
        record = state.guest(name)
        if _finished(state, name):
            return Delivery(why="nothing left to do")
        ended = state.client.get(state.prefix + "ended:" + name)
        if record.stage == FAILED and task_id is not None and ended == task_id.encode():
            # A second delivery of the task whose conversion failed (its message came back
            # after the visibility timeout): a failure is retried by running the plan again.
            return Delivery(why="its conversion failed already")
        if record.stage in RUNNING:  # its worker died under it: this one takes over
            state.update(name, stage=INTERRUPTED, rate=0.0,
                         message=f"{record.worker} stopped; taken over by {worker}")  # fmt: skip
            state.log(name, f"--- {record.worker} stopped under it; taken over by {worker}")
        if not plan.directory.is_dir():
            error = f"{plan.directory}: the plan's directory is not on {socket.gethostname()}"
            state.update(name, stage=FAILED, error=error, worker=worker)
            return Delivery(stage=FAILED, why=error)
        wanted = limits_of(plan, spec)
        full = leases.acquire(wanted, token)
        if full is not None:
            state.update(name, stage=QUEUED, message=f"waiting for {full.what}")
            return Delivery(retry_in=settings.wait_countdown, why=f"waiting for {full.what}")
        limits = wanted
        with Heartbeat(leases, name, token, limits, stop):
            stage = _run_guest(
                plan, spec=spec, state=state, worker=worker, settings=settings, stop=stop
            )
        if task_id is not None:
            state.client.set(state.prefix + "ended:" + name, task_id)
        return Delivery(stage=stage)
    finally:
        leases.release(limits, token)
        leases.release_owner(name, token)


def _finished(state: RedisState, name: str) -> bool:
    """Done or cancelled already (a cancel asked for is recorded here)."""
    record = state.guest(name)
    if record.stage in FINISHED:
        return True
    if state.cancel_requested(name):
        state.update(name, stage=CANCELLED, rate=0.0, message="cancelled before it started")
        return True
    return False


def _run_guest(
    plan: Plan,
    *,
    spec: GuestSpec,
    state: RedisState,
    worker: str,
    settings: WorkerSettings,
    stop: threading.Event,
) -> str:
    from vmshift.fleet.guest_run import run_guest

    try:
        return run_guest(
            plan, spec, state, worker=worker, python=settings.python,
            environ=settings.environ, stop=stop,
        )  # fmt: skip
    except VmshiftError as exc:
        state.update(spec.name, stage=FAILED, error=exc.message, rate=0.0)
        return FAILED


def _failed(settings: WorkerSettings, plan_path: str, guest_name: str, exc: Exception) -> None:
    """The task failed outside the conversion (a plan this worker cannot read, Redis gone):
    say so in the guest's record, if Redis can still be reached, rather than leave it running."""
    message = exc.message if isinstance(exc, VmshiftError) else f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):
        state = RedisState(settings.broker, plan_id(Path(plan_path)))
        try:
            state.update(guest_name, stage=FAILED, rate=0.0,
                         error=f"the worker {worker_name()}: {message}")  # fmt: skip
        finally:
            state.close()


def make_app(settings: WorkerSettings) -> Celery:
    """The Celery app on settings.broker, with the convert_guest task registered."""
    app = Celery("vmshift", broker=settings.broker, set_as_current=False)
    transport: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if settings.restore_interval is not None:
        transport["unacked_restore_interval"] = settings.restore_interval
        transport["unacked_restore_throttle"] = 1
    app.conf.update(
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK, bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True
    )
    def convert_guest(self: Task, plan_path: str, plan_text: str, guest_name: str) -> str | None:
        try:
            done = deliver(settings, plan_path, plan_text, guest_name, task_id=self.request.id)
        except Exception as exc:
            _failed(settings, plan_path, guest_name, exc)
            raise
        if done.retry_in is not None:
            raise self.retry(countdown=done.retry_in)
        return done.stage

    return app
