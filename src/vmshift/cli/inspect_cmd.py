"""`vmshift inspect DISK...`: what is on a guest's disks, read-only."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from vmshift.cli import key_options
from vmshift.cli.render import print_report
from vmshift.guest.inspect import inspect_images

HELP = "inspect the operating systems on a guest's disks (read-only)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "disks", nargs="+", metavar="DISK", type=Path,
        help="disk images of one guest (raw, qcow2, vmdk, vhd, vhdx, vdi; format detected)",
    )  # fmt: skip
    parser.add_argument(
        "--json", action="store_true", help="print a JSON document (docs/inspect-json.md)"
    )
    parser.add_argument(
        "--applications", action="store_true", help="list installed applications in the summary"
    )
    key_options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    keys = key_options.luks_keys(args)
    report = inspect_images(args.disks, keys=keys, ask_key=key_options.key_asker(args))
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        # Guest strings (product names, hostnames) must never be read as rich markup.
        console = Console(markup=False, emoji=False, highlight=False)
        print_report(console, report, show_apps=args.applications)
    return 0
