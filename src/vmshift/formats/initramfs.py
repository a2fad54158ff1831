"""List the files inside a Linux initramfs without unpacking it anywhere.

An initramfs is a sequence of cpio archives (newc or odc), some plain (early microcode), the rest
compressed with gzip, zstd, xz, lzma, lz4, bzip2. The kernel reads them back to back, skipping
zero padding between them; so does this module. Only member names are collected: nothing from
the guest is ever written to disk or executed.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable

from vmshift.errors import InspectionError

# Decompressed data beyond this is refused: a crafted guest must not exhaust host memory.
MAX_UNPACKED = 1 << 30
_CHUNK = 1 << 20


class InitramfsError(InspectionError):
    """The initramfs could not be read."""


def _gunzip(data: bytes) -> bytes:
    out = bytearray()
    while data:
        d = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        pending = data
        while pending:
            out += d.decompress(pending, MAX_UNPACKED + 1 - len(out))
            pending = d.unconsumed_tail
            if len(out) > MAX_UNPACKED:
                raise InitramfsError("initramfs unpacks to more than 1 GiB")
            if d.eof:
                break
        data = d.unused_data.lstrip(b"\0")
        if not data.startswith(b"\x1f\x8b"):
            break
    return bytes(out)


def _unzstd(data: bytes) -> bytes:
    import zstandard

    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return _read_capped(reader.read)


def _unxz(data: bytes) -> bytes:
    return _read_capped(lzma.LZMAFile(io.BytesIO(data)).read)


def _unbz2(data: bytes) -> bytes:
    return _read_capped(bz2.BZ2File(io.BytesIO(data)).read)


def _unlz4(data: bytes) -> bytes:
    import lz4.block
    import lz4.frame

    if data.startswith(b"\x04\x22\x4d\x18"):
        return _read_capped(lz4.frame.LZ4FrameFile(io.BytesIO(data)).read)
    # The kernel's legacy lz4 format: magic, then (le32 compressed length, block) pairs, each
    # block unpacking to at most 8 MiB.
    out = bytearray()
    pos = 4
    while pos + 4 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "little")
        if size == 0x184C2102:  # a new legacy stream concatenated
            pos += 4
            continue
        if size == 0 or pos + 4 + size > len(data):
            break
        out += lz4.block.decompress(data[pos + 4 : pos + 4 + size], uncompressed_size=8 << 20)
        if len(out) > MAX_UNPACKED:
            raise InitramfsError("initramfs unpacks to more than 1 GiB")
        pos += 4 + size
    return bytes(out)


def _read_capped(read: Callable[[int], bytes]) -> bytes:
    out = bytearray()
    while True:
        chunk = read(_CHUNK)
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > MAX_UNPACKED:
            raise InitramfsError("initramfs unpacks to more than 1 GiB")


_COMPRESSORS: list[tuple[bytes, str, Callable[[bytes], bytes]]] = [
    (b"\x1f\x8b", "gzip", _gunzip),
    (b"\x28\xb5\x2f\xfd", "zstd", _unzstd),
    (b"\xfd7zXZ\x00", "xz", _unxz),
    (b"\x5d\x00\x00", "lzma", _unxz),
    (b"\x02\x21\x4c\x18", "lz4", _unlz4),
    (b"\x04\x22\x4d\x18", "lz4", _unlz4),
    (b"BZh", "bzip2", _unbz2),
]


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _parse_cpio(data: bytes, pos: int, names: list[str]) -> int:
    """Read one cpio archive starting at pos, append member names, return the end offset."""
    while True:
        magic = data[pos : pos + 6]
        if magic in (b"070701", b"070702"):
            header = data[pos : pos + 110]
            if len(header) < 110:
                raise InitramfsError("truncated cpio header")
            try:
                filesize = int(header[54:62], 16)
                namesize = int(header[94:102], 16)
            except ValueError as exc:
                raise InitramfsError("corrupt cpio header") from exc
            name_start = pos + 110
            name = data[name_start : name_start + namesize - 1].decode("utf-8", "replace")
            data_start = _align4(name_start + namesize)
            pos = _align4(data_start + filesize)
        elif magic == b"070707":
            header = data[pos : pos + 76]
            if len(header) < 76:
                raise InitramfsError("truncated cpio header")
            try:
                namesize = int(header[59:65], 8)
                filesize = int(header[65:76], 8)
            except ValueError as exc:
                raise InitramfsError("corrupt cpio header") from exc
            name_start = pos + 76
            name = data[name_start : name_start + namesize - 1].decode("utf-8", "replace")
            pos = name_start + namesize + filesize
        else:
            raise InitramfsError(f"unexpected data at offset {pos} inside a cpio archive")
        if pos > len(data):
            raise InitramfsError("truncated cpio archive")
        if name == "TRAILER!!!":
            return pos
        names.append(name.removeprefix("./").lstrip("/"))


def list_initramfs(data: bytes) -> list[str]:
    """Return the paths (relative, no leading slash) of every member of an initramfs image."""
    names: list[str] = []
    pos = 0
    compressed_seen = False
    while pos < len(data):
        # Archives are padded with NULs to a 4-byte (or 512-byte) boundary.
        while pos < len(data) and data[pos] == 0:
            pos += 1
        if pos >= len(data):
            break
        if data[pos : pos + 6] in (b"070701", b"070702", b"070707"):
            pos = _parse_cpio(data, pos, names)
            continue
        for magic, kind, unpack in _COMPRESSORS:
            if data.startswith(magic, pos):
                try:
                    unpacked = unpack(data[pos:])
                except InitramfsError:
                    raise
                except (
                    OSError,
                    EOFError,
                    ValueError,
                    RuntimeError,
                    lzma.LZMAError,
                    zlib.error,
                ) as exc:
                    raise InitramfsError(f"cannot decompress the {kind} part: {exc}") from exc
                inner = 0
                while inner < len(unpacked):
                    while inner < len(unpacked) and unpacked[inner] == 0:
                        inner += 1
                    if inner >= len(unpacked):
                        break
                    inner = _parse_cpio(unpacked, inner, names)
                compressed_seen = True
                break
        else:
            raise InitramfsError(f"unknown data at offset {pos}: neither cpio nor compressed")
        if compressed_seen:
            # The compressed part runs to the end of the image.
            break
    return names


__all__ = ["InitramfsError", "list_initramfs"]
