"""Windows registry hives: create an empty one from nothing, then read and write it with hivex.

hivex edits existing hives but cannot make one, so `empty_hive()` lays out the smallest hive
hivex (and Windows) accept: a "regf" base block and one "hbin" holding the root key ("nk"), its
security descriptor ("sk") and a free cell. Everything after that goes through hivex.

Keys are written as backslash paths relative to the hive root ("ControlSet001\\Services\\atapi");
values are Python objects whose type picks the registry type (see `RegValue`), and reading a value
back gives the same Python type, so `decode_value(*encode_value(v)) == v`. The value encoding
and hivex opening are the product's own (vmshift.guest.regvalue, vmshift.guest.registry).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeAlias

from vmshift.guest.registry import open_hivex, split_key_path
from vmshift.guest.regvalue import (
    ExpandSz,
    Qword,
    RawValue,
    RegData,
    RegType,
    decode_value,
    encode_value,
)

__all__ = [
    "ExpandSz",
    "Qword",
    "RawValue",
    "RegType",
    "RegValue",
    "decode_value",
    "encode_value",
    "split_key_path",
]

# str -> REG_SZ, int -> REG_DWORD, list/tuple of str -> REG_MULTI_SZ, bytes -> REG_BINARY.
RegValue: TypeAlias = RegData


class HiveHandle(Protocol):
    """The part of `hivex.Hivex` we use, typed: nodes and values are opaque non-zero ints."""

    def root(self) -> int: ...
    def node_name(self, node: int) -> str: ...
    def node_children(self, node: int) -> list[int]: ...
    def node_get_child(self, node: int, name: str) -> int | None: ...
    def node_parent(self, node: int) -> int: ...
    def node_values(self, node: int) -> list[int]: ...
    def value_key(self, val: int) -> str: ...
    def value_value(self, val: int) -> tuple[int, bytes]: ...
    def node_add_child(self, parent: int, name: str) -> int: ...
    def node_set_value(self, node: int, val: dict[str, object]) -> None: ...
    def node_delete_child(self, node: int) -> None: ...
    def commit(self, filename: str | None) -> None: ...


# ---------------------------------------------------------------------------------------------
# Creating an empty hive

BASE_BLOCK_SIZE = 4096
HBIN_SIZE = 4096
CHECKSUM_OFFSET = 0x1FC

# Windows FILETIME: 100 ns ticks since 1601. A fixed stamp keeps rebuilt hives byte-identical.
_FILETIME_2024 = (1_704_067_200 + 11_644_473_600) * 10_000_000

_KEY_HIVE_ENTRY = 0x0004
_KEY_NO_DELETE = 0x0008
_KEY_COMP_NAME = 0x0020
_NO_CELL = 0xFFFFFFFF


def base_block_checksum(block: bytes) -> int:
    """XOR of the first 508 bytes of the base block as little-endian 32-bit words."""
    csum = 0
    for (word,) in struct.iter_unpack("<I", block[:CHECKSUM_OFFSET]):
        csum ^= word
    return csum


def _sid(authority: int, *subauthorities: int) -> bytes:
    return (
        struct.pack("<BB", 1, len(subauthorities))
        + authority.to_bytes(6, "big")
        + b"".join(struct.pack("<I", s) for s in subauthorities)
    )


_SID_ADMINISTRATORS = _sid(5, 32, 544)
_SID_SYSTEM = _sid(5, 18)
_SID_EVERYONE = _sid(1, 0)
_KEY_ALL_ACCESS = 0x000F003F
_KEY_READ = 0x00020019


def _ace(mask: int, sid: bytes) -> bytes:
    # ACCESS_ALLOWED_ACE with CONTAINER_INHERIT so new subkeys get the same rights.
    return struct.pack("<BBHI", 0, 0x02, 8 + len(sid), mask) + sid


def security_descriptor() -> bytes:
    """A self-relative descriptor: owner Administrators, group SYSTEM, a three-entry DACL.

    hivex copies the root's "sk" reference into every key it adds, so this one descriptor ends
    up protecting the whole hive; it grants what a freshly installed Windows grants.
    """
    aces = (
        _ace(_KEY_ALL_ACCESS, _SID_ADMINISTRATORS)
        + _ace(_KEY_ALL_ACCESS, _SID_SYSTEM)
        + _ace(_KEY_READ, _SID_EVERYONE)
    )
    dacl = struct.pack("<BBHHH", 2, 0, 8 + len(aces), 3, 0) + aces
    header_len = 20
    owner_off = header_len
    group_off = owner_off + len(_SID_ADMINISTRATORS)
    dacl_off = group_off + len(_SID_SYSTEM)
    se_dacl_present, se_self_relative = 0x0004, 0x8000
    header = struct.pack(
        "<BBHIIII", 1, 0, se_dacl_present | se_self_relative, owner_off, group_off, 0, dacl_off
    )
    return header + _SID_ADMINISTRATORS + _SID_SYSTEM + dacl


def _cell(payload: bytes) -> bytes:
    # Cells are 8-byte aligned; a negative size marks the cell as allocated.
    size = (4 + len(payload) + 7) & ~7
    return struct.pack("<i", -size) + payload.ljust(size - 4, b"\0")


def empty_hive(root_name: str = "ROOT", minor_version: int = 3) -> bytes:
    """The bytes of a valid hive whose root key has no subkeys and no values."""
    name = root_name.encode("ascii")
    root_off = 0x20  # the first cell, right after the hbin header
    nk_size = len(_cell(b"\0" * (0x4C + len(name))))
    sk_off = root_off + nk_size
    nk = (
        b"nk"
        + struct.pack(
            "<HqIIIIIIIIIIIIIIIHH",
            _KEY_HIVE_ENTRY | _KEY_NO_DELETE | _KEY_COMP_NAME,
            _FILETIME_2024,
            0,  # access bits
            _NO_CELL,  # parent: the root has none
            0,  # subkeys
            0,  # volatile subkeys
            _NO_CELL,  # subkey list
            _NO_CELL,  # volatile subkey list
            0,  # values
            _NO_CELL,  # value list
            sk_off,
            _NO_CELL,  # class name
            0,  # largest subkey name
            0,  # largest subkey class name
            0,  # largest value name
            0,  # largest value data
            0,  # work var
            len(name),
            0,  # class name length
        )
        + name
    )
    sd = security_descriptor()
    # A lone "sk" is its own previous and next entry in the hive's ring of descriptors.
    sk = b"sk" + struct.pack("<HIIII", 0, sk_off, sk_off, 1, len(sd)) + sd
    cells = _cell(nk) + _cell(sk)
    free_size = HBIN_SIZE - 0x20 - len(cells)
    cells += struct.pack("<i", free_size) + b"\0" * (free_size - 4)

    hbin_header = b"hbin" + struct.pack("<IIqqI", 0, HBIN_SIZE, 0, _FILETIME_2024, 0)
    hbin = hbin_header + cells
    assert len(hbin) == HBIN_SIZE

    seq = 1
    base = bytearray(BASE_BLOCK_SIZE)
    struct.pack_into(
        "<4sIIqIIIIIII",
        base,
        0,
        b"regf",
        seq,
        seq,  # equal sequence numbers: the hive was written completely
        _FILETIME_2024,
        1,  # major version
        minor_version,
        0,  # primary file
        1,  # direct memory load format
        root_off,
        HBIN_SIZE,  # hive bins data size
        1,  # clustering factor
    )
    struct.pack_into("<I", base, CHECKSUM_OFFSET, base_block_checksum(bytes(base)))
    return bytes(base) + hbin


def new_hive(path: Path, root_name: str = "ROOT") -> HiveHandle:
    """Write an empty hive at `path` and open it for writing."""
    path.write_bytes(empty_hive(root_name))
    return open_hive(path, write=True)


def open_hive(path: Path, *, write: bool = False) -> HiveHandle:
    """Open a hive file; hivex raises RuntimeError (or OSError) when it is not a valid hive."""
    handle: HiveHandle = open_hivex(path, write=write)
    return handle


@contextmanager
def editing(path: Path, *, create: bool = False, root_name: str = "ROOT") -> Iterator[HiveHandle]:
    """Open (or create) a hive for writing and commit it when the block ends without error."""
    h = new_hive(path, root_name) if create else open_hive(path, write=True)
    yield h
    h.commit(None)


# ---------------------------------------------------------------------------------------------
# Keys


def find_key(h: HiveHandle, path: str, start: int | None = None) -> int | None:
    """The node at `path` below `start` (the root by default), or None. Names match ignoring
    case, as they do in Windows."""
    node = h.root() if start is None else start
    for name in split_key_path(path):
        child = h.node_get_child(node, name)
        if not child:
            return None
        node = child
    return node


def set_key(
    h: HiveHandle,
    path: str,
    values: Mapping[str, RegValue] | None = None,
    start: int | None = None,
) -> int:
    """Create the key at `path` (and any missing parents), set `values` on it, return it.

    Values already on the key and not named in `values` are kept.
    """
    node = h.root() if start is None else start
    for name in split_key_path(path):
        child = h.node_get_child(node, name)
        node = child if child else h.node_add_child(node, name)
    for name, value in (values or {}).items():
        set_value(h, node, name, value)
    return node


def set_value(h: HiveHandle, node: int, name: str, value: RegValue) -> None:
    """Set one value; the name "" is the key's default value."""
    reg_type, data = encode_value(value)
    h.node_set_value(node, {"key": name, "t": int(reg_type), "value": data})


