"""Read Windows registry hives with hivex, with typed results and errors.

Hives come out of the guest through libguestfs (downloaded to a private temporary file) and are
parsed by hivex on the host: hivex is a pure data parser, nothing from the guest runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmshift.errors import InspectionError

REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_DWORD_BIG_ENDIAN = 5
REG_MULTI_SZ = 7
REG_QWORD = 11

RegValue = str | int | bytes | list[str]


class Hive:
    """A read-only view of one hive file."""

    def __init__(self, path: Path) -> None:
        try:
            import hivex
        except ImportError as exc:
            raise InspectionError("the hivex Python binding (python3-hivex) is missing") from exc
        try:
            self._h: Any = hivex.Hivex(str(path))
        except RuntimeError as exc:
            raise InspectionError(f"cannot parse registry hive {path.name}: {exc}") from exc

    def node(self, path: str) -> int | None:
        """The node at a backslash-separated path below the root, or None if absent."""
        node: int = self._h.root()
        for part in (p for p in path.split("\\") if p):
            child = self._h.node_get_child(node, part)
            if not child:
                return None
            node = child
        return node

    def subkeys(self, node: int) -> Iterator[tuple[str, int]]:
        for child in self._h.node_children(node):
            yield self._h.node_name(child), child

    def value(self, node: int, name: str) -> RegValue | None:
        # The binding raises instead of returning 0 when a value is missing, so look it up here.
        wanted = name.lower()
        val = next(
            (v for v in self._h.node_values(node) if self._h.value_key(v).lower() == wanted), None
        )
        if not val:
            return None
        kind, _length = self._h.value_type(val)
        try:
            if kind in (REG_SZ, REG_EXPAND_SZ):
                return str(self._h.value_string(val))
            if kind in (REG_DWORD, REG_DWORD_BIG_ENDIAN):
                return int(self._h.value_dword(val))
            if kind == REG_QWORD:
                return int(self._h.value_qword(val))
            if kind == REG_MULTI_SZ:
                strings = [str(s) for s in self._h.value_multiple_strings(val)]
                # The binding reports the list terminator as a trailing empty string.
                while strings and strings[-1] == "":
                    strings.pop()
                return strings
        except RuntimeError:
            # Malformed data of a declared type: fall back to the raw bytes.
            pass
        _kind, raw = self._h.value_value(val)
        return bytes(raw)

    def get(self, path: str, name: str) -> RegValue | None:
        node = self.node(path)
        return None if node is None else self.value(node, name)

    def get_str(self, path: str, name: str) -> str | None:
        value = self.get(path, name)
        return value if isinstance(value, str) else None

    def get_int(self, path: str, name: str) -> int | None:
        value = self.get(path, name)
        return value if isinstance(value, int) else None
