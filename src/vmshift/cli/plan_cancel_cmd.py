"""`vmshift plan cancel PLAN [GUEST]`: cancel one guest, or every guest not finished.

A guest being converted is told to stop by the runner that runs it (it checks the flag about
once a second); a guest waiting for its turn is marked cancelled at once. Cancelled guests stay
cancelled when the plan runs again, unless `plan run --retry-cancelled`.
"""

from __future__ import annotations

import argparse
import time

from vmshift.cli.plan_options import add_plan_arguments, open_plan
from vmshift.errors import ConfigError
from vmshift.fleet.state import CANCELLED, FAILED, FINISHED, INTERRUPTED, QUEUED

HELP = "cancel a plan's guest, or the whole plan"

# Stages in which no conversion of the guest runs: cancelled at once.
WAITING = frozenset({QUEUED, FAILED, INTERRUPTED})


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_plan_arguments(p)
    p.add_argument("guest", metavar="GUEST", nargs="?", help="the guest (default: all of them)")


def run(args: argparse.Namespace) -> int:
    plan, state = open_plan(args)
    try:
        state.register([g.name for g in plan.active()])  # a plan that never ran yet
        # A [[source]] table's guests are known from the run that chose them.
        known = {g.name for g in plan.guests} | {r.name for r in state.guests()}
        if args.guest is not None and args.guest not in known:
            raise ConfigError(f"{plan.path}: no guest {args.guest!r} in the plan")
        state.cancel(args.guest)
        now = time.time()
        told = []
        for record in state.guests():
            if args.guest is not None and record.name != args.guest:
                continue
            if record.stage in WAITING:
                state.update(record.name, stage=CANCELLED, finished_at=now, rate=0.0)
            if record.stage not in FINISHED:
                told.append(record.name)
        what = args.guest if args.guest is not None else "every guest of the plan"
        print(f"vmshift: cancel asked for {what}; not finished then: {', '.join(told) or 'none'}")
        return 0
    finally:
        state.close()
