"""--key and --keys-from-stdin (virt-v2v's options for LUKS volumes), for convert and inspect.

A volume no --key matches is asked for the way virt-v2v asks: a line of standard input with
--keys-from-stdin, else a prompt (no echo) on the terminal; with neither it is refused, naming
it, never a wait on a pipe.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager

from vmshift.errors import UsageError
from vmshift.guest.luks import AskKey, LuksKey, parse_key_option


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key",
        dest="keys",
        action="append",
        metavar="ID:key:KEY|ID:file:FILE",
        help="the passphrase of a LUKS volume; ID is its device (/dev/sda2), its LUKS UUID "
        "or 'all'; repeat for several volumes or passphrases to try",
    )
    p.add_argument(
        "--keys-from-stdin",
        action="store_true",
        help="read the passphrase of each LUKS volume no --key matches from standard input, "
        "one line each",
    )


def luks_keys(args: argparse.Namespace) -> tuple[LuksKey, ...]:
    return tuple(parse_key_option(value) for value in args.keys or ())


def key_asker(
    args: argparse.Namespace,
    pause: Callable[[], AbstractContextManager[object]] | None = None,
) -> AskKey | None:
    """How to ask for a key no --key gave; pause: stops the progress display meanwhile."""
    if args.keys_from_stdin:
        return _from_stdin
    if not sys.stdin.isatty():
        return None

    def on_terminal(device: str, where: str) -> str | None:
        with pause() if pause is not None else contextlib.nullcontext():
            try:
                return getpass.getpass(f"Enter the key or passphrase of {where}: ")
            except EOFError:
                raise UsageError(f"{device}: no key given on the terminal") from None

    return on_terminal


def _from_stdin(device: str, where: str) -> str:
    line = sys.stdin.readline()
    if not line:
        raise UsageError(f"--keys-from-stdin: standard input ended before the key of {where}")
    return line.removesuffix("\n")
