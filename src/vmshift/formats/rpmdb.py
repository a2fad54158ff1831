"""The packages of an rpm database in sqlite form (rpmdb.sqlite: RHEL 9, Fedora 33+), listed
the way libguestfs 1.48's inspect_list_applications2 lists them.

libguestfs runs librpm chrooted into the guest and keeps, for each header the database
iterates over (gpg-pubkey entries included), its NAME, EPOCH (0 when absent), VERSION and
RELEASE; it then sorts them by name with stable sorts, after reversing the iteration order, so
packages of one name (kernels) come newest-installed first. The database is one table,
Packages(hnum, blob), each blob an rpm header as headerExport writes it: the index length and
data length (big-endian u32), then 16-byte index entries (tag, type, offset, count), then the
data they point into.

The file is read from bytes in memory (sqlite's deserialize): nothing of the guest is written
on the host. A database in WAL mode says so in its header; with its -wal file empty or absent
(the caller checks) the main file holds everything, and is read as a rollback-journal one.
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass

SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_VERSION = 18  # header bytes 18 and 19: file format write and read version (2 for WAL)
_NAME, _VERSION, _RELEASE, _EPOCH = 1000, 1001, 1002, 1003
_INT32, _STRING = 4, 6


class RpmdbError(Exception):
    """The database or one of its headers is not what this module reads."""


@dataclass(frozen=True)
class RpmPackage:
    name: str
    epoch: int
    version: str
    release: str


def _index(blob: bytes) -> tuple[dict[int, tuple[int, int, int]], int]:
    """tag -> (type, offset of its data in blob, count), the first entry of each tag."""
    if len(blob) < 8:
        raise RpmdbError("a header shorter than its lengths")
    count, data_len = struct.unpack_from(">II", blob, 0)
    data = 8 + 16 * count
    if data + data_len > len(blob):
        raise RpmdbError("a header longer than its blob")
    found: dict[int, tuple[int, int, int]] = {}
    for i in range(count):
        tag, kind, offset, n = struct.unpack_from(">iiii", blob, 8 + 16 * i)
        if not 0 <= offset < data_len:
            raise RpmdbError(f"tag {tag} points outside the header")
        found.setdefault(tag, (kind, data + offset, n))
    return found, data + data_len


def header_package(blob: bytes) -> RpmPackage:
    """NAME, EPOCH, VERSION and RELEASE of one header."""
    index, end = _index(blob)

    def string(tag: int) -> str:
        kind, at, _ = index.get(tag, (0, 0, 0))
        stop = blob.find(b"\x00", at, end)
        if kind != _STRING or stop < 0:
            raise RpmdbError(f"tag {tag} is missing or not a string")
        return blob[at:stop].decode("utf-8", errors="replace")

    epoch = 0
    if _EPOCH in index:
        kind, at, n = index[_EPOCH]
        if kind != _INT32 or n < 1 or at + 4 > end:
            raise RpmdbError("EPOCH is not a number")
        (epoch,) = struct.unpack_from(">i", blob, at)
    return RpmPackage(string(_NAME), epoch, string(_VERSION), string(_RELEASE))


def rpm_packages(database: bytes) -> list[RpmPackage]:
    """Every package the database holds, in libguestfs's order (see above)."""
    if not database.startswith(SQLITE_MAGIC) or len(database) < 100:
        raise RpmdbError("not an sqlite database")
    image = bytearray(database)
    if image[_WAL_VERSION : _WAL_VERSION + 2] == b"\x02\x02":
        image[_WAL_VERSION : _WAL_VERSION + 2] = b"\x01\x01"
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(bytes(image))
        rows = conn.execute("SELECT hnum, blob FROM Packages ORDER BY hnum").fetchall()
    except sqlite3.Error as exc:
        raise RpmdbError(f"the database cannot be read: {exc}") from exc
    finally:
        conn.close()
    packages = [header_package(bytes(blob)) for _, blob in rows]
    packages.reverse()
    packages.sort(key=lambda p: p.name.encode("utf-8", errors="surrogateescape"))
    return packages
