"""VMDK descriptors: the text that says which extent files make up a VMware disk.

A descriptor is either a small text file (monolithicFlat, twoGbMaxExtent*, vmfs, vmfsSparse,
seSparse ...) or text embedded in a hosted sparse extent (monolithicSparse, streamOptimized),
found at the sector offset and size the "KDMV" header gives. Either way it holds a header
(version, CID, parentCID, createType, parentFileNameHint), extent lines such as
`RW 4192256 SPARSE "x-s001.vmdk"` or `RW 2048 FLAT "x-flat.vmdk" 0`, and ddb.* entries.

File names in a descriptor are untrusted: qemu opens whatever an extent line or a
parentFileNameHint names, so a crafted descriptor could make us copy a host file into the
converted guest. formats/file_references.py's resolve_reference() is the policy.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vmshift.errors import DiskImageError

SECTOR = 512
NO_PARENT = 0xFFFFFFFF  # parentCID of a disk without a parent
SPARSE_MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"  # ESX vmfsSparse extents: no embedded descriptor
SESPARSE_MAGIC = struct.pack("<Q", 0xCAFEBABE)
MAX_DESCRIPTOR = 1 << 20  # real descriptors are a few KiB; anything bigger is an extent

ACCESS_MODES = frozenset({"RW", "RDONLY", "NOACCESS"})
EXTENT_TYPES = frozenset(
    {"SPARSE", "FLAT", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW", "SESPARSE"}
)
# Extent types that may carry a byte offset (in sectors) into their file.
OFFSET_TYPES = frozenset({"FLAT", "VMFS", "VMFSRDM", "VMFSRAW"})
# fmt: off
CREATE_TYPES = frozenset({
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
    "streamOptimized", "vmfs", "vmfsSparse", "vmfsThin", "vmfsPreallocated",
    "vmfsEagerZeroedThick", "seSparse", "vsanSparse", "vmfsRaw", "vmfsRawDeviceMap",
    "vmfsPassthroughRawDeviceMap", "fullDevice", "partitionedDevice", "custom",
})
# fmt: on

_EXTENT = re.compile(
    r"^(?P<access>\S+)\s+(?P<sectors>\S+)\s+(?P<type>\S+)"
    r'(?:\s+"(?P<file>[^"]*)"(?:\s+(?P<offset>\S+))?)?$'
)
_SETTING = re.compile(r"^(?P<key>[A-Za-z][\w.]*)\s*=\s*(?P<value>.*)$")
_ENCODING = re.compile(rb'^[ \t]*encoding[ \t]*=[ \t]*"([^"\r\n]*)"', re.MULTILINE)
# Control bytes no descriptor holds; a flat extent or another image format is full of them.
_BINARY = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class VmdkDescriptorError(DiskImageError):
    """A VMDK descriptor that cannot be parsed; names the file and, for a bad line, the line."""

    def __init__(
        self,
        path: str,
        problem: str,
        *,
        line_number: int | None = None,
        line: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = f"{path}: line {line_number}: " if line_number is not None else f"{path}: "
        shown = f": {line}" if line is not None else ""
        super().__init__(where + problem + shown, hint=hint)
        self.path = path
        self.line_number = line_number
        self.line = line


@dataclass(frozen=True)
class Extent:
    access: str  # RW, RDONLY, NOACCESS
    sectors: int
    kind: str  # SPARSE, FLAT, ZERO, VMFS, VMFSSPARSE, VMFSRDM, VMFSRAW, SESPARSE
    filename: str | None  # as written (untrusted); None for ZERO
    offset: int | None = None  # sectors into a flat file; None when the line has none
    line_number: int = 0


@dataclass(frozen=True)
class VmdkDescriptor:
    path: str  # for messages
    create_type: str
    extents: tuple[Extent, ...]
    version: int = 1
    cid: int | None = None
    parent_cid: int | None = None
    parent_filename_hint: str | None = None  # as written (untrusted)
    ddb: Mapping[str, str] = field(default_factory=dict)  # keys as written: ddb.adapterType
    header: Mapping[str, str] = field(default_factory=dict)  # other header settings
    embedded: bool = False  # read from inside a sparse extent (the file is its own extent)

    @property
    def capacity_sectors(self) -> int:
        return sum(extent.sectors for extent in self.extents)

    @property
    def has_parent(self) -> bool:
        return self.parent_filename_hint is not None or self.parent_cid not in (None, NO_PARENT)

    def ddb_value(self, key: str) -> str | None:
        """A ddb entry by its name after "ddb.", matched case-insensitively."""
        wanted = f"ddb.{key}".lower()
        for name, value in self.ddb.items():
            if name.lower() == wanted:
                return value
        return None

    @property
    def adapter_type(self) -> str | None:
        return self.ddb_value("adapterType")

    @property
    def virtual_hw_version(self) -> str | None:
        return self.ddb_value("virtualHWVersion")

    @property
    def uuid(self) -> str | None:
        return self.ddb_value("uuid")

    @property
    def geometry(self) -> tuple[int, int, int] | None:
        """(cylinders, heads, sectors) when the ddb gives all three as numbers."""
        values = [self.ddb_value(f"geometry.{part}") for part in ("cylinders", "heads", "sectors")]
        try:
            c, h, s = (int(v) for v in values if v is not None)
        except ValueError:
            return None
        return (c, h, s)


@dataclass(frozen=True)
class SparseHeader:
    """The fields of a hosted sparse extent's header that vmshift needs (little-endian)."""

    version: int
    flags: int
    capacity: int  # sectors
    grain_size: int  # sectors
    descriptor_offset: int  # sectors; 0 when there is no embedded descriptor
    descriptor_size: int  # sectors


