"""The `vmshift` command: a table of subcommands, and exceptions mapped to exit codes."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from vmshift import __version__
from vmshift.cli.signals import GUARD
from vmshift.errors import UsageError, VmshiftError
from vmshift.guest import accel
from vmshift.resume import KeptForResume, KeptSourceError
from vmshift.verify.boot import BootCheckInterrupted

# Subcommand name -> module under vmshift.cli that defines add_arguments(parser) and run(args).
SUBCOMMANDS: dict[str, str] = {
    "convert": "vmshift.cli.convert_cmd",
    "inspect": "vmshift.cli.inspect_cmd",
    "profiles": "vmshift.cli.profiles_cmd",
    "p2v-server": "vmshift.cli.p2v_server_cmd",
    "p2v-image": "vmshift.cli.p2v_image_cmd",
    "plan": "vmshift.cli.plan_cmd",
    "worker": "vmshift.cli.worker_cmd",
}

log = logging.getLogger("vmshift")

# The last line of a run whose copy was kept for a resume (resume.py).
KEPT = (
    "vmshift: the converted disks and the partial copy are kept: rerun the same command "
    "with --resume to continue, or without --resume to discard them; the source is untouched"
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line naming it, as every other vmshift error."""

    def error(self, message: str) -> NoReturn:
        print(f"vmshift: error: {message}", file=sys.stderr)
        print(f"vmshift: hint: see '{self.prog} --help'", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vmshift", description="Move virtual and physical machines onto KVM.")
    parser.add_argument("--version", action="version", version=f"vmshift {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="say more; -vv for debug traces"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_command_parsers(sub, SUBCOMMANDS, "run")
    return parser


def add_command_parsers(
    sub: argparse._SubParsersAction[Any], table: Mapping[str, str], key: str
) -> None:
    """A parser per entry of table (name -> a module with HELP, add_arguments(parser) and
    run(args)); the module's run goes into the parsed arguments as key."""
    for name, module_name in table.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        # Accept -v/-q after the command too, as users type them anywhere.
        sp.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)
        sp.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
        module.add_arguments(sp)
        sp.set_defaults(**{key: module.run})


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING
    if verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="vmshift: %(message)s", stream=sys.stderr)
    # paramiko (-it ssh) logs the tracebacks of failures vmshift reports in one line itself;
    # its own story is for -vv.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.verbose)
    try:
        accel.force(os.environ.get(accel.FORCE_VARIABLE))
    except ValueError as exc:
        print(f"vmshift: error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    GUARD.install()
    try:
        rc: int = args.run(args)
        return rc
    except VmshiftError as exc:
        if GUARD.signum is not None:
            return _interrupted(args.verbose)  # what failed did so because of the signal
        if args.verbose:
            log.exception("traceback follows")
        print(f"vmshift: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"vmshift: hint: {exc.hint}", file=sys.stderr)
        if isinstance(exc, KeptSourceError):  # the source was lost in the copy
            print(KEPT, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        done = exc.where if isinstance(exc, BootCheckInterrupted) else None
        return _interrupted(args.verbose, kept=isinstance(exc, KeptForResume), done=done)
    except Exception:
        # Anything else is a bug, except when a signal made it happen (a libguestfs call on
        # the appliance the signal stopped): then it is the interruption.
        if GUARD.signum is None:
            raise
        return _interrupted(args.verbose)


def _interrupted(verbose: int, kept: bool = False, done: str | None = None) -> int:
    if verbose:
        log.exception("traceback follows")
    signum = GUARD.signum or 2  # a KeyboardInterrupt without our handler: SIGINT
    GUARD.signum = signum
    print(f"vmshift: {GUARD.message()}", file=sys.stderr)
    if kept:  # the copy was interrupted (resume.py)
        print(KEPT, file=sys.stderr)
    elif done is not None:  # only --verify-boot's check was cut short
        print(
            f"vmshift: the guest is complete on the target ({done}); only its boot check was "
            "cut short; the source is untouched",
            file=sys.stderr,
        )
    else:
        print("vmshift: nothing was left behind; the source is untouched", file=sys.stderr)
    return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
