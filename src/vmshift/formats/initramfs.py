"""Read a Linux initramfs the way the kernel unpacks it, without unpacking it anywhere.

An initramfs is a sequence of cpio archives (newc or odc), some plain (early microcode), the rest
compressed with gzip, zstd, xz, lzma, lz4, bzip2. The kernel reads them back to back: it skips
zero padding, unpacks a plain archive up to its trailer, and a compressed one up to the end of
its stream, then goes on with whatever follows; a later member of the same name replaces an
earlier one. So does this module, and it records where each part starts and ends, so that an
archive can be appended after the last one (convert/linux/initramfs_append.py). Nothing from the
guest is ever written to disk or executed.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vmshift.errors import InspectionError
from vmshift.formats.cpio import CpioEntry, CpioError, read_archive

# Decompressed data beyond this is refused: a crafted guest must not exhaust host memory.
MAX_UNPACKED = 1 << 30
_CHUNK = 1 << 20
# Compressed input is fed this much at a time, so that one step cannot unpack to much more
# than the limit before it is checked (gzip expands at most ~1000x, zstd and xz more).
_FEED = 4 << 10
# Streams whose end the kernel finds from the format itself, so that what follows them is
# unpacked as a new archive. lz4's legacy format has no end mark (the kernel reads it to the
# end of the image), and lzma/bzip2 images are rare enough not to be trusted with an append.
BOUNDED = ("none", "gzip", "zstd", "xz")


class InitramfsError(InspectionError):
    """The initramfs could not be read."""


@dataclass(frozen=True)
class Segment:
    """One part of the image: a plain cpio archive or a compressed stream of archives."""

    offset: int
    end: int
    compression: str  # none | gzip | zstd | xz | lzma | lz4 | bzip2


@dataclass(frozen=True)
class InitramfsImage:
    size: int
    segments: tuple[Segment, ...]
    entries: tuple[CpioEntry, ...]  # in unpack order
    junk_at: int | None = None  # offset of trailing data that is neither cpio nor compressed

    def names(self) -> list[str]:
        return [e.path for e in self.entries]

    def effective(self) -> dict[str, CpioEntry]:
        """What the unpacked root holds: the last member of each name."""
        return {e.path: e for e in self.entries}

    def append_blocker(self) -> str | None:
        """Why an archive appended after this image might not be unpacked; None if it will."""
        if self.junk_at is not None:
            return f"unknown data at offset {self.junk_at}"
        if not self.segments:
            return "the image is empty"
        last = self.segments[-1]
        if last.compression not in BOUNDED:
            return f"its last part is {last.compression}, whose end the kernel does not find"
        return None


class _Decompressor(Protocol):
    eof: bool
    unused_data: bytes

    def decompress(self, data: bytes) -> bytes: ...


def _stream(make: Callable[[], _Decompressor], data: memoryview) -> tuple[bytes, int]:
    """Unpack one stream at the start of data; (its contents, bytes of data it took)."""
    d = make()
    out: list[bytes] = []
    total = fed = 0
    while fed < len(data) and not d.eof:
        piece = bytes(data[fed : fed + _FEED])
        fed += len(piece)
        chunk = d.decompress(piece)
        total += len(chunk)
        if total > MAX_UNPACKED:
            raise InitramfsError("initramfs unpacks to more than 1 GiB")
        out.append(chunk)
    if not d.eof:
        raise InitramfsError("truncated compressed stream")
    return b"".join(out), fed - len(d.unused_data)


def _gzip() -> _Decompressor:
    return zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # type: ignore[return-value]


def _zstd() -> _Decompressor:
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()  # type: ignore[return-value]


def _xz() -> _Decompressor:
    return lzma.LZMADecompressor(lzma.FORMAT_XZ)  # type: ignore[return-value]


def _lzma() -> _Decompressor:
    return lzma.LZMADecompressor(lzma.FORMAT_ALONE)  # type: ignore[return-value]


def _bzip2() -> _Decompressor:
    return bz2.BZ2Decompressor()  # type: ignore[return-value]


def _read_capped(read: Callable[[int], bytes]) -> bytes:
    out = bytearray()
    while True:
        chunk = read(_CHUNK)
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > MAX_UNPACKED:
            raise InitramfsError("initramfs unpacks to more than 1 GiB")


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


def _lz4_to_end(data: memoryview) -> tuple[bytes, int]:
    return _unlz4(bytes(data)), len(data)


_STREAMS: list[tuple[bytes, str, Callable[[memoryview], tuple[bytes, int]]]] = [
    (b"\x1f\x8b", "gzip", lambda d: _stream(_gzip, d)),
    (b"\x28\xb5\x2f\xfd", "zstd", lambda d: _stream(_zstd, d)),
    (b"\xfd7zXZ\x00", "xz", lambda d: _stream(_xz, d)),
    (b"\x5d\x00\x00", "lzma", lambda d: _stream(_lzma, d)),
    (b"\x02\x21\x4c\x18", "lz4", _lz4_to_end),
    (b"\x04\x22\x4d\x18", "lz4", _lz4_to_end),
    (b"BZh", "bzip2", lambda d: _stream(_bzip2, d)),
]
_ERRORS = (OSError, EOFError, ValueError, RuntimeError, lzma.LZMAError, zlib.error)


def decompress(data: bytes) -> tuple[str, bytes] | None:
    """(compression, contents) of the stream data starts with; None when no known one does."""
    for magic, kind, unpack in _STREAMS:
        if data.startswith(magic):
            try:
                return kind, unpack(memoryview(data))[0]
            except _ERRORS as exc:
                raise InitramfsError(f"cannot decompress the {kind} stream: {exc}") from exc
    return None


def _archives(data: bytes, out: list[CpioEntry]) -> None:
    """Every cpio archive in data (a decompressed stream), zero padding between them."""
    pos = 0
    while pos < len(data):
        while pos < len(data) and data[pos] == 0:
            pos += 1
        if pos < len(data):
            pos = read_archive(data, pos, out)


def read_initramfs(data: bytes) -> InitramfsImage:
    """Every member of an image, in unpack order, and the parts it is made of."""
    view = memoryview(data)
    entries: list[CpioEntry] = []
    segments: list[Segment] = []
    pos = 0
    try:
        while pos < len(data):
            while pos < len(data) and data[pos] == 0:
                pos += 1
            if pos >= len(data):
                break
            if data[pos : pos + 6] in (b"070701", b"070702", b"070707"):
                end = read_archive(data, pos, entries)
                segments.append(Segment(pos, end, "none"))
                pos = end
                continue
            for magic, kind, unpack in _STREAMS:
                if data.startswith(magic, pos):
                    try:
                        unpacked, used = unpack(view[pos:])
                    except InitramfsError:
                        raise
                    except _ERRORS as exc:
                        raise InitramfsError(f"cannot decompress the {kind} part: {exc}") from exc
                    _archives(unpacked, entries)
                    segments.append(Segment(pos, pos + used, kind))
                    pos += used
                    break
            else:
                if not segments:
                    raise InitramfsError(
                        f"unknown data at offset {pos}: neither cpio nor compressed"
                    )
                return InitramfsImage(len(data), tuple(segments), tuple(entries), junk_at=pos)
    except CpioError as exc:
        raise InitramfsError(str(exc)) from exc
    return InitramfsImage(len(data), tuple(segments), tuple(entries))


def list_initramfs(data: bytes) -> list[str]:
    """Return the paths (relative, no leading slash) of every member of an initramfs image."""
    return read_initramfs(data).names()


__all__ = [
    "InitramfsError",
    "InitramfsImage",
    "Segment",
    "decompress",
    "list_initramfs",
    "read_initramfs",
]
