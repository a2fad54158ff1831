"""Registry values as Python objects, and the bytes a hive stores for them.

The Python type picks the registry type: str -> REG_SZ, `ExpandSz` -> REG_EXPAND_SZ,
int -> REG_DWORD, `Qword` -> REG_QWORD, list/tuple of str -> REG_MULTI_SZ, bytes -> REG_BINARY,
`RawValue` -> whatever type it names. Strings are UTF-16LE and NUL-terminated, as Windows writes
them. Decoding gives back the same Python type, so `decode_value(*encode_value(v)) == v`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias


class RegType(IntEnum):
    NONE = 0
    SZ = 1
    EXPAND_SZ = 2
    BINARY = 3
    DWORD = 4
    DWORD_BIG_ENDIAN = 5
    LINK = 6
    MULTI_SZ = 7
    RESOURCE_LIST = 8
    FULL_RESOURCE_DESCRIPTOR = 9
    RESOURCE_REQUIREMENTS_LIST = 10
    QWORD = 11


@dataclass(frozen=True)
class ExpandSz:
    """A REG_EXPAND_SZ string: Windows expands %Variables% in it when it is read."""

    text: str


@dataclass(frozen=True)
class Qword:
    """A REG_QWORD: a plain int always becomes a REG_DWORD, so 64-bit values must say so."""

    value: int


@dataclass(frozen=True)
class RawValue:
    """A value kept as stored: a type with no Python mapping (REG_LINK, REG_DWORD_BIG_ENDIAN,
    the resource lists), or data too short for its type."""

    type: int
    data: bytes


RegData: TypeAlias = str | int | list[str] | tuple[str, ...] | bytes | ExpandSz | Qword | RawValue


def _utf16z(text: str) -> bytes:
    return (text + "\0").encode("utf-16-le")


def encode_value(value: RegData) -> tuple[int, bytes]:
    """The registry type (a `RegType`, or any int for a `RawValue`) and bytes that store `value`."""
    if isinstance(value, bool):
        # bool is an int; refusing it keeps a True from silently turning into DWORD 1.
        raise TypeError("registry values cannot be bool; use 0 or 1")
    if isinstance(value, str):
        return RegType.SZ, _utf16z(value)
    if isinstance(value, ExpandSz):
        return RegType.EXPAND_SZ, _utf16z(value.text)
    if isinstance(value, int):
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"REG_DWORD out of range: {value}")
        return RegType.DWORD, struct.pack("<I", value)
    if isinstance(value, Qword):
        if not 0 <= value.value <= 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"REG_QWORD out of range: {value.value}")
        return RegType.QWORD, struct.pack("<Q", value.value)
    if isinstance(value, bytes):
        return RegType.BINARY, value
    if isinstance(value, RawValue):
        return value.type, value.data
    if isinstance(value, list | tuple):
        if any(not s or "\0" in s for s in value):
            # An empty string would end the list early when Windows reads it back.
            raise ValueError("REG_MULTI_SZ strings must be non-empty and contain no NUL")
        return RegType.MULTI_SZ, b"".join(_utf16z(s) for s in value) + _utf16z("")
    raise TypeError(f"no registry type for {type(value).__name__}")


def _utf16(data: bytes) -> str:
    # Guests do store odd-length strings; the stray byte carries no character.
    return data[: len(data) & ~1].decode("utf-16-le", errors="replace")


def decode_value(reg_type: int, data: bytes) -> RegData:
    """The Python value for stored bytes; a REG_MULTI_SZ always comes back as a list.

    Data that does not fit its declared type (a 2-byte DWORD, say) comes back as a `RawValue`
    rather than an exception: hives from real guests contain such values.
    """
    if reg_type == RegType.SZ:
        return _utf16(data).split("\0", 1)[0]
    if reg_type == RegType.EXPAND_SZ:
        return ExpandSz(_utf16(data).split("\0", 1)[0])
    if reg_type == RegType.DWORD and len(data) >= 4:
        return int(struct.unpack_from("<I", data)[0])
    if reg_type == RegType.QWORD and len(data) >= 8:
        return Qword(int(struct.unpack_from("<Q", data)[0]))
    if reg_type == RegType.BINARY:
        return data
    if reg_type == RegType.MULTI_SZ:
        strings: list[str] = []
        for s in _utf16(data).split("\0"):
            if not s:
                break
            strings.append(s)
        return strings
    return RawValue(reg_type, data)
