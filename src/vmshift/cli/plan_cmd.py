"""`vmshift plan`: migration plans of many guests (docs/plans.md). Each verb is a module."""

from __future__ import annotations

import argparse

HELP = "run a migration plan of many guests (check, run, status, cancel, serve)"

# Verb -> module under vmshift.cli that defines HELP, add_arguments(parser) and run(args).
VERBS: dict[str, str] = {
    "check": "vmshift.cli.plan_check_cmd",
    "run": "vmshift.cli.plan_run_cmd",
    "status": "vmshift.cli.plan_status_cmd",
    "cancel": "vmshift.cli.plan_cancel_cmd",
    "serve": "vmshift.cli.plan_serve_cmd",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vmshift.cli.main import add_command_parsers

    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add_command_parsers(sub, VERBS, "verb_run")


def run(args: argparse.Namespace) -> int:
    rc: int = args.verb_run(args)
    return rc
