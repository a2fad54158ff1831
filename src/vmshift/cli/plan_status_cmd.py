"""`vmshift plan status PLAN`: each guest's stage, progress, rate, attempts, worker and error."""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.live import Live

from vmshift.cli.plan_options import add_plan_arguments, open_plan
from vmshift.cli.plan_view import ENDED, PlainLines, plan_renderable
from vmshift.fleet.plan import Plan
from vmshift.fleet.state import GuestRecord, PlanState

HELP = "show the stage and progress of a plan's guests (--json, --watch)"
WATCH_INTERVAL = 1.0  # seconds between redraws


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_plan_arguments(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print the guests' records as JSON")
    how.add_argument("--watch", action="store_true", help="redraw until every guest has ended")


def records(plan: Plan, state: PlanState) -> list[GuestRecord]:
    """The plan's guests as the state knows them, in its order; a guest of the plan not
    registered yet (the plan never ran, or was changed since) shows as queued."""
    known = {r.name: r for r in state.guests()}
    shown = [known.pop(g.name, GuestRecord(name=g.name)) for g in plan.active()]
    return shown + list(known.values())  # guests since taken out of the plan, last


def run(args: argparse.Namespace) -> int:
    plan, state = open_plan(args)
    try:
        if args.json:
            doc = {
                "plan": plan.id,
                "path": str(plan.path),
                "guests": [r.to_json() for r in records(plan, state)],
            }
            print(json.dumps(doc, indent=2))
            return 0
        console = Console(highlight=False)
        title = f"plan {plan.path}"
        if not args.watch:
            console.print(plan_renderable(title, records(plan, state), detail=True))
            return 0
        return _watch(plan, state, console, title)
    finally:
        state.close()


def _watch(plan: Plan, state: PlanState, console: Console, title: str) -> int:
    if not console.is_terminal:
        plain = PlainLines(console)
        while True:
            current = records(plan, state)
            plain.show(current)
            if all(r.stage in ENDED for r in current):
                return 0
            time.sleep(WATCH_INTERVAL)
    with Live(console=console, auto_refresh=False) as live:
        while True:
            current = records(plan, state)
            live.update(plan_renderable(title, current, detail=True), refresh=True)
            if all(r.stage in ENDED for r in current):
                return 0
            time.sleep(WATCH_INTERVAL)