def parse_sparse_header(data: bytes) -> SparseHeader | None:
    """The header of a "KDMV" sparse extent, or None if data does not start with one."""
    if len(data) < 44 or data[:4] != SPARSE_MAGIC:
        return None
    version, flags, capacity, grain, desc_offset, desc_size = struct.unpack_from("<IIQQQQ", data, 4)
    return SparseHeader(version, flags, capacity, grain, desc_offset, desc_size)


def _descriptor_area(header: SparseHeader, *, path: str) -> tuple[int, int]:
    """(byte offset, byte size) of the descriptor embedded in a sparse extent."""
    if header.descriptor_offset == 0 or header.descriptor_size == 0:
        raise VmdkDescriptorError(
            path,
            "sparse extent without an embedded descriptor",
            hint="name the disk's descriptor file, not one of its extents",
        )
    if header.descriptor_size * SECTOR > MAX_DESCRIPTOR:
        raise VmdkDescriptorError(path, "embedded descriptor is implausibly large")
    return header.descriptor_offset * SECTOR, header.descriptor_size * SECTOR


def embedded_descriptor(data: bytes, *, path: str) -> bytes | None:
    """The descriptor bytes inside a sparse extent (its content in data), or None if data is
    no sparse extent. Raise VmdkDescriptorError if it is one without a usable descriptor."""
    header = parse_sparse_header(data)
    if header is None:
        return None
    start, size = _descriptor_area(header, path=path)
    if start + size > len(data):
        raise VmdkDescriptorError(path, "embedded descriptor lies outside the file (truncated?)")
    return data[start : start + size].split(b"\0", 1)[0]


def decode_descriptor(data: bytes, *, path: str) -> str:
    """Descriptor bytes as text, honouring an `encoding="..."` header line."""
    match = _ENCODING.search(data)
    declared = match.group(1).decode("ascii", errors="replace") if match else "UTF-8"
    try:
        codec = codecs.lookup(declared).name
    except LookupError as exc:
        raise VmdkDescriptorError(path, f'unknown encoding "{declared}"') from exc
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        problem = f"not valid {declared} text" if match else "not a VMDK descriptor (not text)"
        raise VmdkDescriptorError(path, f"{problem} (byte {exc.start})") from exc


def parse_descriptor(text: str, *, path: str, embedded: bool = False) -> VmdkDescriptor:
    """Parse descriptor text. Raise VmdkDescriptorError naming path, line number and line."""
    header: dict[str, str] = {}
    ddb: dict[str, str] = {}
    extents: list[Extent] = []
    lines: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split(None, 1)[0]
        if first in ACCESS_MODES or first.upper() in ACCESS_MODES:
            extents.append(_extent(line, number, path))
            continue
        setting = _SETTING.match(line)
        if setting is None:
            raise VmdkDescriptorError(path, "unrecognised line", line_number=number, line=line)
        key, value = setting.group("key"), _unquote(setting.group("value"))
        if key.lower().startswith("ddb."):
            ddb[key] = value
        else:
            header[key] = value
            lines[key] = number

    def take(key: str) -> str | None:
        return header.pop(key, None)

    def hex_id(key: str) -> int | None:
        value = take(key)
        if value is None:
            return None
        try:
            return int(value, 16)
        except ValueError:
            raise VmdkDescriptorError(
                path, f"{key} is not hexadecimal", line_number=lines[key], line=f"{key}={value}"
            ) from None

    create_type = take("createType")
    if create_type is None:
        raise VmdkDescriptorError(path, "not a VMDK descriptor (no createType)")
    if not extents:
        raise VmdkDescriptorError(path, "VMDK descriptor without any extent line")
    version_text = take("version") or "1"
    if not version_text.isdigit():
        raise VmdkDescriptorError(
            path, "version is not a number", line_number=lines["version"], line=version_text
        )
    cid, parent_cid = hex_id("CID"), hex_id("parentCID")
    return VmdkDescriptor(
        path=path,
        create_type=create_type,
        extents=tuple(extents),
        version=int(version_text),
        cid=cid,
        parent_cid=parent_cid,
        parent_filename_hint=take("parentFileNameHint") or None,
        ddb=ddb,
        header=header,
        embedded=embedded,
    )


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _extent(line: str, number: int, path: str) -> Extent:
    def bad(problem: str) -> VmdkDescriptorError:
        return VmdkDescriptorError(
            path, f"bad extent line ({problem})", line_number=number, line=line
        )

    match = _EXTENT.match(line)
    if match is None:
        raise bad('expected ACCESS SECTORS TYPE "FILE" [OFFSET]')
    access, kind = match.group("access"), match.group("type")
    if access not in ACCESS_MODES:
        raise bad(f"unknown access {access!r}")
    if kind not in EXTENT_TYPES:
        raise bad(f"unknown extent type {kind!r}")
    if not match.group("sectors").isdigit():
        raise bad("size is not a number of sectors")
    filename, offset_text = match.group("file"), match.group("offset")
    if kind == "ZERO":
        if filename is not None:
            raise bad("a ZERO extent has no file")
    elif not filename:
        raise bad(f"a {kind} extent needs a file name")
    offset = None
    if offset_text is not None:
        if kind not in OFFSET_TYPES:
            raise bad(f"a {kind} extent has no offset")
        if not offset_text.isdigit():
            raise bad("offset is not a number of sectors")
        offset = int(offset_text)
    return Extent(access, int(match.group("sectors")), kind, filename, offset, number)


