"""VMware .vmx files: `key = "value"` lines, read into a case-insensitive mapping.

VMware treats keys case-insensitively (`memsize` and `memSize` are one setting), so keys are
normalised to lower case; a key given twice keeps its last value, as VMware does. Inside a
value VMware escapes awkward bytes as `|XX` (two hex digits): `|22` is a double quote, `|7C` a
pipe, `|0A` a newline. The file may say which encoding it uses in a `.encoding` line.

This module only parses; what the settings mean is the vmx source's business.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import overload

from vmshift.errors import SourceError


class VmxError(SourceError):
    """A .vmx file that cannot be parsed, or a setting in it with an unusable value."""

    def __init__(
        self, path: str, problem: str, *, line: int | None = None, hint: str | None = None
    ) -> None:
        where = f"{path}: line {line}: " if line is not None else f"{path}: "
        super().__init__(where + problem, hint=hint)
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class VmxEntry:
    value: str
    line: int  # 1-based, for error messages about the value


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

# Keys are dotted/colon-separated words (scsi0:1.fileName, uuid.bios, .encoding); anything
# without spaces, quotes, '=' or '#' is accepted so unusual but harmless keys do not fail a run.
_LINE = re.compile(r'^(?P<key>[^\s="#]+)\s*=\s*(?P<rest>.*)$')
_ESCAPES = re.compile(r"(?:\|[0-9A-Fa-f]{2})+")
_ENCODING = re.compile(
    rb'^[ \t]*\.encoding[ \t]*=[ \t]*"([^"\r\n]*)"', re.MULTILINE | re.IGNORECASE
)


@dataclass(frozen=True)
class VmxFile:
    """The settings of one .vmx file; keys are lower case."""

    path: str
    entries: Mapping[str, VmxEntry] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...
    def get(self, key: str, default: str | None = None) -> str | None:
        entry = self.entries.get(key.lower())
        return entry.value if entry is not None else default

    def line_of(self, key: str) -> int | None:
        entry = self.entries.get(key.lower())
        return entry.line if entry is not None else None

    def get_bool(self, key: str, default: bool = False) -> bool:
        """TRUE/true/yes/1 or FALSE/false/no/0; absent (or empty) means default."""
        entry = self.entries.get(key.lower())
        if entry is None or not entry.value.strip():
            return default
        value = parse_bool(entry.value)
        if value is None:
            raise VmxError(
                self.path, f'{key} = "{entry.value}": expected TRUE or FALSE', line=entry.line
            )
        return value

    @overload
    def get_int(self, key: str) -> int | None: ...
    @overload
    def get_int(self, key: str, default: int) -> int: ...
    def get_int(self, key: str, default: int | None = None) -> int | None:
        """A decimal (or 0x hexadecimal) integer; absent (or empty) means default."""
        entry = self.entries.get(key.lower())
        if entry is None or not entry.value.strip():
            return default
        value = parse_int(entry.value)
        if value is None:
            raise VmxError(
                self.path, f'{key} = "{entry.value}": expected a whole number', line=entry.line
            )
        return value


def parse_bool(value: str) -> bool | None:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def parse_int(value: str) -> int | None:
    text = value.strip()
    try:
        if text.lower().startswith(("0x", "-0x")):
            return int(text, 16)
        return int(text, 10)
    except ValueError:
        return None


def unescape(value: str, encoding: str = "utf-8") -> str:
    """Undo VMware's `|XX` escapes; runs of escaped bytes are decoded together so an escaped
    multi-byte character comes back whole."""

    def bytes_of(match: re.Match[str]) -> str:
        raw = bytes.fromhex(match.group(0).replace("|", ""))
        return raw.decode(encoding, errors="replace")

    return _ESCAPES.sub(bytes_of, value)


def detect_encoding(data: bytes) -> str | None:
    """The encoding a `.encoding = "..."` line declares, if any (the line itself is ASCII)."""
    match = _ENCODING.search(data)
    return match.group(1).decode("ascii", errors="replace").strip() if match else None


def decode_vmx(data: bytes, *, path: str) -> tuple[str, str]:
    """Decode a .vmx file's bytes; return (text, encoding used)."""
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\0" in data:
        raise VmxError(path, "not a VMX file (binary data)")
    declared = detect_encoding(data)
    if declared:
        try:
            codec = codecs.lookup(declared).name
        except LookupError as exc:
            raise VmxError(path, f'unknown .encoding "{declared}"') from exc
        try:
            return data.decode(codec), codec
        except UnicodeDecodeError as exc:
            raise VmxError(path, f"not valid {declared} text (byte {exc.start})") from exc
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        # Files written before VMware added .encoding use the host's 8-bit code page; latin-1
        # decodes any byte, so names may look odd but parsing never fails for this reason.
        return data.decode("latin-1"), "latin-1"


def parse_vmx(text: str, *, path: str = "<vmx>", encoding: str = "utf-8") -> VmxFile:
    """Parse the text of a .vmx file. Raise VmxError naming path and line for a bad line."""
    entries: dict[str, VmxEntry] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise VmxError(path, f'expected key = "value", got: {line}', line=number)
        key = match.group("key").lower()
        value = _value(match.group("rest"), path=path, number=number)
        entries[key] = VmxEntry(unescape(value, encoding), number)
    return VmxFile(path=path, entries=entries)


def load_vmx(data: bytes, *, path: str) -> VmxFile:
    """Decode and parse a .vmx file's bytes."""
    text, encoding = decode_vmx(data, path=path)
    return parse_vmx(text, path=path, encoding=encoding)


def _value(rest: str, *, path: str, number: int) -> str:
    rest = rest.strip()
    if not rest.startswith('"'):
        # Hand-edited files sometimes drop the quotes; VMware itself accepts that.
        return rest.split("#", 1)[0].strip()
    end = rest.find('"', 1)
    if end < 0:
        raise VmxError(path, f"unterminated quoted value: {rest}", line=number)
    trailing = rest[end + 1 :].strip()
    if trailing and not trailing.startswith("#"):
        raise VmxError(path, f"unexpected text after the quoted value: {trailing}", line=number)
    return rest[1:end]
