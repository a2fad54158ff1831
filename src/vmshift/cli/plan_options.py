"""The arguments every `vmshift plan` verb takes (PLAN, --state, --broker), and opening them."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from vmshift.fleet.plan import Plan, load_plan
from vmshift.fleet.state import PlanState
from vmshift.fleet.stores import open_state


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", metavar="PLAN", type=Path, help="the plan file (TOML, docs/plans.md)")
    p.add_argument(
        "--state",
        metavar="FILE",
        type=Path,
        help="the plan's state database (default: $XDG_DATA_HOME/vmshift/plans/ID.sqlite)",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help="a distributed run's Redis (redis://HOST:6379/0): its state is kept there",
    )


def data_home(environ: Mapping[str, str]) -> Path:
    """The user's data directory: $XDG_DATA_HOME (when absolute, as the XDG spec asks), else
    ~/.local/share."""
    xdg = environ.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg)
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "share"


def open_plan(args: argparse.Namespace) -> tuple[Plan, PlanState]:
    """The plan named on the command line and its state (a bad plan or a state that cannot be
    opened is a ConfigError: one line)."""
    plan = load_plan(args.plan)
    state = open_state(
        plan,
        state_file=getattr(args, "state", None),
        broker=getattr(args, "broker", None),
        data_home=data_home(os.environ),
    )
    return plan, state
