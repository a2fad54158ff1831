"""Initramfs images in the format the kernel unpacks: newc cpio archives, each optionally
compressed, concatenated.

Real distributions put an uncompressed "early" archive (CPU microcode) in front of the
compressed main one, so the images built here do too when asked; an inspector that stops
after the first archive would never see the modules.
"""

from __future__ import annotations

import gzip
import lzma
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import zstandard

# GNU cpio pads the whole archive to its 512-byte block size; the kernel skips the zeros.
_BLOCK = 512
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    path: str  # relative to the archive root, no leading slash
    mode: int  # full st_mode, file type included
    data: bytes = b""  # file contents, or the target of a symlink


def directory(path: str) -> CpioEntry:
    return CpioEntry(path, stat.S_IFDIR | 0o755)


def regular(path: str, data: bytes, perm: int = 0o644) -> CpioEntry:
    return CpioEntry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> CpioEntry:
    return CpioEntry(path, stat.S_IFLNK | 0o777, target.encode())


def with_parents(entries: Iterable[CpioEntry]) -> list[CpioEntry]:
    """Add a directory entry before the first entry below each directory not yet listed, the
    order `find | cpio` produces; the kernel refuses to create a file in a missing directory."""
    out: list[CpioEntry] = []
    seen: set[str] = set()
    for entry in entries:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in seen:
                seen.add(parent)
                out.append(directory(parent))
        if entry.path not in seen:
            seen.add(entry.path)
            out.append(entry)
    return out


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _header(ino: int, entry: CpioEntry, name: bytes) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0, 0, 0, len(name) + 1, 0)
    return b"070701" + b"".join(f"{v:08X}".encode() for v in fields)


def newc_archive(entries: Iterable[CpioEntry]) -> bytes:
    """One uncompressed newc archive holding `entries` in order, trailer and padding added."""
    out = bytearray()
    for ino, entry in enumerate([*entries, CpioEntry(_TRAILER, 0)], start=1):
        name = entry.path.encode()
        hdr = _header(0 if entry.path == _TRAILER else ino, entry, name)
        out += hdr + name + b"\0"
        out += b"\0" * _pad4(len(hdr) + len(name) + 1)
        out += entry.data + b"\0" * _pad4(len(entry.data))
    out += b"\0" * ((_BLOCK - len(out) % _BLOCK) % _BLOCK)
    return bytes(out)


def compress(data: bytes, method: str) -> bytes:
    """Compress the way the initramfs tools do; the kernel's xz decoder only accepts CRC32."""
    if method == "none":
        return data
    if method == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if method == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if method == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    raise ValueError(f"unknown initramfs compression {method!r}")


def image(segments: Sequence[tuple[str, Sequence[CpioEntry]]]) -> bytes:
    """Concatenate archives, each (compression, entries), the way the kernel expects them."""
    return b"".join(compress(newc_archive(with_parents(entries)), how) for how, entries in segments)
