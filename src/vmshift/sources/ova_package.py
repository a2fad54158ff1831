"""The files of an OVA by normalised relative name: members of a tar or zip archive (listed
and vetted by sources/ova_archive.py), or files of the directory it was unpacked into; and the
names the OVF's hrefs are stored under (chunks, VMware snapshot files).

A gzip/bzip2/xz-compressed tar cannot be read in place, so its vetted members are unpacked
into workdir; a zip member stored compressed is inflated as it is read (the disk module copies
a disk into workdir, size-capped). Members stored as they are (in a plain tar, stored in a zip,
files of a directory) are handed to qemu in place; see Package.uri().
"""

from __future__ import annotations

import json
import posixpath
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vmshift.errors import SourceError
from vmshift.formats.ovf_model import OvfFile
from vmshift.sources.ova_archive import (
    CHUNK,
    Member,
    TarMode,
    extract_tar,
    inflate,
    list_tar,
    list_zip,
)

_COMPRESSED_TARS: dict[bytes, TarMode] = {
    b"\x1f\x8b": "r:gz",
    b"BZh": "r:bz2",
    b"\xfd7zXZ\x00": "r:xz",
}
# VMware exports of a VM with snapshots hold disk1.vmdk.000000000, disk1.vmdk.000000001 ...
# where the OVF names disk1.vmdk; virt-v2v (input_ova.ml, RHBZ#1570407) reads the highest.
_SNAPSHOT = re.compile(r"\.([0-9]+)$")


