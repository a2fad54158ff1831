"""Initramfs images in the format the kernel unpacks: newc cpio archives, each optionally
compressed, concatenated.

Real distributions put an uncompressed "early" archive (CPU microcode) in front of the
compressed main one, so the images built here do too when asked; an inspector that stops
after the first archive would never see the modules.
"""

from __future__ import annotations

import gzip
import lzma
from collections.abc import Iterable, Sequence

import zstandard

from vmshift.formats.cpio import CpioEntry, directory, newc_archive, regular, symlink

__all__ = ["CpioEntry", "compress", "image", "regular", "symlink", "with_parents"]


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
