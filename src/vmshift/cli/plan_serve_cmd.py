"""`vmshift plan serve PLAN`: a read-only web page of the plan's guests, live (docs/plans.md).

It prints the address it serves on and runs until Ctrl-C or SIGTERM, which end it cleanly in
one line: stopping a server is its normal end, so the exit code is 0.
"""

from __future__ import annotations

import argparse
import contextlib
import signal

from vmshift.cli.plan_options import add_plan_arguments, open_plan
from vmshift.cli.signals import GUARD
from vmshift.errors import UsageError
from vmshift.fleet.dashboard import make_server

HELP = "serve a live, read-only web page of a plan's guests (127.0.0.1 by default)"

DEFAULT_PORT = 8047


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_plan_arguments(p)
    p.add_argument(
        "--bind",
        metavar="ADDR",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1; 0.0.0.0 or :: for every one)",
    )
    p.add_argument(
        "--port",
        metavar="N",
        type=int,
        default=DEFAULT_PORT,
        help=f"the TCP port (default: {DEFAULT_PORT}; 0: any free port)",
    )


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: a TCP port is 0 to 65535 (0: any free port)")
    plan, state = open_plan(args)
    try:
        server = make_server(plan, state, bind=args.bind, port=args.port)
        try:
            # Ctrl-C and SIGTERM raise KeyboardInterrupt here (cli/signals.py): the end.
            with contextlib.suppress(KeyboardInterrupt):
                print(
                    f"vmshift: serving plan {plan.id} on {server.url} (Ctrl-C to stop)", flush=True
                )
                server.serve_forever()
        finally:
            server.server_close()
    finally:
        state.close()
    name = signal.Signals(GUARD.signum or signal.SIGINT).name
    print(f"vmshift: stopped serving plan {plan.id} ({name})", flush=True)
    return 0
