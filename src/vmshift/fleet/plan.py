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
command's own parser (fleet/convert_line.py), so every option it has works here. Values: a
string, a number, true for a flag, a list for an option given several times. Keys of the plan
itself in a [[guest]]: args (the positional arguments), skip (leave it out), source-host (the
host its limit counts against, when the source does not say). [[source]] tables (a vSphere
connection with guests chosen by name, folder, glob or regex) are expanded by
fleet/vsphere_select.py.

Relative paths in a plan are relative to the plan file: each conversion runs there.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmshift.errors import ConfigError
from vmshift.fleet.convert_line import (
    LOCAL,
    convert_argv,
    convert_options,
    convert_parser,
    guest_name,
    source_host,
    target_storage,
)

PLAN_GUEST_KEYS = frozenset({"args", "skip", "source-host"})
SOURCE_SELECTORS = frozenset({"names", "folder", "glob", "regex", "exclude"})
DEFAULT_PER_SOURCE_HOST = 2


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
    defaults = convert_options(f"{path} [defaults]", _table(path, doc, "defaults"), frozenset())
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
    options = {**defaults, **convert_options(where, entry, PLAN_GUEST_KEYS)}
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
        convert_parser().parse_args(spec.argv())
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from exc


def _source(path: Path, index: int, entry: Mapping[str, Any]) -> SourceSelection:
    where = f"{path} [[source]] {index}"
    options = convert_options(where, entry, SOURCE_SELECTORS)
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
