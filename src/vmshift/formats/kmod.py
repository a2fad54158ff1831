"""Kernel module files and depmod's text indexes (modules.dep, modules.builtin)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

MODULE_SUFFIXES = (".ko", ".ko.gz", ".ko.xz", ".ko.zst", ".ko.bz2")


def module_name(path: str) -> str | None:
    """virtio_blk for .../virtio_blk.ko.xz; None for anything that is not a module file."""
    base = path.rsplit("/", 1)[-1]
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)].replace("-", "_")
    return None


def module_names(listing: str) -> set[str]:
    """Module names in modules.dep or modules.builtin text."""
    names = set()
    for line in listing.splitlines():
        name = module_name(line.split(":", 1)[0].strip())
        if name:
            names.add(name)
    return names


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep: each module's path (relative to the module directory) -> the paths it needs."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, needs = line.partition(":")
        if sep and path.strip():
            deps[path.strip()] = needs.split()
    return deps


def closure(deps: dict[str, list[str]], wanted: Iterable[str]) -> set[str]:
    """The module paths in wanted and every one they need, directly or not."""
    chosen: set[str] = set()
    todo = list(wanted)
    while todo:
        path = todo.pop()
        if path not in chosen:
            chosen.add(path)
            todo += deps.get(path, [])
    return chosen


def paths_by_name(deps: dict[str, list[str]]) -> dict[str, str]:
    """Module name -> its path, for the modules modules.dep lists."""
    found: dict[str, str] = {}
    for path in deps:
        name = module_name(path)
        if name is not None:
            found.setdefault(name, path)
    return found


def modinfo(module: bytes) -> dict[str, list[str]]:
    """The key=value strings of an uncompressed x86-64 module's .modinfo section (depends,
    alias, license ...), each key's values in order; ValueError if it is not such a module."""
    try:
        if not module.startswith(b"\x7fELF\x02\x01"):
            raise ValueError("not a 64-bit little-endian ELF file")
        shoff = struct.unpack_from("<Q", module, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", module, 0x3A)

        def section(index: int) -> tuple[int, int, int]:
            name, _type, _flags, _addr, offset, size = struct.unpack_from(
                "<IIQQQQ", module, shoff + index * shentsize
            )
            return name, offset, size

        _, names_at, names_size = section(shstrndx)
        names = module[names_at : names_at + names_size]
        for index in range(shnum):
            name, offset, size = section(index)
            if names[name : names.find(b"\0", name)] == b".modinfo":
                info: dict[str, list[str]] = {}
                for item in module[offset : offset + size].split(b"\0"):
                    key, sep, value = item.decode(errors="replace").partition("=")
                    if sep:
                        info.setdefault(key, []).append(value)
                return info
    except struct.error as exc:
        raise ValueError(f"truncated ELF file: {exc}") from exc
    raise ValueError("no .modinfo section")