class Package:
    """The files of an OVA by normalised relative name, whether archive members or files."""

    def __init__(self, label: str, members: dict[str, Member] | None, root: Path | None) -> None:
        self.label = label  # the OVA as the user named it, for messages
        self._members = members
        self._root = root.resolve() if root is not None else None

    def names(self) -> list[str]:
        if self._members is not None:
            return list(self._members)
        assert self._root is not None
        return sorted(p.name for p in self._root.iterdir() if p.is_file())

    def get(self, name: str) -> Member | None:
        if self._members is not None:
            return self._members.get(name)
        assert self._root is not None
        try:
            real = (self._root / name).resolve(strict=True)
        except OSError:
            return None
        if not real.is_relative_to(self._root):
            raise SourceError(f"{self.label}: {name} leads to {real}, outside the directory")
        st = real.stat()
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{self.label}: {name} is not a regular file")
        return Member(name, real, 0, st.st_size)

    def need(self, name: str, why: str) -> Member:
        member = self.get(name)
        if member is None:
            raise SourceError(f"{self.label}: {why} {name}, which is not in the OVA")
        return member

    def chunks(self, member: Member, limit: int | None = None, start: int = 0) -> Iterator[bytes]:
        """The member's bytes from `start`, at most `limit` of them, in CHUNK pieces."""
        left = max(0, member.size - start)
        left = left if limit is None else min(limit, left)
        if member.zip_index is not None:
            yield from inflate(self.label, member, start, left)
            return
        with member.file.open("rb") as f:
            f.seek(member.offset + start)
            while left:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise SourceError(f"{self.label}: {member.name} is truncated")
                left -= len(data)
                yield data

    def read(self, member: Member, limit: int, start: int = 0) -> bytes:
        return b"".join(self.chunks(member, limit, start))

    def uri(self, member: Member) -> str | None:
        """The json: pseudo-filename qemu reads the member through, read-only, in place; None
        when it cannot (compressed in a zip, or a slice qemu cannot make).

        qemu's raw driver slices whole 512-byte sectors, so an archive member's size is rounded
        up, as virt-v2v does: tar pads members with zeroes to that size, and image formats
        ignore what follows their data (a raw image would not: see ova_disks)."""
        if not member.in_place:
            return None
        node: dict[str, object] = {"driver": "file", "filename": str(member.file)}
        node["read-only"] = True
        if self._members is not None:  # a slice of the archive
            size = -(-member.size // 512) * 512
            if member.offset + size > member.file.stat().st_size:
                return None
            node = {"driver": "raw", "offset": member.offset, "size": size, "file": node}
        return "json:" + json.dumps({"file": node}, separators=(",", ":"))


def open_package(path: Path, workdir: Path) -> tuple[Package, str]:
    """The package `path` names (an .ova tar or zip, a directory, an .ovf) and its OVF's name."""
    label = str(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise SourceError(f"{label}: {exc.strerror.lower() if exc.strerror else exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        pkg = Package(label, None, path)
        return pkg, _only_ovf(pkg)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{label}: not a regular file or directory")
    if path.suffix.lower() == ".ovf":
        return Package(label, None, path.parent), path.name
    with path.open("rb") as f:
        magic = f.read(8)
    if magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        # Not allowed by the OVF spec, but shipped all the same; virt-v2v reads them too.
        pkg = Package(label, list_zip(path), None)
        return pkg, _only_ovf(pkg)
    mode: TarMode = next((c for m, c in _COMPRESSED_TARS.items() if magic.startswith(m)), "r:")
    infos = list_tar(path, mode)
    if mode != "r:":
        # A compressed tar cannot be read in place: unpack the (already vetted) members.
        root = Path(tempfile.mkdtemp(prefix="ova-", dir=workdir))
        extract_tar(path, mode, set(infos), root)
        pkg = Package(label, None, root)
    else:
        members = {}
        for name, info in infos.items():
            if info.offset_data + info.size > st.st_size:
                raise SourceError(f"{label}: the OVA is truncated (member {name} is cut short)")
            members[name] = Member(name, path.resolve(), info.offset_data, info.size)
        pkg = Package(label, members, None)
    return pkg, _only_ovf(pkg)


def _only_ovf(pkg: Package) -> str:
    found = [n for n in pkg.names() if n.lower().endswith(".ovf")]
    if not found:
        raise SourceError(f"{pkg.label}: no OVF descriptor (.ovf) in the OVA")
    if len(found) > 1:
        raise SourceError(
            f"{pkg.label}: several OVF descriptors ({', '.join(found)}); expected one"
        )
    return found[0]


def resolve(pkg: Package, base: str, href: str, where: str) -> str:
    """A file name from the OVF or manifest, checked and made relative to the package root."""
    parts = [p for p in href.split("/") if p not in ("", ".")]
    if href.startswith("/") or "\\" in href or ".." in parts or ":" in (parts[0] if parts else ":"):
        raise SourceError(
            f"{pkg.label}: {where} names {href!r}, outside the package; only files inside the "
            "OVA are read"
        )
    return posixpath.join(base, *parts)


def stored_names(pkg: Package, base: str, ref: OvfFile) -> tuple[str, list[str]]:
    """The name a References/File gives, and the names its data is stored under: its chunks
    href.000000000 ... when it has a chunkSize; else itself or, when it is absent, its latest
    VMware snapshot file (see _SNAPSHOT); else itself (absent)."""
    name = resolve(pkg, base, ref.href, "the OVF")
    if ref.chunk_size:
        names: list[str] = []
        while pkg.get(chunk := f"{name}.{len(names):09d}") is not None:
            names.append(chunk)
        if not names:
            raise SourceError(f"{pkg.label}: no chunks of {name} ({name}.000000000 ...) in the OVA")
        return name, names
    if pkg.get(name) is None and (snapshot := latest_snapshot(pkg, name)) is not None:
        return name, [snapshot]
    return name, [name]


def latest_snapshot(pkg: Package, name: str) -> str | None:
    """The NAME.N file of the package with the highest number N, if there is one. (virt-v2v
    compares the digits as strings; ovftool pads them to nine, where both orders agree.)"""
    found = []
    for candidate in pkg.names():
        match = _SNAPSHOT.search(candidate)
        if match and candidate[: match.start()] == name:
            found.append((int(match.group(1)), candidate))
    return max(found)[1] if found else None
