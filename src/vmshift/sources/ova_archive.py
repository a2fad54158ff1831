"""OVA archives, listed and vetted before any data is read: tar (plain, or compressed with gzip,
bzip2 or xz) and zip (not allowed by the OVF spec, shipped all the same, read by virt-v2v).

The same rules hold for both: members that could escape the archive (absolute names, `..`),
that are not plain data (links, devices, FIFOs, GNU sparse files, encrypted zip members) or
that would be read ambiguously (duplicate names) are refused. What is left is a Member: where
its bytes lie in the archive, or, for a zip member stored compressed, its index in the zip,
which inflate() reads it through.
"""

from __future__ import annotations

import lzma
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from vmshift.errors import SourceError

CHUNK = 1 << 20
MAX_MEMBERS = 4096  # ovftool writes a handful; a huge count is not an OVA
UNSAFE = "the OVA was not written by an OVF exporter; it may try to reach files outside it"
TarMode = Literal["r:", "r:gz", "r:bz2", "r:xz"]
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
# Deflate cannot expand data more than 1032 times: a member that claims more is a zip bomb.
_DEFLATE_RATIO = 1032


@dataclass(frozen=True)
class Member:
    """A file of the package: `size` bytes at `offset` in `file` (the archive, or the file
    itself); a zip member stored compressed has its index in the zip instead."""

    name: str
    file: Path
    offset: int
    size: int
    zip_index: int | None = None

    @property
    def in_place(self) -> bool:
        """Whether the bytes lie as they are in `file`, where qemu can read them."""
        return self.zip_index is None


# --- names and tar ---------------------------------------------------------------------------


def safe_name(label: str, raw: str) -> str | None:
    """An archive member's name normalised ("a/./b" -> "a/b"), None for the archive's root;
    refuse names that could reach outside the package."""
    if raw.startswith("/"):
        raise refusal(label, raw, "has an absolute path")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refusal(label, raw, "has a '..' component")
    if "\\" in raw:
        raise refusal(label, raw, "has an unusable name")
    return "/".join(parts) or None


def refusal(label: str, raw: str, why: str) -> SourceError:
    return SourceError(f"{label}: refusing OVA: member {raw!r} {why}", hint=UNSAFE)


def list_tar(path: Path, mode: TarMode) -> dict[str, tarfile.TarInfo]:
    """The regular members by normalised name, after refusing anything unsafe (headers only)."""
    found: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(path, mode) as tar:
            for count, info in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise SourceError(f"{path}: more than {MAX_MEMBERS} members; not an OVA")
                name = _tar_name(path, info)
                if info.isdir():
                    continue
                if name in found:
                    raise refusal(str(path), info.name, "appears twice")
                found[name] = info
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        if "end of data" in str(exc):  # tarfile's word for a cut-off archive
            raise SourceError(f"{path}: the OVA is truncated") from exc
        raise SourceError(f"{path}: not a readable tar archive (an OVA is one): {exc}") from exc
    return found


def _tar_name(path: Path, info: tarfile.TarInfo) -> str:
    label = str(path)
    name = safe_name(label, info.name)
    if name is None and not info.isdir():
        raise refusal(label, info.name, "has an unusable name")
    if info.issym() or info.islnk():
        raise refusal(label, info.name, f"is a link (to {info.linkname!r})")
    if info.issparse():
        raise refusal(label, info.name, "is a GNU sparse file")
    if not (info.isreg() or info.isdir()):
        raise refusal(label, info.name, "is a device, FIFO or other special file")
    return name or "."


def extract_tar(path: Path, mode: TarMode, names: set[str], root: Path) -> None:
    try:
        with tarfile.open(path, mode) as tar:
            for info in tar:
                # Same headers as the vetted listing; the name check runs again all the same.
                name = _tar_name(path, info)
                src = tar.extractfile(info) if name in names and info.isreg() else None
                if src is None:
                    continue
                dest = root / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                with src, dest.open("xb") as out:
                    while data := src.read(CHUNK):
                        out.write(data)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceError(f"{path}: cannot unpack the compressed OVA: {exc}") from exc


