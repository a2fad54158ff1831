"""Placeholder: being written (issue 14)."""

from __future__ import annotations

import argparse

HELP = "(being written)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("plan", nargs="?")


def run(args: argparse.Namespace) -> int:
    return 2
