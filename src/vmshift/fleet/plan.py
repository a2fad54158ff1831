"""A migration plan: a TOML file of guests, each one a `vmshift convert` command line.

    [defaults]                      # any `vmshift convert` long option, without its dashes
    output = "local"                # -o (the option's long name: output, output-storage ...)
    output-storage = "/var/tmp/out" # -os
    network = ["VM Network:default"]

    [limits]
    total = 4                       # conversions at once in all
    per-source-host = 2             # at once per source host (ESXi hosts throttle)
    per-target-storage = 2          # at once per target storage (default: no limit)

    [storage]                       # source datastore -> output storage (vSphere sources)
    "datastore1" = "/var/tmp/out"

    [[guest]]
    input = "vmx"                   # -i
    args = ["/srv/vms/web01/web01.vmx"]
    output-name = "web01-kvm"       # -on

A key is a `vmshift convert` option by its long name or its destination (`output` for -o,
`input-conn` for -ic, `output-name` for -on, `no-verify-copy` ...), taken from the convert
command's own parser, so every option it has works here. Values: a string, a number, true for
a flag, a list for an option given several times. Keys of the plan itself in a [[guest]]:
args (the positional arguments), skip (leave it out), source-host (the host its limit counts
against, when the source does not say). [[source]] tables (a vSphere connection with guests
chosen by name, folder, glob or regex) are expanded by fleet/vsphere_select.py.

Relative paths in a plan are relative to the plan file: each conversion runs there.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import tomllib
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
PLAN_GUEST_KEYS = frozenset({"args", "skip", "source-host"})
SOURCE_SELECTORS = frozenset({"names", "folder", "glob", "regex", "exclude"})
DEFAULT_PER_SOURCE_HOST = 2
# The source host of a guest read from this machine (files, a local libvirt): the per-source-host
# limit, made for hosts that throttle (ESXi), does not count it; the total limit does.
LOCAL = "localhost"
# Taken off a file's name to name its guest (web01.vmx is web01).
NAME_SUFFIXES = (".vmx", ".ova", ".ovf", ".xml", ".qcow2", ".raw", ".img", ".vmdk", ".vdi",
                 ".vhdx", ".vhd")  # fmt: skip


@dataclass(frozen=True)
class Limits:
    total: int
    per_source_host: int = DEFAULT_PER_SOURCE_HOST
    per_target_storage: int | None = None  # None: no limit


@dataclass(frozen=True)
class GuestSpec:
    """One guest of the plan: its `vmshift convert` options and what its limits count."""

    name: str  # unique in the plan: the output name, else the source's name for the guest
    options: Mapping[str, Any]  # option key (long name) -> value, defaults merged in
    args: tuple[str, ...]
    source_host: str
    target_storage: str
    skip: bool = False

    def argv(self) -> list[str]:
        """The `vmshift convert` arguments (after `convert`), without the runner's own."""
        return convert_argv(self.options, self.args)

    def option(self, key: str) -> Any:
        return self.options.get(key)

    @property
    def remote_source(self) -> bool:
        """Whether the per-source-host limit counts this guest (its source is another host)."""
        return self.source_host != LOCAL


@dataclass(frozen=True)
class SourceSelection:
    """A [[source]] table: a vSphere connection and which of its guests the plan takes."""

    options: Mapping[str, Any]  # convert options (input-conn, input-password-file ...)
    names: tuple[str, ...] = ()
    folder: str | None = None
    glob: str | None = None
    regex: str | None = None
    exclude: tuple[str, ...] = ()
    index: int = 0  # its position among the [[source]] tables, for messages


@dataclass(frozen=True)
class Plan:
    path: Path
    id: str  # stable for one plan file: its stem and a digest of its absolute path
    text: str  # the TOML as read (what a distributed run sends to the workers)
    defaults: Mapping[str, Any]
    limits: Limits
    storage: Mapping[str, str]  # datastore -> output storage
    guests: tuple[GuestSpec, ...]
    sources: tuple[SourceSelection, ...] = ()

    @property
    def directory(self) -> Path:
        """Where each conversion runs (relative paths in the plan are relative to it)."""
        return self.path.parent

    def guest(self, name: str) -> GuestSpec:
        for g in self.guests:
            if g.name == name:
                return g
        raise ConfigError(f"{self.path}: no guest {name!r} in the plan")

    def active(self) -> tuple[GuestSpec, ...]:
        return tuple(g for g in self.guests if not g.skip)