# --- zip ---------------------------------------------------------------------------------------


def list_zip(path: Path) -> dict[str, Member]:
    """The file members of a zip by normalised name, after refusing anything unsafe."""
    label = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise SourceError(
            f"{label}: not a readable zip archive ({exc}); the OVA may be truncated"
        ) from exc
    if len(infos) > MAX_MEMBERS:
        raise SourceError(f"{label}: more than {MAX_MEMBERS} members; not an OVA")
    real, archive_size = path.resolve(), path.stat().st_size
    found: dict[str, Member] = {}
    with path.open("rb") as f:
        for index, info in enumerate(infos):
            name = safe_name(label, info.filename)
            # The Unix mode, when the zipper was Unix's (3); its file type may be left out.
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            if stat.S_ISLNK(mode):
                raise refusal(label, info.filename, "is a link")
            if info.is_dir() or stat.S_ISDIR(mode):
                continue
            if name is None:
                raise refusal(label, info.filename, "has an unusable name")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                raise refusal(label, info.filename, "is a device, FIFO or other special file")
            if info.flag_bits & 0x1:
                raise refusal(label, info.filename, "is encrypted")
            if name in found:
                raise refusal(label, info.filename, "appears twice")
            found[name] = _zip_member(
                label, f, info, index=index, name=name, real=real, size=archive_size
            )
    return found


def _zip_member(
    label: str, f: BinaryIO, info: zipfile.ZipInfo, *, index: int, name: str, real: Path, size: int
) -> Member:
    if info.compress_type not in _ZIP_METHODS:
        raise SourceError(
            f"{label}: member {name} uses zip compression method {info.compress_type}, which "
            "vmshift cannot inflate",
            hint="unzip it with a tool that can and give vmshift the directory",
        )
    deflated = info.compress_type == zipfile.ZIP_DEFLATED
    if deflated and info.file_size > info.compress_size * _DEFLATE_RATIO + 1024:
        raise SourceError(
            f"{label}: member {name} claims {info.file_size} bytes inflated from "
            f"{info.compress_size}, more than deflate can hold; not an OVA"
        )
    if info.compress_type != zipfile.ZIP_STORED:
        return Member(name, real, info.header_offset, info.file_size, zip_index=index)
    # Stored: the data follows the local header, whose name and extra field lengths may differ
    # from the central directory's.
    f.seek(info.header_offset)
    header = f.read(30)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise SourceError(f"{label}: not a readable zip archive: {name} has no local header")
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    if f.read(name_len).decode(encoding, errors="replace") != info.orig_filename:
        raise SourceError(
            f"{label}: not a readable zip archive: the headers of {name} disagree on its name"
        )
    offset = info.header_offset + 30 + name_len + extra_len
    if info.compress_size != info.file_size or offset + info.file_size > size:
        raise SourceError(f"{label}: the OVA is truncated (member {name} is cut short)")
    return Member(name, real, offset, info.file_size)


def inflate(label: str, member: Member, start: int, count: int) -> Iterator[bytes]:
    """`count` bytes from `start` of a zip member stored compressed, in CHUNK pieces. zipfile
    checks the member's CRC when it is read to its end."""
    assert member.zip_index is not None
    try:
        with zipfile.ZipFile(member.file) as zf, zf.open(zf.infolist()[member.zip_index]) as src:
            while start:
                skipped = len(src.read(min(CHUNK, start)))
                if not skipped:
                    raise EOFError("it ends early")
                start -= skipped
            while count:
                data = src.read(min(CHUNK, count))
                if not data:
                    raise EOFError("it ends early")
                count -= len(data)
                yield data
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError) as exc:
        raise SourceError(
            f"{label}: {member.name}: cannot inflate it from the zip: {exc}",
            hint="the OVA is damaged or incomplete; export or download it again",
        ) from exc