def get_value(h: HiveHandle, node: int, name: str) -> RegValue | None:
    """One value by name, ignoring case as Windows does; None when absent."""
    # hivex's own node_get_value raises RuntimeError("Success") for a missing value in the
    # Python binding, which cannot be told apart from a real failure, so look it up ourselves.
    wanted = name.casefold()
    for v in h.node_values(node):
        if h.value_key(v).casefold() == wanted:
            return decode_value(*h.value_value(v))
    return None


def get_values(h: HiveHandle, node: int) -> dict[str, RegValue]:
    """Every value of a key, by name as stored."""
    return {h.value_key(v): decode_value(*h.value_value(v)) for v in h.node_values(node)}


def subkeys(h: HiveHandle, node: int) -> dict[str, int]:
    """The key's children by name as stored."""
    return {h.node_name(c): c for c in h.node_children(node)}


def write_tree(h: HiveHandle, tree: Mapping[str, Mapping[str, RegValue]]) -> None:
    """Create every key of `tree` (path -> values), in order."""
    for path, values in tree.items():
        set_key(h, path, values)


def build_hive(
    path: Path, tree: Mapping[str, Mapping[str, RegValue]], root_name: str = "ROOT"
) -> None:
    """Write a new hive at `path` holding `tree`."""
    with editing(path, create=True, root_name=root_name) as h:
        write_tree(h, tree)


def read_tree(h: HiveHandle, node: int | None = None) -> Iterator[tuple[str, dict[str, RegValue]]]:
    """Every key below `node` (the root by default) as (backslash path, values), parents first."""

    def walk(n: int, prefix: str) -> Iterator[tuple[str, dict[str, RegValue]]]:
        for name, child in subkeys(h, n).items():
            path = f"{prefix}\\{name}" if prefix else name
            yield path, get_values(h, child)
            yield from walk(child, path)

    yield from walk(h.root() if node is None else node, "")
