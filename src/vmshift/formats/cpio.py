"""cpio archives as the Linux kernel unpacks them into its initramfs: newc (and odc) members.

Reading collects each member's name, type and, for small ones, content; writing makes one
uncompressed newc archive. Nothing read here is ever written to disk or executed.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

from vmshift.errors import InspectionError

TRAILER = "TRAILER!!!"
# Contents kept for members up to this size (configuration, module lists, symlink targets).
KEEP_DATA = 256 << 10
# GNU cpio pads an archive to its 512-byte block size; the kernel skips the zeros.
_BLOCK = 512


class CpioError(InspectionError):
    """A cpio archive could not be read."""


@dataclass(frozen=True)
class CpioEntry:
    path: str  # relative to the archive root, no leading slash
    mode: int  # full st_mode, file type included
    data: bytes | None = b""  # contents, or a symlink's target; None: read, but too big to keep
    size: int = -1  # bytes of contents; -1: len(data)

    @property
    def length(self) -> int:
        return self.size if self.size >= 0 else len(self.data or b"")

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


def directory(path: str) -> CpioEntry:
    return CpioEntry(path, stat.S_IFDIR | 0o755)


def regular(path: str, data: bytes, perm: int = 0o644) -> CpioEntry:
    return CpioEntry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> CpioEntry:
    return CpioEntry(path, stat.S_IFLNK | 0o777, target.encode())


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _align4(n: int) -> int:
    return (n + 3) & ~3


def newc_archive(entries: Iterable[CpioEntry]) -> bytes:
    """One uncompressed newc archive holding `entries` in order, trailer and padding added."""
    out = bytearray()
    for ino, entry in enumerate([*entries, CpioEntry(TRAILER, 0)], start=1):
        name = entry.path.encode()
        data = entry.data or b""
        nlink = 2 if entry.is_dir else 1
        inode = 0 if entry.path == TRAILER else ino
        fields = (inode, entry.mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        header = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
        out += header + name + b"\0"
        out += b"\0" * _pad4(len(header) + len(name) + 1)
        out += data + b"\0" * _pad4(len(data))
    out += b"\0" * ((_BLOCK - len(out) % _BLOCK) % _BLOCK)
    return bytes(out)


def _field(header: bytes, start: int, end: int, base: int) -> int:
    try:
        return int(header[start:end], base)
    except ValueError as exc:
        raise CpioError("corrupt cpio header") from exc


def read_archive(data: bytes, pos: int, out: list[CpioEntry], keep: int = KEEP_DATA) -> int:
    """Read one archive starting at pos up to its trailer; append its members (the contents
    of those up to keep bytes); return its end."""
    while True:
        magic = data[pos : pos + 6]
        if magic in (b"070701", b"070702"):
            header = data[pos : pos + 110]
            if len(header) < 110:
                raise CpioError("truncated cpio header")
            mode = _field(header, 14, 22, 16)
            size = _field(header, 54, 62, 16)
            namesize = _field(header, 94, 102, 16)
            name_start = pos + 110
            data_start = _align4(name_start + namesize)
            end = _align4(data_start + size)
        elif magic == b"070707":
            header = data[pos : pos + 76]
            if len(header) < 76:
                raise CpioError("truncated cpio header")
            mode = _field(header, 18, 24, 8)
            namesize = _field(header, 59, 65, 8)
            size = _field(header, 65, 76, 8)
            name_start = pos + 76
            data_start = name_start + namesize
            end = data_start + size
        else:
            raise CpioError(f"unexpected data at offset {pos} inside a cpio archive")
        if data_start + size > len(data):
            raise CpioError("truncated cpio archive")
        name = data[name_start : name_start + namesize - 1].decode("utf-8", "surrogateescape")
        pos = end
        if name == TRAILER:
            return min(pos, len(data))
        content = data[data_start : data_start + size] if size <= keep else None
        out.append(CpioEntry(name.removeprefix("./").lstrip("/"), mode, content, size))


__all__ = [
    "TRAILER",
    "CpioEntry",
    "CpioError",
    "directory",
    "newc_archive",
    "read_archive",
    "regular",
    "symlink",
]
