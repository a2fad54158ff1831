"""-i ova: an OVA (a tar holding an OVF descriptor, a manifest and disk images) as VMware's
ovftool and VirtualBox export it, or the directory it was unpacked into, or the .ovf in it.

Order of work, each step before the next touches any data:
1. list the tar headers and refuse members that could escape the archive (absolute names, `..`,
   links, devices) or be read ambiguously (duplicate names, GNU sparse members);
2. verify the manifest's checksums against every file it lists, streaming the data (an OVA
   without a manifest is read all the same, with a logged warning: VirtualBox can omit it);
3. parse the OVF; every file it references must be in the manifest (when there is one);
4. expose each disk.

Disk endpoints. The OVA's own bytes are never copied when qemu can read them where they lie: a
disk stored uncompressed in an uncompressed tar (or a file of an unpacked directory) becomes a
qemu `json:` pseudo-filename in DiskEndpoint.uri, e.g.

    json:{"file":{"driver":"raw","offset":1536,"size":138752,
                  "file":{"driver":"file","filename":"/abs/guest.ova","read-only":true}}}

It describes only where the bytes are; the format (vmdk) travels in DiskEndpoint.format, so the
reader passes it as usual (`qemu-img create -f qcow2 -b URI -F vmdk overlay.qcow2`, `qemu-img
convert -f vmdk URI ...`); a top-level "driver" key would silently lose to -f. "read-only" makes
qemu refuse to open the OVA for writing at all. Such a uri is not a path: it must be given to
qemu as one argument (never inside -o, where commas are special) and never stat()ed.

Gzip-compressed and chunked disks are inflated or joined into workdir (streamed, with a size
cap), and those copies are plain paths; so are the members of a gzip/bzip2/xz-compressed tar,
which is unpacked into workdir after its listing has been vetted.

Every disk must be self-contained: a VMDK descriptor, or a sparse header without capacity, would
make qemu open other files named inside the guest's image, and a backing file would do the
same, so all are refused before use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import stat
import struct
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vmshift.errors import DiskImageError, EnvironmentProblem, SourceError, UsageError
from vmshift.formats.ovf import (
    ManifestEntry,
    OvfDescriptor,
    OvfDisk,
    OvfDiskAttachment,
    OvfFile,
    parse_manifest,
    parse_ovf,
)
from vmshift.model.vm import Controller, DiskEndpoint, SourceDisk, SourceVM
from vmshift.process import CommandFailed, run
from vmshift.sources.base import SourceOptions

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MAX_MEMBERS = 4096  # ovftool writes a handful; a huge count is not an OVA
_MAX_OVF = 16 << 20
_MAX_MF = 1 << 20
_Mode = Literal["r:", "r:gz", "r:bz2", "r:xz"]
_COMPRESSED_TARS: dict[bytes, _Mode] = {
    b"\x1f\x8b": "r:gz",
    b"BZh": "r:bz2",
    b"\xfd7zXZ\x00": "r:xz",
}
_UNSAFE = "the OVA was not written by an OVF exporter; it may try to reach files outside it"


@dataclass(frozen=True)
class _Member:
    """A file of the package: `size` bytes at `offset` in `file` (the OVA, or the file itself)."""

    name: str
    file: Path
    offset: int
    size: int


class _Package:
    """The files of an OVA by normalised relative name, whether tar members or files on disk."""

    def __init__(self, label: str, members: dict[str, _Member] | None, root: Path | None) -> None:
        self.label = label  # the OVA as the user named it, for messages
        self._members = members
        self._root = root.resolve() if root is not None else None

    def names(self) -> list[str]:
        if self._members is not None:
            return list(self._members)
        assert self._root is not None
        return sorted(p.name for p in self._root.iterdir() if p.is_file())

    def get(self, name: str) -> _Member | None:
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
        return _Member(name, real, 0, st.st_size)

    def need(self, name: str, why: str) -> _Member:
        member = self.get(name)
        if member is None:
            raise SourceError(f"{self.label}: {why} {name}, which is not in the OVA")
        return member

    def chunks(self, member: _Member, limit: int | None = None) -> Iterator[bytes]:
        left = member.size if limit is None else min(limit, member.size)
        with member.file.open("rb") as f:
            f.seek(member.offset)
            while left:
                data = f.read(min(_CHUNK, left))
                if not data:
                    raise SourceError(f"{self.label}: {member.name} is truncated")
                left -= len(data)
                yield data

    def read(self, member: _Member, limit: int) -> bytes:
        return b"".join(self.chunks(member, limit))

    def uri(self, member: _Member) -> str:
        """The json: pseudo-filename qemu reads the member through, read-only, in place."""
        node: dict[str, object] = {"driver": "file", "filename": str(member.file)}
        node["read-only"] = True
        if self._members is not None:  # a slice of the tar
            node = {"driver": "raw", "offset": member.offset, "size": member.size, "file": node}
        return "json:" + json.dumps({"file": node}, separators=(",", ":"))


class OvaSource:
    """Reads an OVA file or unpacked OVA directory; see the module docstring."""

    def __init__(self, opts: SourceOptions) -> None:
        if len(opts.args) != 1:
            raise UsageError("-i ova takes one argument: the .ova file or its unpacked directory")
        self._path = Path(opts.args[0])

    def open(self, workdir: Path) -> SourceVM:
        pkg, ovf_name = _open_package(self._path, workdir)
        base = posixpath.dirname(ovf_name)
        mf_name = _find_manifest(pkg, ovf_name)
        listed: set[str] | None = None
        if mf_name is None:
            log.warning("%s: no manifest (.mf); the files' checksums cannot be checked", pkg.label)
        else:
            listed = _verify_manifest(pkg, mf_name)
            if ovf_name not in listed:
                log.warning("%s: the manifest does not list %s", pkg.label, ovf_name)

        ovf_member = pkg.need(ovf_name, "the descriptor")
        if ovf_member.size > _MAX_OVF:
            raise SourceError(f"{pkg.label}: {ovf_name} is too large for an OVF descriptor")
        desc = parse_ovf(pkg.read(ovf_member, _MAX_OVF), path=f"{pkg.label}: {ovf_name}")
        for ref in desc.files:
            for name in _stored_names(pkg, base, ref):
                if listed is not None and pkg.get(name) is not None and name not in listed:
                    raise SourceError(
                        f"{pkg.label}: {name} is referenced by {ovf_name} but not listed in the "
                        f"manifest {mf_name}",
                        hint="the OVA is incomplete or was altered after export",
                    )

        disks = [
            _source_disk(pkg, base, att, index, workdir) for index, att in enumerate(desc.disks)
        ]
        return _source_vm(desc, tuple(disks), str(self._path), manifest=mf_name is not None)

    def close(self) -> None:
        """Nothing to stop: qemu reads the OVA itself, and workdir copies go with workdir."""


# --- the package -------------------------------------------------------------------------------


def _open_package(path: Path, workdir: Path) -> tuple[_Package, str]:
    label = str(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise SourceError(f"{label}: {exc.strerror.lower() if exc.strerror else exc}") from exc
    if stat.S_ISDIR(st.st_mode):
        pkg = _Package(label, None, path)
        return pkg, _only_ovf(pkg)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{label}: not a regular file or directory")
    if path.suffix.lower() == ".ovf":
        return _Package(label, None, path.parent), path.name
    with path.open("rb") as f:
        magic = f.read(8)
    if magic.startswith(b"PK\x03\x04"):
        raise SourceError(
            f"{label}: a zip archive, not a tar; vmshift reads OVAs in tar form",
            hint="unzip it and give vmshift the directory",
        )
    mode: _Mode = next((c for m, c in _COMPRESSED_TARS.items() if magic.startswith(m)), "r:")
    infos = _list_tar(path, mode)
    if mode != "r:":
        # A compressed tar cannot be read in place: unpack the (already vetted) members.
        root = Path(tempfile.mkdtemp(prefix="ova-", dir=workdir))
        _extract(path, mode, infos.keys(), root)
        pkg = _Package(label, None, root)
    else:
        size = st.st_size
        members = {}
        for name, info in infos.items():
            if info.offset_data + info.size > size:
                raise SourceError(f"{label}: the OVA is truncated (member {name} is cut short)")
            members[name] = _Member(name, path.resolve(), info.offset_data, info.size)
        pkg = _Package(label, members, None)
    return pkg, _only_ovf(pkg)


def _list_tar(path: Path, mode: _Mode) -> dict[str, tarfile.TarInfo]:
    """The regular members by normalised name, after refusing anything unsafe (headers only)."""
    found: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, mode) as tar:
            for count, info in enumerate(tar, start=1):
                if count > _MAX_MEMBERS:
                    raise SourceError(f"{path}: more than {_MAX_MEMBERS} members; not an OVA")
                name = _member_name(path, info)
                if info.isdir():
                    continue
                if name in found:
                    raise SourceError(
                        f"{path}: refusing OVA: member {info.name!r} appears twice", hint=_UNSAFE
                    )
                found[name] = info
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        if "end of data" in str(exc):  # tarfile's word for a cut-off archive
            raise SourceError(f"{path}: the OVA is truncated") from exc
        raise SourceError(f"{path}: not a readable tar archive (an OVA is one): {exc}") from exc
    return found


def _member_name(path: Path, info: tarfile.TarInfo) -> str:
    def refuse(why: str) -> SourceError:
        return SourceError(f"{path}: refusing OVA: member {info.name!r} {why}", hint=_UNSAFE)

    if info.name.startswith("/"):
        raise refuse("has an absolute path")
    parts = [p for p in info.name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse("has a '..' component")
    if not parts or "\\" in info.name:
        raise refuse("has an unusable name")
    if info.issym() or info.islnk():
        raise refuse(f"is a link (to {info.linkname!r})")
    if info.issparse():
        raise refuse("is a GNU sparse file")
    if not (info.isreg() or info.isdir()):
        raise refuse("is a device, FIFO or other special file")
    return "/".join(parts)


def _extract(path: Path, mode: _Mode, wanted: Iterable[str], root: Path) -> None:
    names = set(wanted)
    try:
        with tarfile.open(path, mode) as tar:
            for info in tar:
                # Same headers as the vetted listing; the name check runs again all the same.
                name = _member_name(path, info)
                src = tar.extractfile(info) if name in names and info.isreg() else None
                if src is None:
                    continue
                dest = root / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with src, dest.open("xb") as out:
                    while data := src.read(_CHUNK):
                        out.write(data)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceError(f"{path}: cannot unpack the compressed OVA: {exc}") from exc


def _only_ovf(pkg: _Package) -> str:
    found = [n for n in pkg.names() if n.lower().endswith(".ovf")]
    if not found:
        raise SourceError(f"{pkg.label}: no OVF descriptor (.ovf) in the OVA")
    if len(found) > 1:
        raise SourceError(
            f"{pkg.label}: several OVF descriptors ({', '.join(found)}); expected one"
        )
    return found[0]


def _find_manifest(pkg: _Package, ovf_name: str) -> str | None:
    found = [n for n in pkg.names() if n.lower().endswith(".mf")]
    same = [n for n in found if n[:-3].lower() == ovf_name[:-4].lower()]
    if same or len(found) == 1:
        return (same or found)[0]
    if found:
        raise SourceError(f"{pkg.label}: several manifests ({', '.join(found)}); expected one")
    return None


def _resolve(pkg: _Package, base: str, href: str, where: str) -> str:
    """A file name from the OVF or manifest, checked and made relative to the package root."""
    parts = [p for p in href.split("/") if p not in ("", ".")]
    if href.startswith("/") or "\\" in href or ".." in parts or ":" in (parts[0] if parts else ":"):
        raise SourceError(
            f"{pkg.label}: {where} names {href!r}, outside the package; only files inside the "
            "OVA are read"
        )
    return posixpath.join(base, *parts)


def _stored_names(pkg: _Package, base: str, ref: OvfFile) -> list[str]:
    """The names a References/File is stored under: itself, or its chunks href.000000000 ..."""
    name = _resolve(pkg, base, ref.href, "the OVF")
    if not ref.chunk_size:
        return [name]
    names: list[str] = []
    while pkg.get(chunk := f"{name}.{len(names):09d}") is not None:
        names.append(chunk)
    if not names:
        raise SourceError(f"{pkg.label}: no chunks of {name} ({name}.000000000 ...) in the OVA")
    return names


def _verify_manifest(pkg: _Package, mf_name: str) -> set[str]:
    """Check every checksum of the manifest; return the names it lists."""
    member = pkg.need(mf_name, "the manifest")
    if member.size > _MAX_MF:
        raise SourceError(f"{pkg.label}: {mf_name} is too large for a manifest")
    entries = parse_manifest(pkg.read(member, _MAX_MF), path=f"{pkg.label}: {mf_name}")
    by_name: dict[str, list[ManifestEntry]] = {}
    base = posixpath.dirname(mf_name)
    for entry in entries:
        name = _resolve(pkg, base, entry.filename, f"the manifest {mf_name}")
        by_name.setdefault(name, []).append(entry)
    for name, group in by_name.items():
        target = pkg.need(name, f"the manifest {mf_name} lists")
        hashes = {e.algorithm: hashlib.new(e.algorithm) for e in group}
        for data in pkg.chunks(target):
            for h in hashes.values():
                h.update(data)
        for entry in group:
            actual = hashes[entry.algorithm].hexdigest()
            if actual != entry.digest:
                raise SourceError(
                    f"{pkg.label}: {name}: {entry.algorithm.upper()} checksum does not match the "
                    f"manifest (manifest {entry.digest}, file {actual})",
                    hint="the OVA is damaged or incomplete; export or download it again",
                )
    return set(by_name)


# --- disks -------------------------------------------------------------------------------------


def _source_disk(
    pkg: _Package, base: str, att: OvfDiskAttachment, index: int, workdir: Path
) -> SourceDisk:
    controller = att.controller
    kind = controller.kind if controller else Controller.UNKNOWN
    return SourceDisk(
        endpoint=_expose(pkg, base, att.disk, index, workdir),
        controller=kind,
        bus=controller.bus if controller else 0,
        unit=att.unit,
        controller_model=controller.model if controller and kind is Controller.SCSI else None,
        name=_drive_name(index),
    )


def _expose(pkg: _Package, base: str, disk: OvfDisk, index: int, workdir: Path) -> DiskEndpoint:
    ref, capacity = disk.file, disk.capacity
    if ref is None:
        # An empty disk the importer is to create: make it, so the guest keeps its disk layout.
        path = workdir / f"ova-disk{index}-blank.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(capacity)])
        return DiskEndpoint(str(path), "qcow2", capacity)
    names = _stored_names(pkg, base, ref)
    members = [pkg.need(n, "the OVF refers to") for n in names]
    label = f"{pkg.label}: {names[0]}"
    stored = sum(m.size for m in members)
    if ref.size is not None and ref.size != stored:
        raise SourceError(f"{label}: {stored} bytes, but the OVF says {ref.size}")
    if ref.compression not in (None, "gzip", "identity"):
        raise SourceError(f"{label}: compression {ref.compression!r} is not supported")
    gzipped = ref.compression == "gzip" or pkg.read(members[0], 2) == b"\x1f\x8b"
    # A VMDK holds at most its capacity plus metadata: grain tables take 1/8192 of it, and
    # incompressible grains in a streamOptimized VMDK grow by a marker and sector padding
    # (< 1/100). Past this cap, inflating is filling the disk, not restoring an image.
    cap = capacity + capacity // 64 + (64 << 20)
    if len(members) == 1 and not gzipped:
        uri, head = pkg.uri(members[0]), pkg.read(members[0], 512)
    else:
        path = workdir / f"ova-disk{index}.img"
        data: Iterable[bytes] = (c for m in members for c in pkg.chunks(m))
        _write_capped(_gunzip(data, label) if gzipped else data, path, cap, label)
        uri = str(path)
        with path.open("rb") as f:
            head = f.read(512)
    fmt = _sniff(head, disk.format, label)
    info = _qemu_info(uri, fmt, label)
    vsize = info.get("virtual-size")
    if not isinstance(vsize, int):
        raise DiskImageError(f"{label}: qemu-img gave no virtual size")
    if vsize != capacity:
        log.warning(
            "%s: virtual size %d differs from the OVF's capacity %d", label, vsize, capacity
        )
    return DiskEndpoint(uri, fmt, vsize)


def _gunzip(chunks: Iterable[bytes], label: str) -> Iterator[bytes]:
    """Inflate a (possibly multi-member) gzip stream, never holding more than _CHUNK out."""
    d = zlib.decompressobj(wbits=31)
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if d.eof:
                    d = zlib.decompressobj(wbits=31)
                out = d.decompress(data, _CHUNK)
                data = d.unused_data if d.eof else d.unconsumed_tail
                yield out
    except zlib.error as exc:
        raise SourceError(f"{label}: corrupt gzip data: {exc}") from exc
    if not d.eof:
        raise SourceError(f"{label}: the gzip data is truncated")


def _write_capped(chunks: Iterable[bytes], path: Path, cap: int, label: str) -> None:
    written = 0
    try:
        with path.open("wb") as out:
            for data in chunks:
                written += len(data)
                if written > cap:
                    raise SourceError(
                        f"{label}: holds more than {cap} bytes, too much for a disk of its capacity"
                    )
                out.write(data)
    except OSError as exc:
        raise EnvironmentProblem(
            f"{path}: cannot write the disk of {label}: {exc.strerror}"
        ) from exc


def _sniff(head: bytes, declared: str | None, label: str) -> str:
    if head[:4] == b"KDMV":
        # With capacity 0 qemu reads the embedded descriptor's extent lines, which may name any
        # file on this host; a real monolithic or streamOptimized VMDK always states one.
        if len(head) < 20 or struct.unpack_from("<Q", head, 12)[0] == 0:
            raise DiskImageError(f"{label}: a VMDK that points at other files; not self-contained")
        return "vmdk"
    if head.startswith(b"# Disk DescriptorFile"):
        raise DiskImageError(
            f"{label}: a VMDK descriptor naming extent files; an OVA's disks must be "
            "self-contained (streamOptimized or monolithicSparse)"
        )
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if declared == "raw":
        return "raw"
    raise DiskImageError(
        f"{label}: not a disk image vmshift reads from an OVA (no VMDK or qcow2 header; the OVF "
        f"gives the format as {declared or 'unknown'})"
    )


def _qemu_info(uri: str, fmt: str, label: str) -> dict[str, object]:
    try:
        proc = run(["qemu-img", "info", "--output=json", "-f", fmt, uri], timeout=120)
        info = json.loads(proc.stdout)
    except CommandFailed as exc:
        why = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else str(exc)
        raise DiskImageError(f"{label}: not a usable {fmt} image: {why}") from exc
    except ValueError as exc:
        raise DiskImageError(f"{label}: qemu-img gave an answer vmshift cannot read") from exc
    if not isinstance(info, dict):
        raise DiskImageError(f"{label}: qemu-img gave an answer vmshift cannot read")
    if info.get("backing-filename"):
        raise DiskImageError(
            f"{label}: names a backing file ({info['backing-filename']}); an OVA's disks must be "
            "self-contained"
        )
    specific = info.get("format-specific")
    data = specific.get("data", {}) if isinstance(specific, dict) else {}
    if isinstance(data, dict) and (data.get("data-file") or len(data.get("extents", ())) > 1):
        raise DiskImageError(f"{label}: keeps its data in other files; not self-contained")
    return info


def _drive_name(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return "sd" + letters


def _source_vm(
    desc: OvfDescriptor, disks: tuple[SourceDisk, ...], source_file: str, *, manifest: bool
) -> SourceVM:
    extra = {
        "ovf_version": str(desc.ovf_version),
        "ovf_producer": desc.producer,
        "manifest": "verified" if manifest else "absent",
    }
    if desc.os_id is not None:
        extra["ovf_os_id"] = str(desc.os_id)
    if desc.secure_boot is not None:
        extra["secure_boot"] = "true" if desc.secure_boot else "false"
    return SourceVM(
        name=desc.name,
        memory=desc.memory,
        vcpus=desc.vcpus,
        topology=desc.topology,
        firmware=desc.firmware,
        disks=disks,
        removables=desc.removables,
        nics=desc.nics,
        origin="virtualbox" if desc.producer == "virtualbox" else "vmware",
        os_hint=desc.os_type or desc.os_description,
        source_file=source_file,
        extra=extra,
    )
