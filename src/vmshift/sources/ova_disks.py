"""An OVA's disks as DiskEndpoints, each checked to be a self-contained image before use.

The OVA's own bytes are never copied when qemu can read them where they lie: a disk stored
uncompressed in a plain tar or a zip (or a file of an unpacked directory) becomes a qemu `json:`
pseudo-filename in DiskEndpoint.uri (ova_package.Package.uri()), e.g.

    json:{"file":{"driver":"raw","offset":1536,"size":138752,
                  "file":{"driver":"file","filename":"/abs/guest.ova","read-only":true}}}

It describes only where the bytes are; the format (vmdk) travels in DiskEndpoint.format, so the
reader passes it as usual (`qemu-img create -f qcow2 -b URI -F vmdk overlay.qcow2`, `qemu-img
convert -f vmdk URI ...`); a top-level "driver" key would silently lose to -f. "read-only" makes
qemu refuse to open the OVA for writing at all. Such a uri is not a path: it must be given to
qemu as one argument (never inside -o, where commas are special) and never stat()ed.

Gzip-compressed, chunked and zip-deflated disks are inflated or joined into workdir (streamed,
with a size cap), and those copies are plain paths.

Every disk must be self-contained: a VMDK descriptor, or a sparse header without capacity, would
make qemu open other files named inside the guest's image, and a backing file would do the
same, so all are refused before use.

A References/File's ovf:size that differs from the stored file is only a warning when the image
passes its own checks (the manifest's digest was checked before): its format's structure must
hold all its data. A file cut short (a truncated download) is refused.
"""

from __future__ import annotations

import json
import logging
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from vmshift.errors import DiskImageError, EnvironmentProblem, SourceError
from vmshift.formats.ovf_model import OvfDisk
from vmshift.model.vm import DiskEndpoint
from vmshift.process import CommandFailed, run
from vmshift.sources.ova_archive import CHUNK
from vmshift.sources.ova_package import Package, stored_names

log = logging.getLogger(__name__)

_SECTOR = 512
_VMDK_MARKERS = 1 << 17  # header flag: a streamOptimized VMDK, grains and tables in markers
_TRUNCATED = "the OVA is damaged or incomplete; export or download it again"


def expose(
    pkg: Package, base: str, disk: OvfDisk, index: int, *, workdir: Path, warnings: list[str]
) -> DiskEndpoint:
    """The endpoint of one OVF disk; a warning goes to `warnings` when its ovf:size is wrong."""
    ref, capacity = disk.file, disk.capacity
    if ref is None:
        # An empty disk the importer is to create: make it, so the guest keeps its disk layout.
        path = workdir / f"ova-disk{index}-blank.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(capacity)])
        return DiskEndpoint(str(path), "qcow2", capacity)
    _, names = stored_names(pkg, base, ref)
    members = [pkg.need(n, "the OVF refers to") for n in names]
    label = f"{pkg.label}: {names[0]}"
    if ref.compression not in (None, "gzip", "identity"):
        raise SourceError(f"{label}: compression {ref.compression!r} is not supported")
    head = pkg.read(members[0], _SECTOR)
    gzipped = ref.compression == "gzip" or head[:2] == b"\x1f\x8b"
    uri: str | None = None
    if len(members) == 1 and not gzipped:
        fmt = _sniff(head, disk.format, label)
        # A raw image's size is its disk's: qemu must not see the padding of a rounded slice.
        if fmt != "raw" or members[0].size % _SECTOR == 0:
            uri = pkg.uri(members[0])
    if uri is not None:
        length = members[0].size
        tail = pkg.read(members[0], _SECTOR, max(0, length - _SECTOR))
    else:
        path = workdir / f"ova-disk{index}.img"
        data: Iterable[bytes] = (c for m in members for c in pkg.chunks(m))
        # A VMDK holds at most its capacity plus metadata: grain tables take 1/8192 of it, and
        # incompressible grains in a streamOptimized VMDK grow by a marker and sector padding
        # (< 1/100). Past this cap, inflating is filling the disk, not restoring an image.
        cap = capacity + capacity // 64 + (64 << 20)
        _write_capped(_gunzip(data, label) if gzipped else data, path, cap, label)
        uri, length = str(path), path.stat().st_size
        with path.open("rb") as f:
            head = f.read(_SECTOR)
            f.seek(max(0, length - _SECTOR))
            tail = f.read(_SECTOR)
        fmt = _sniff(head, disk.format, label)
    info = _qemu_info(uri, fmt, label)
    vsize = info.get("virtual-size")
    if not isinstance(vsize, int):
        raise DiskImageError(f"{label}: qemu-img gave no virtual size")
    stored = sum(m.size for m in members)
    if ref.size is not None and ref.size != stored:
        _check_whole(uri, fmt, label, length=length, capacity=capacity, head=head, tail=tail)
        warnings.append(
            f"{label}: {stored} bytes, but the OVF says {ref.size}; the image itself is whole, "
            "so the OVF's size is ignored"
        )
    if vsize != capacity:
        warnings.append(f"{label}: virtual size {vsize} differs from the OVF's capacity {capacity}")
    return DiskEndpoint(uri, fmt, vsize)


def _check_whole(
    uri: str, fmt: str, label: str, *, length: int, capacity: int, head: bytes, tail: bytes
) -> None:
    """Refuse an image shorter than its own structure says: a raw image is as long as its disk,
    a streamOptimized VMDK ends in its end-of-stream marker, qemu-img check finds no damage,
    and no data qemu-img map places in the file lies past its end."""
    if fmt == "raw":
        if length < capacity:
            raise DiskImageError(
                f"{label}: a raw image of {length} bytes for a disk of {capacity}: the file is "
                "truncated",
                hint=_TRUNCATED,
            )
        return
    stream = fmt == "vmdk" and struct.unpack_from("<I", head, 8)[0] & _VMDK_MARKERS
    if stream and tail[:16] != bytes(16):
        raise DiskImageError(
            f"{label}: a streamOptimized VMDK that does not end with its end-of-stream marker: "
            "the file is truncated",
            hint=_TRUNCATED,
        )
    try:
        run(["qemu-img", "check", "-f", fmt, uri], timeout=600)
    except CommandFailed as exc:
        # 3: leaked clusters, harmless to a reader; 63: the format has no check.
        if exc.returncode not in (3, 63):
            why = _first_error(exc.stderr) or str(exc)
            raise DiskImageError(
                f"{label}: the image is damaged or truncated: {why}", hint=_TRUNCATED
            ) from exc
    try:
        extents = json.loads(run(["qemu-img", "map", "--output=json", "-f", fmt, uri]).stdout)
    except (CommandFailed, ValueError) as exc:
        raise DiskImageError(f"{label}: qemu-img cannot map the image: {exc}") from exc
    ends = [
        e["offset"] + e["length"]
        for e in extents
        if isinstance(e, dict) and isinstance(e.get("offset"), int) and e.get("data")
    ]
    if ends and max(ends) > length:
        raise DiskImageError(
            f"{label}: its data runs to byte {max(ends)}, past its end at {length}: the file is "
            "truncated",
            hint=_TRUNCATED,
        )


def _first_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("ERROR")), lines[-1] if lines else "")


def _gunzip(chunks: Iterable[bytes], label: str) -> Iterator[bytes]:
    """Inflate a (possibly multi-member) gzip stream, never holding more than CHUNK out."""
    d = zlib.decompressobj(wbits=31)
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if d.eof:
                    d = zlib.decompressobj(wbits=31)
                out = d.decompress(data, CHUNK)
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