class Readable(Protocol):
    """A file opened for reading: a local file, or one read over SFTP."""

    def read(self, size: int, /) -> bytes: ...

    def seek(self, offset: int, /) -> object: ...


def read_descriptor(path: Path) -> VmdkDescriptor:
    """Read the descriptor of a VMDK file: the file itself, or the one embedded in it.

    Opens path read-only; raise VmdkDescriptorError if it holds no descriptor (an extent,
    a binary file) and OSError if it cannot be read.
    """
    with path.open("rb") as f:
        return read_descriptor_from(f, str(path))


def read_descriptor_from(f: Readable, name: str) -> VmdkDescriptor:
    """read_descriptor() of a file already open for reading at its start; name is for messages."""
    head = f.read(SECTOR)
    header = parse_sparse_header(head)
    if header is not None:
        start, size = _descriptor_area(header, path=name)
        f.seek(start)
        raw = f.read(size)
        if len(raw) < size:
            raise VmdkDescriptorError(
                name, "embedded descriptor lies outside the file (truncated?)"
            )
        text = decode_descriptor(raw.split(b"\0", 1)[0], path=name)
        return parse_descriptor(text, path=name, embedded=True)
    if head[:4] == COWD_MAGIC or head[:8] == SESPARSE_MAGIC:
        raise VmdkDescriptorError(
            name,
            "a delta extent, not a descriptor",
            hint="name the disk's descriptor file, not one of its extents",
        )
    data = head + f.read(MAX_DESCRIPTOR + 1 - len(head))
    # qemu-img pads the descriptors it writes with NULs to a whole sector.
    data = data.rstrip(b"\0")
    if len(data) > MAX_DESCRIPTOR or _BINARY.search(data):
        raise VmdkDescriptorError(
            name,
            "not a VMDK descriptor (binary data: a flat extent or another image format?)",
            hint="name the disk's descriptor file, not one of its extents",
        )
    return parse_descriptor(decode_descriptor(data, path=name), path=name)


def format_descriptor(desc: VmdkDescriptor) -> str:
    """Descriptor text for desc, always UTF-8 (the emitter behind rewritten descriptors)."""
    out = ["# Disk DescriptorFile", f"version={desc.version}", 'encoding="UTF-8"']
    if desc.cid is not None:
        out.append(f"CID={desc.cid:08x}")
    if desc.parent_cid is not None:
        out.append(f"parentCID={desc.parent_cid:08x}")
    out.append(f'createType="{desc.create_type}"')
    if desc.parent_filename_hint is not None:
        out.append(f'parentFileNameHint="{desc.parent_filename_hint}"')
    out += [f'{k}="{v}"' for k, v in desc.header.items() if k.lower() != "encoding"]
    out += ["", "# Extent description"]
    for extent in desc.extents:
        line = f"{extent.access} {extent.sectors} {extent.kind}"
        if extent.filename is not None:
            line += f' "{extent.filename}"'
        if extent.offset is not None:
            line += f" {extent.offset}"
        out.append(line)
    out += ["", "# The Disk Data Base", "#DDB", ""]
    out += [f'{k} = "{v}"' for k, v in desc.ddb.items()]
    return "\n".join(out) + "\n"
