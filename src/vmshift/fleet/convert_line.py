"""A plan guest's `vmshift convert` command line: the options a plan may give (the convert
command's own parser's), checked and turned into arguments, and what the command line says
about the guest for the plan (its name, its source host, its target storage).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from vmshift.errors import ConfigError

# Options that belong to the runner, not to a guest: it gives them itself (progress lines, the
# resume of a copy under way) or they make no sense unattended.
RUNNER_OPTIONS = frozenset({
    "machine-readable", "resume", "print-source", "quiet", "verbose", "keys-from-stdin",
    "report",
})  # fmt: skip
# The source host of a guest read from this machine (files, a local libvirt): the per-source-host
# limit, made for hosts that throttle (ESXi), does not count it; the total limit does.
LOCAL = "localhost"
# Taken off a file's name to name its guest (web01.vmx is web01).
NAME_SUFFIXES = (".vmx", ".ova", ".ovf", ".xml", ".qcow2", ".raw", ".img", ".vmdk", ".vdi",
                 ".vhdx", ".vhd")  # fmt: skip


class _NoExit(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def convert_parser() -> argparse.ArgumentParser:
    from vmshift.cli import convert_cmd

    parser = _NoExit(prog="vmshift convert", add_help=False)
    convert_cmd.add_arguments(parser)
    return parser


@dataclass(frozen=True)
class _Option:
    flag: str  # what goes on the command line
    kind: str  # "value", "list", "flag" (store_true), "noflag" (store_false)


def _option_table() -> dict[str, _Option]:
    """Each key a plan may use -> the convert option it stands for."""
    table: dict[str, _Option] = {}
    for action in convert_parser()._actions:
        if not action.option_strings:
            continue
        flags = sorted(action.option_strings, key=lambda s: (not s.startswith("--"), s))
        if isinstance(action, argparse._StoreTrueAction):
            kind = "flag"
        elif isinstance(action, argparse._StoreFalseAction):
            kind = "noflag"
        elif isinstance(action, argparse._AppendAction):
            kind = "list"
        else:
            kind = "value"
        option = _Option(flag=action.option_strings[0], kind=kind)
        names = [f.lstrip("-") for f in flags if f.startswith("--")]
        dest = action.dest.replace("_", "-")
        for name in [*names, dest]:
            table.setdefault(name, option)
        if kind == "noflag":
            # --no-verify-copy (dest verify_copy): `no-verify-copy = true` or
            # `verify-copy = false` say the same.
            table[dest] = _Option(flag=option.flag, kind="noflag-dest")
    for name in RUNNER_OPTIONS:
        table.pop(name, None)
    return table


@functools.cache
def options_table() -> dict[str, _Option]:
    return _option_table()


def convert_argv(options: Mapping[str, Any], args: Sequence[str]) -> list[str]:
    table = options_table()
    argv: list[str] = []
    for key, value in options.items():
        opt = table[key]
        if opt.kind in ("flag", "noflag"):
            if value:
                argv.append(opt.flag)
        elif opt.kind == "noflag-dest":
            if not value:
                argv.append(opt.flag)
        elif opt.kind == "list":
            for item in value if isinstance(value, list) else [value]:
                argv += [opt.flag, str(item)]
        else:
            argv += [opt.flag, str(value)]
    return [*argv, *args]


def _check_value(where: str, key: str, value: Any) -> None:
    opt = options_table().get(key)
    if opt is None:
        raise ConfigError(f"{where}: unknown key {key!r} (not a `vmshift convert` option)")
    if opt.kind in ("flag", "noflag", "noflag-dest"):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} takes true or false, not {value!r}")
    elif opt.kind == "list":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, str | int) and not isinstance(i, bool) for i in items):
            raise ConfigError(f"{where}: {key} takes a string or a list of strings")
    elif isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: {key} takes a string or a number, not {value!r}")


def convert_options(where: str, table: Mapping[str, Any], extra: frozenset[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in extra:
            continue
        _check_value(where, key, value)
        opt = options_table()[key]
        if opt.kind == "noflag-dest":  # verify-copy = false is no-verify-copy = true
            options[_canonical(opt.flag.lstrip("-"))] = not value
        else:
            options[_canonical(key)] = value
    return options


def _canonical(key: str) -> str:
    """One key per option, so that a guest's `o` overrides the defaults' `output`."""
    table = options_table()
    opt = table[key]
    for name, other in table.items():
        if other == opt:
            return name
    return key


def guest_name(options: Mapping[str, Any], args: Sequence[str]) -> str:
    """The plan's name for a guest: its output name, else the name its source gives it."""
    if options.get("output-name"):
        return str(options["output-name"])
    if options.get("name"):  # --name, for -i disk
        return str(options["name"])
    first = args[0]
    mode = options.get("input", "libvirt")
    if mode in ("libvirt",) and "/" not in first:
        return first
    stem = Path(urlsplit(first).path if "://" in first else first).name
    for suffix in NAME_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def source_host(options: Mapping[str, Any], args: Sequence[str]) -> str:
    """The host a guest's source limit counts against: the ESXi host of a vpx:// URI (its
    last path element), the host of any other connection URI or ssh:// argument, else this
    machine (LOCAL, which the per-source-host limit does not count)."""
    conn = options.get("input-conn")
    if isinstance(conn, str) and conn:
        parts = urlsplit(conn)
        if parts.scheme == "vpx":
            elements = [p for p in parts.path.split("/") if p]
            if elements:
                return elements[-1]
        if parts.hostname:
            return parts.hostname
    if args and "://" in args[0]:
        host = urlsplit(args[0]).hostname
        if host:
            return host
    return LOCAL


def target_storage(options: Mapping[str, Any]) -> str:
    """What the per-target-storage limit counts: the output mode, connection and storage."""
    output = options.get("output", "libvirt")
    conn = options.get("output-conn") or ""
    store = options.get("output-storage") or ""
    return f"{output}:{conn}:{store}"
