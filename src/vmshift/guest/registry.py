"""Read and edit Windows registry hives with hivex, with typed results and errors.

Hives come out of the guest through libguestfs (downloaded to a private temporary file) and are
parsed by hivex on the host: hivex is a pure data parser, nothing from the guest runs. An edited
hive is committed to its local file; the caller uploads it back into the guest.

Key paths are backslash-separated and relative to the hive root ("ControlSet001\\Services");
names match ignoring case, as they do in Windows.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmshift.errors import ConversionError, InspectionError
from vmshift.guest.regvalue import (
    ExpandSz,
    Qword,
    RawValue,
    RegData,
    RegType,
    decode_value,
    encode_value,
)

__all__ = ["ExpandSz", "Hive", "HiveEditor", "Qword", "RawValue", "RegData", "RegValue"]

REG_SZ = RegType.SZ
REG_EXPAND_SZ = RegType.EXPAND_SZ
REG_BINARY = RegType.BINARY
REG_DWORD = RegType.DWORD
REG_DWORD_BIG_ENDIAN = RegType.DWORD_BIG_ENDIAN
REG_MULTI_SZ = RegType.MULTI_SZ
REG_QWORD = RegType.QWORD

# The plain view readers get: expandable strings read as str, QWORDs as int.
RegValue = str | int | bytes | list[str]


def open_hivex(path: Path, *, write: bool = False) -> Any:
    """A hivex handle on a local hive file; RuntimeError/OSError when it is not a valid hive."""
    import hivex

    class _Hivex(hivex.Hivex):  # type: ignore[misc]
        # hivex.Hivex.__del__ assumes __init__ succeeded, so every hive that fails to open (a
        # corrupt one from a guest, say) would print an ignored AttributeError at collection.
        def __del__(self) -> None:
            if hasattr(self, "_o"):
                super().__del__()

    return _Hivex(str(path), write=write)


def split_key_path(path: str) -> list[str]:
    """ "A\\B\\C" -> ["A", "B", "C"]; leading and trailing backslashes are ignored."""
    stripped = path.strip("\\")
    parts = stripped.split("\\") if stripped else []
    if any(not p for p in parts):
        raise ValueError(f"empty component in registry path {path!r}")
    return parts


def plain(value: RegData) -> RegValue:
    """The reader's view of a decoded value."""
    if isinstance(value, ExpandSz):
        return value.text
    if isinstance(value, Qword):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, RawValue):
        if value.type == RegType.DWORD_BIG_ENDIAN and len(value.data) >= 4:
            return int(struct.unpack_from(">I", value.data)[0])
        return value.data
    return value


class Hive:
    """A read-only view of one hive file."""

    _write = False

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._h: Any = open_hivex(path, write=self._write)
        except ImportError as exc:
            raise InspectionError("the hivex Python binding (python3-hivex) is missing") from exc
        except (RuntimeError, OSError) as exc:
            raise InspectionError(f"cannot parse registry hive {path.name}: {exc}") from exc

    def node(self, path: str) -> int | None:
        """The node at a backslash-separated path below the root, or None if absent."""
        node: int = self._h.root()
        for part in split_key_path(path):
            child = self._h.node_get_child(node, part)
            if not child:
                return None
            node = child
        return node

    def subkeys(self, node: int) -> Iterator[tuple[str, int]]:
        for child in self._h.node_children(node):
            yield self._h.node_name(child), child

    def _find_value(self, node: int, name: str) -> int | None:
        # The binding raises instead of returning 0 when a value is missing, so look it up here.
        wanted = name.casefold()
        for val in self._h.node_values(node):
            if self._h.value_key(val).casefold() == wanted:
                return int(val)
        return None

    def typed_value(self, node: int, name: str) -> RegData | None:
        """A value as stored, its registry type kept (ExpandSz, Qword, RawValue ...)."""
        val = self._find_value(node, name)
        if val is None:
            return None
        kind, raw = self._h.value_value(val)
        return decode_value(kind, bytes(raw))

    def value(self, node: int, name: str) -> RegValue | None:
        typed = self.typed_value(node, name)
        return None if typed is None else plain(typed)

    def values(self, node: int) -> dict[str, RegData]:
        """Every value of a key, by name as stored, types kept."""
        out: dict[str, RegData] = {}
        for val in self._h.node_values(node):
            kind, raw = self._h.value_value(val)
            out[self._h.value_key(val)] = decode_value(kind, bytes(raw))
        return out

    def get(self, path: str, name: str) -> RegValue | None:
        node = self.node(path)
        return None if node is None else self.value(node, name)

    def get_typed(self, path: str, name: str) -> RegData | None:
        node = self.node(path)
        return None if node is None else self.typed_value(node, name)

    def get_str(self, path: str, name: str) -> str | None:
        value = self.get(path, name)
        return value if isinstance(value, str) else None

    def get_int(self, path: str, name: str) -> int | None:
        value = self.get(path, name)
        return value if isinstance(value, int) else None


class HiveEditor(Hive):
    """One hive file opened for writing; changes reach the file at commit()."""

    _write = True

    def _existing(self, path: str) -> int:
        node = self.node(path)
        if node is None:
            raise ConversionError(f"registry key {path} not found in {self.path.name}")
        return node

    def ensure_key(self, path: str) -> int:
        """The key at path, creating it and any missing parents."""
        node: int = self._h.root()
        for part in split_key_path(path):
            child = self._h.node_get_child(node, part)
            node = child if child else self._h.node_add_child(node, part)
        return node

    def set_value(self, path: str, name: str, value: RegData) -> None:
        """Set one value (name "" is the key's default), creating the key; others are kept."""
        reg_type, data = encode_value(value)
        node = self.ensure_key(path)
        existing = self._find_value(node, name)
        # A replaced value keeps the name as stored, as Windows does.
        key = name if existing is None else str(self._h.value_key(existing))
        self._h.node_set_value(node, {"key": key, "t": int(reg_type), "value": data})

    def delete_value(self, path: str, name: str) -> None:
        """Remove one value of a key; absent values and keys are not an error."""
        node = self.node(path)
        if node is None or self._find_value(node, name) is None:
            return
        wanted = name.casefold()
        kept = []
        for val in self._h.node_values(node):
            key = self._h.value_key(val)
            if key.casefold() != wanted:
                kind, raw = self._h.value_value(val)
                kept.append({"key": key, "t": kind, "value": bytes(raw)})
        # hivex has no call to drop one value: the key's values are replaced as a whole.
        self._h.node_set_values(node, kept)

    def delete_key(self, path: str) -> None:
        """Remove a key with everything below it; an absent key is not an error."""
        if not split_key_path(path):
            raise ValueError("the root key cannot be deleted")
        node = self.node(path)
        if node is not None:
            self._h.node_delete_child(node)

    def commit(self) -> None:
        try:
            self._h.commit(None)
        except RuntimeError as exc:
            raise ConversionError(f"cannot write registry hive {self.path.name}: {exc}") from exc
