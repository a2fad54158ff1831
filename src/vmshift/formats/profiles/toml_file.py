"""vmshift's TOML spelling of profiles (docs/profiles.md). Strict: an unknown key is a typo.

tomllib keeps no positions, so _TomlLines finds the lines of tables and keys again in the text:
an error without its line is little help in a hand-edited file."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vmshift.formats.profiles.common import (
    ALLOCATIONS,
    DATA_DOMAIN_TYPES,
    FORMATS,
    METHODS,
    OUT_TYPES,
    NetworkRule,
    Profile,
    ProfileError,
    ProfileFile,
    add_rule,
    check_choice,
)

_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")
_PROFILE_KEYS = (
    "method",
    "storage",
    "format",
    "allocation",
    "conn",
    "rhv-data-domain-type",
    "default-network",
    "default-bridge",
    "map",
)
_MAP_KEYS = ("source", "source-type", "network", "bridge")


def parse_toml(data: bytes, path: Path) -> ProfileFile:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = data[: exc.start].count(b"\n") + 1
        raise ProfileError(path, bad_line, "not UTF-8 text, as TOML must be") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg, line = str(exc), None
        if match := _TOML_AT.search(msg):
            line = int(match.group(1))
            msg = f"{msg[: match.start()]} (column {match.group(2)})"
        elif match := _TOML_END.search(msg):
            line = text.count("\n") + (0 if text.endswith("\n") else 1)
            msg = msg[: match.start()] + " at the end of the file"
        raise ProfileError(path, line, f"TOML syntax error: {msg}") from exc
    lines = _TomlLines(text)
    for key in doc:
        if key not in ("profile", "map"):
            raise ProfileError(
                path, lines.key((), key), f"unknown key {key!r}; expected [profile.NAME] tables"
            )
    file_rules = _toml_rules(path, lines, doc.get("map", []), (), "top-level [[map]]")
    table = doc.get("profile", {})
    if not isinstance(table, dict):
        raise ProfileError(path, lines.key((), "profile"), "'profile' must be a table of profiles")
    profiles = tuple(
        _toml_profile(path, lines, name, body, file_rules) for name, body in table.items()
    )
    return ProfileFile(path, "toml", profiles)


def _toml_profile(
    path: Path, lines: _TomlLines, name: str, body: Any, file_rules: tuple[NetworkRule, ...]
) -> Profile:
    scope = ("profile", name)
    line = lines.table(scope) or lines.key(("profile",), name) or lines.key((), "profile")
    if not name.strip():
        raise ProfileError(path, line, 'a profile without a name ([profile.""])')
    where = f"profile {name!r}"
    if not isinstance(body, dict):
        raise ProfileError(path, line, f"{where} must be a table ([profile.{name}])")

    def at(key: str) -> int | None:
        return lines.key(scope, key) or line

    for key in body:
        if key not in _PROFILE_KEYS:
            raise ProfileError(
                path, at(key), f"{where}: unknown key {key!r}; expected {', '.join(_PROFILE_KEYS)}"
            )

    def text(key: str) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ProfileError(path, at(key), f"{where}: {key} must be a non-empty string")
        return value.strip()

    method = text("method")
    if method is None:
        raise ProfileError(path, line, f"{where}: no method (rhev, libvirt, local, qemu, null)")
    check_choice(path, at("method"), f"{where}: method", method, METHODS)
    storage = text("storage")
    if storage is None and method != "null":
        raise ProfileError(path, line, f"{where}: no storage (the -os of method {method})")
    fmt, alloc, ddt = text("format"), text("allocation"), text("rhv-data-domain-type")
    if fmt is not None:
        check_choice(path, at("format"), f"{where}: format", fmt, FORMATS)
    if alloc is not None:
        check_choice(path, at("allocation"), f"{where}: allocation", alloc, ALLOCATIONS)
    if ddt is not None:
        check_choice(
            path, at("rhv-data-domain-type"), f"{where}: rhv-data-domain-type", ddt,
            DATA_DOMAIN_TYPES,
        )  # fmt: skip
    rules = list(_toml_rules(path, lines, body.get("map", []), scope, where))
    defaults = [(t, text(f"default-{t}")) for t in OUT_TYPES if f"default-{t}" in body]
    if len(defaults) > 1:
        raise ProfileError(
            path, at("default-bridge"), f"{where}: default-network and default-bridge both set"
        )
    for out_type, out_name in defaults:
        assert out_name is not None
        rules.append(NetworkRule(None, out_type, out_name, line=at(f"default-{out_type}")))
    return Profile(
        name=name,
        method=method,
        output=METHODS[method],
        storage=storage,
        path=path,
        line=line,
        format=fmt,
        allocation=alloc,
        conn=text("conn"),
        rhv_data_domain_type=ddt,
        networks=tuple(rules),
        file_networks=file_rules,
    )


def _toml_rules(
    path: Path, lines: _TomlLines, entries: Any, scope: tuple[str, ...], where: str
) -> tuple[NetworkRule, ...]:
    """[[map]] entries: `source = "IN"`, optional `source-type`, and `network` or `bridge`."""
    if not isinstance(entries, list):
        raise ProfileError(path, lines.key(scope, "map"), f"{where}: map must be [[...map]] tables")
    rules: dict[str | None, NetworkRule] = {}
    for index, entry in enumerate(entries):
        line = lines.array_entry((*scope, "map"), index) or lines.key(scope, "map")
        if not isinstance(entry, Mapping):
            raise ProfileError(path, line, f"{where}: each map entry must be a table")
        unknown = [k for k in entry if k not in _MAP_KEYS]
        if unknown:
            raise ProfileError(
                path, line, f"{where}: map entry: unknown key {unknown[0]!r}; "
                f"expected {', '.join(_MAP_KEYS)}",
            )  # fmt: skip
        values: dict[str, str] = {}
        for key, value in entry.items():
            if not isinstance(value, str) or not value.strip():
                raise ProfileError(
                    path, line, f"{where}: map entry: {key} must be a non-empty string"
                )
            values[key] = value.strip()
        if "source" not in values:
            raise ProfileError(path, line, f"{where}: map entry without a source")
        outs = [t for t in OUT_TYPES if t in values]
        if len(outs) != 1:
            raise ProfileError(
                path, line, f"{where}: map entry for {values['source']!r} needs exactly one "
                "of network = \"NAME\" or bridge = \"NAME\"",
            )  # fmt: skip
        source_type = values.get("source-type")
        if source_type is not None:
            check_choice(path, line, f"{where}: map entry: source-type", source_type, OUT_TYPES)
        rule = NetworkRule(values["source"], outs[0], values[outs[0]], source_type, line)
        add_rule(path, rules, rule, where)
    return tuple(rules.values())


class _TomlLines:
    """Where tables and keys are in a TOML text, since tomllib keeps no positions.

    Reads header lines (`[a.b]`, `[[a.b.map]]`) and `key =` lines between them: enough for the
    way profile files are written; anything it cannot place gets no line number."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(?:#.*)?$")
    _KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")

    def __init__(self, text: str) -> None:
        # (header keys, is array-of-tables, line number of the header)
        self.headers: list[tuple[tuple[str, ...], bool, int]] = [((), False, 0)]
        self.keys: list[tuple[int, str]] = []  # (header index, key) for each `key =` line
        self.key_lines: list[int] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(raw)
            if header and len(header.group(1)) == len(header.group(3)):
                keys = _split_dotted(header.group(2))
                if keys is not None:
                    self.headers.append((keys, header.group(1) == "[[", number))
                    continue
            key = self._KEY.match(raw)
            if key:
                self.keys.append((len(self.headers) - 1, _unquote(key.group(1))))
                self.key_lines.append(number)

    def table(self, keys: tuple[str, ...]) -> int | None:
        for header_keys, is_array, number in self.headers:
            if header_keys == keys and not is_array:
                return number
        return None

    def array_entry(self, keys: tuple[str, ...], index: int) -> int | None:
        entries = [n for k, is_array, n in self.headers if k == keys and is_array]
        return entries[index] if index < len(entries) else None

    def key(self, table: tuple[str, ...], key: str) -> int | None:
        """The line of `key = ...` directly under the [table] header (or the top of the file)."""
        for (header_index, name), number in zip(self.keys, self.key_lines, strict=True):
            if name == key and self.headers[header_index][0] == table:
                return number
        # [[table.map]] headers: the key "map" is placed on the first of them.
        for header_keys, _, number in self.headers:
            if header_keys[: len(table) + 1] == (*table, key):
                return number
        return None


def _unquote(token: str) -> str:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1]
    return token


_KEY_PART = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*""")


def _split_dotted(text: str) -> tuple[str, ...] | None:
    """`profile."my rhev".map` -> ("profile", "my rhev", "map"); None if it is not a key."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _KEY_PART.match(text, pos)
        if match is None:
            return None
        parts.append(_unquote(match.group(1)))
        pos = match.end()
        if pos == len(text):
            return tuple(parts)
        if text[pos] != ".":
            return None
        pos += 1
