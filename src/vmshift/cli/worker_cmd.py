"""`vmshift worker --broker redis://HOST:6379/0`: a Celery worker of distributed plan runs.

Run one on each conversion host. It takes the guests that `vmshift plan run PLAN --broker URL`
sends, one conversion at a time per worker process (--concurrency processes), within the
plan's limits counted across every worker (fleet/leases.py). Stop it with SIGTERM (Celery's
warm shutdown: it ends when its conversions have); a worker killed outright leaves its guests
to the others once the visibility timeout has passed, and they resume the copies.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from vmshift.errors import UsageError
from vmshift.fleet.defaults import DEFAULT_TTL, QUEUE, VISIBILITY_TIMEOUT

HELP = "take the guests of distributed plan runs (Celery worker on a Redis broker)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", metavar="URL", required=True, help="the Redis: redis://HOST:PORT/DB")
    p.add_argument(
        "--concurrency", metavar="N", type=int, default=1,
        help="conversions at once on this worker (processes; default 1)",
    )  # fmt: skip
    p.add_argument(
        "--visibility-timeout", metavar="SECONDS", type=float, default=VISIBILITY_TIMEOUT,
        help="how long a killed worker's guest waits before another worker takes it; longer "
        "than any conversion (default 12 hours)",
    )  # fmt: skip
    p.add_argument(
        "--restore-interval", metavar="SECONDS", type=float,
        help="how often to look for the guests of killed workers (default: kombu's 100 s)",
    )  # fmt: skip
    p.add_argument(
        "--lease-ttl", metavar="SECONDS", type=float, default=DEFAULT_TTL,
        help=f"how long a conversion's leases outlive a killed worker (default {DEFAULT_TTL:g})",
    )  # fmt: skip
    p.add_argument("--hostname", metavar="NAME", help="the worker's Celery name (default: "
                   "vmshift-PID@HOST)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    # Celery and redis only here: every `vmshift` command parses this module's options.
    from vmshift.fleet.celery_app import WorkerSettings, make_app
    from vmshift.fleet.state_redis import connect, redacted

    if args.concurrency < 1:
        raise UsageError(f"--concurrency {args.concurrency}: give at least 1")
    for option, value in (("--visibility-timeout", args.visibility_timeout),
                          ("--restore-interval", args.restore_interval),
                          ("--lease-ttl", args.lease_ttl)):  # fmt: skip
        if value is not None and value <= 0:
            raise UsageError(f"{option} {value:g}: give a number of seconds above 0")
    connect(args.broker).close()  # one clear line now rather than Celery's endless retries
    settings = WorkerSettings(
        broker=args.broker, python=sys.executable, environ=dict(os.environ),
        lease_ttl=args.lease_ttl, visibility_timeout=args.visibility_timeout,
        restore_interval=args.restore_interval,
    )  # fmt: skip
    app = make_app(settings)
    # Celery handles the worker's signals itself; the usual guard's watcher (cli/signals.py)
    # would SIGTERM the pool processes under their conversions.
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    loglevel = "INFO" if getattr(args, "verbose", 0) else "WARNING"
    print(f"vmshift: worker on {redacted(args.broker)}, queue {QUEUE}, "
          f"{args.concurrency} at once", file=sys.stderr, flush=True)  # fmt: skip
    app.worker_main([
        "worker", f"--loglevel={loglevel}", f"--concurrency={args.concurrency}",
        "--queues", QUEUE, "--hostname", args.hostname or f"vmshift-{os.getpid()}@%h",
        "--without-gossip", "--without-mingle", "--pool", "prefork",
    ])  # fmt: skip
    return 0
