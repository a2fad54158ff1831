"""`vmshift plan`: migration plans of many guests (docs/plans.md). Each verb is a module."""

from __future__ import annotations

import argparse
import importlib

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
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, module_name in VERBS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        sp.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
        sp.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
        module.add_arguments(sp)
        sp.set_defaults(verb_run=module.run)


def run(args: argparse.Namespace) -> int:
    rc: int = args.verb_run(args)
    return rc