class _NoExit(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def _convert_parser() -> argparse.ArgumentParser:
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
    for action in _convert_parser()._actions:
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


def _convert_options(where: str, table: Mapping[str, Any], extra: frozenset[str]) -> dict[str, Any]:
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


def plan_id(path: Path) -> str:
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    return f"{resolved.stem}-{digest}"


def load_plan(path: Path, *, text: str | None = None) -> Plan:
    """Read and check a plan (text: its content, when it came from elsewhere, such as a
    distributed run's message; path still names it). Nothing is contacted: a [[source]]
    table's guests are added by fleet/vsphere_select.py."""
    if text is None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the plan: {exc.strerror}") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not a valid TOML plan: {exc}") from exc
    known = {"defaults", "limits", "storage", "guest", "source"}
    for key in doc:
        if key not in known:
            raise ConfigError(
                f"{path}: unknown table or key {key!r} (known: {', '.join(sorted(known))})"
            )
    defaults = _convert_options(f"{path} [defaults]", _table(path, doc, "defaults"), frozenset())
    limits = _limits(path, _table(path, doc, "limits"))
    storage = _table(path, doc, "storage")
    for ds, target in storage.items():
        if not isinstance(target, str):
            raise ConfigError(f"{path} [storage]: {ds!r} must map to a path or pool name")
    guests = tuple(
        _guest(path, i, entry, defaults)
        for i, entry in enumerate(_array(path, doc, "guest"), start=1)
    )
    sources = tuple(
        _source(path, i, entry) for i, entry in enumerate(_array(path, doc, "source"), start=1)
    )
    plan = Plan(
        path=path,
        id=plan_id(path),
        text=text,
        defaults=defaults,
        limits=limits,
        storage=dict(storage),
        guests=guests,
        sources=sources,
    )
    check_unique(plan)
    return plan


def check_unique(plan: Plan) -> None:
    seen: dict[str, int] = {}
    for i, g in enumerate(plan.guests, start=1):
        if g.name in seen:
            raise ConfigError(
                f"{plan.path}: guests {seen[g.name]} and {i} are both named {g.name!r}",
                hint="give one of them output-name",
            )
        seen[g.name] = i


def with_guests(plan: Plan, extra: Sequence[GuestSpec]) -> Plan:
    """The plan with guests added (a [[source]] table's, once expanded)."""
    from dataclasses import replace

    expanded = replace(plan, guests=(*plan.guests, *extra))
    check_unique(expanded)
    return expanded


def _table(path: Path, doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key} must be a table ([{key}])")
    return value


def _array(path: Path, doc: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: {key} must be an array of tables ([[{key}]])")
    return value


def _limits(path: Path, table: Mapping[str, Any]) -> Limits:
    names = {"total": "total", "per-source-host": "per_source_host",
             "per-target-storage": "per_target_storage"}  # fmt: skip
    values: dict[str, int] = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{path} [limits]: unknown key {key!r} (known: {', '.join(names)})")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{path} [limits]: {key} must be a whole number of at least 1")
        values[names[key]] = value
    values.setdefault("total", os.cpu_count() or 1)
    return Limits(**values)


def _guest(
    path: Path,
    index: int,
    entry: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> GuestSpec:
    where = f"{path} [[guest]] {index}"
    options = {**defaults, **_convert_options(where, entry, PLAN_GUEST_KEYS)}
    args = entry.get("args", [])
    if isinstance(args, str):
        args = [args]
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: args must be a list of strings")
    if not args:
        raise ConfigError(f"{where}: args names no guest (a file, disk images or a guest name)")
    skip = entry.get("skip", False)
    if not isinstance(skip, bool):
        raise ConfigError(f"{where}: skip takes true or false")
    host = entry.get("source-host")
    if host is not None and not isinstance(host, str):
        raise ConfigError(f"{where}: source-host must be a string")
    spec = GuestSpec(
        name=guest_name(options, args),
        options=options,
        args=tuple(args),
        source_host=host or source_host(options, args),
        target_storage=target_storage(options),
        skip=skip,
    )
    _check_argv(where, spec)
    return spec


def _check_argv(where: str, spec: GuestSpec) -> None:
    try:
        _convert_parser().parse_args(spec.argv())
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from exc


def _source(path: Path, index: int, entry: Mapping[str, Any]) -> SourceSelection:
    where = f"{path} [[source]] {index}"
    options = _convert_options(where, entry, SOURCE_SELECTORS)
    if "input-conn" not in options:
        raise ConfigError(f"{where}: input-conn (the vCenter or ESXi URI) is missing")

    def strings(key: str) -> tuple[str, ...]:
        value = entry.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a string or a list of strings")
        return tuple(value)

    def one(key: str) -> str | None:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string")
        return value

    selection = SourceSelection(
        options=options, names=strings("names"), folder=one("folder"), glob=one("glob"),
        regex=one("regex"), exclude=strings("exclude"), index=index,
    )  # fmt: skip
    if not (selection.names or selection.folder or selection.glob or selection.regex):
        raise ConfigError(f"{where}: choose its guests with names, folder, glob or regex")
    return selection


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
