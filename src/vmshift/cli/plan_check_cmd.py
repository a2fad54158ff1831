"""`vmshift plan check PLAN [--json]`: what would fail in the plan and why, nothing copied.

The checks are vmshift.fleet.preflight's; this module makes each guest's Source and Target from
its `vmshift convert` arguments with the convert command's own parser and factories (the library
does not import cli/), and shows the findings: a table of the problems and a summary line, or
with --json {"plan": PATH, "ok": BOOL, "findings": [{guest, check, ok, text} ...]}.
Exit 1 when anything would fail, else 0. Needs no plan state (no --state, no --broker).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from rich import box
from rich.console import Console
from rich.table import Table

from vmshift.cli import convert_cmd, mode_options
from vmshift.cli.profile_options import apply_profile, target_networks
from vmshift.errors import UsageError
from vmshift.fleet.plan import GuestSpec, load_plan
from vmshift.fleet.preflight import PARALLEL, TIMEOUT, Finding, GuestSetup, check_plan, problems

HELP = "check every guest of a plan (source, disks, target name, mappings, space); copy nothing"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", metavar="PLAN", type=Path, help="the plan file (TOML, docs/plans.md)")
    p.add_argument("--json", action="store_true", help="print the findings as a JSON document")
    p.add_argument(
        "--parallel",
        type=int,
        default=PARALLEL,
        metavar="N",
        help=f"guests checked at once (default {PARALLEL})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=TIMEOUT,
        metavar="SECONDS",
        help=f"time allowed for one guest's checks (default {TIMEOUT:g})",
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def prepare(spec: GuestSpec) -> GuestSetup:
    """A guest's Source and Target, made as `vmshift convert` makes them from its arguments
    (never asking for a password: a vSphere guest needs input-password-file)."""
    parser = _Parser(prog="vmshift convert", add_help=False)
    convert_cmd.add_arguments(parser)
    args = parser.parse_args(spec.argv())
    apply_profile(args)
    mode = mode_options.input_mode(args)
    if mode == "vsphere" and args.input_password_file is None:
        raise UsageError(f"-ic {args.input_conn}: a password is needed: give input-password-file")
    source = convert_cmd.make_source(args)
    output = convert_cmd.output_name(args)
    target = convert_cmd.make_target(args, mode_options.output_options(args, output))
    return GuestSetup(
        source=source,
        target=target,
        networks=target_networks(args),
        input_mode=mode,
        output=output,
        output_storage=args.output_storage,
        output_conn=args.output_conn,
        preallocated=args.output_alloc == "preallocated",
        vmx_local=mode == "vmx" and args.input_transport is None and "://" not in args.args[0],
    )


@contextlib.contextmanager
def _in(directory: Path) -> Iterator[None]:
    """Run the checks where the plan's conversions run: relative paths are the plan's."""
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def run(args: argparse.Namespace) -> int:
    if args.parallel < 1:
        raise UsageError(f"--parallel {args.parallel}: give at least 1")
    plan = load_plan(args.plan.absolute())  # the checks run in its directory
    with _in(plan.directory.resolve()):
        findings = check_plan(
            plan,
            prepare,
            mode_options.read_password_file,
            parallel=args.parallel,
            timeout=args.timeout,
        )
    failed = problems(findings)
    if args.json:
        doc = {
            "plan": str(plan.path.resolve()),
            "ok": not failed,
            "findings": [f.as_dict() for f in findings],
        }
        print(json.dumps(doc, indent=2))
    else:
        show(Console(markup=False, emoji=False, highlight=False), findings)
    return 1 if failed else 0


def show(console: Console, findings: list[Finding]) -> None:
    """The problems as a table (guest, check, result), then one summary line."""
    failed = problems(findings)
    guests = {f.guest for f in findings if not f.guest.startswith(("(", "[["))}
    if failed:
        table = Table(box=box.SIMPLE_HEAD, title="Would fail", title_justify="left")
        for column in ("guest", "check", "result"):
            table.add_column(column)
        for f in failed:
            table.add_row(f.guest, f.check, f.text)
        console.print(table)
        bad = {f.guest for f in failed} & guests
        print(
            f"vmshift: plan check: {len(failed)} problem(s); {len(bad)} of {len(guests)} "
            "guest(s) would fail",
            file=sys.stdout,
        )
    else:
        print(f"vmshift: plan check: all {len(guests)} guest(s) pass every check", file=sys.stdout)
