"""Check disk images before anything opens them: exists, readable, a known format, not corrupt.

qemu-img does the format work; this module turns its answers (and its silence about a text file
being a perfectly valid "raw" image) into one clear error naming the file.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import DiskImageError
from vmshift.process import CommandFailed, run

SECTOR = 512

# qemu's driver names that users know by another name.
FORMAT_NAMES = {"vpc": "vhd"}

# Formats whose metadata `qemu-img check` can verify (a truncated qcow2 opens fine otherwise).
CHECKABLE = {"qcow2", "qed", "vdi", "vhdx", "vmdk", "parallels"}


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    format: str  # qemu's driver name: raw, qcow2, vmdk, vpc, vhdx, vdi ...
    virtual_size: int
    backing_file: str | None

    @property
    def display_format(self) -> str:
        return FORMAT_NAMES.get(self.format, self.format)


def _check_readable(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise DiskImageError(f"{path}: no such file") from exc
    except PermissionError as exc:
        raise DiskImageError(f"{path}: permission denied") from exc
    except OSError as exc:
        raise DiskImageError(f"{path}: cannot access: {exc.strerror}") from exc
    if stat.S_ISDIR(st.st_mode):
        raise DiskImageError(f"{path}: is a directory, not a disk image")
    try:
        with path.open("rb") as f:
            f.read(SECTOR)
    except PermissionError as exc:
        raise DiskImageError(f"{path}: permission denied") from exc
    except OSError as exc:
        raise DiskImageError(f"{path}: cannot read: {exc.strerror}") from exc


def _qemu_message(exc: CommandFailed, path: Path) -> str:
    msg = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else str(exc)
    # qemu prefixes "qemu-img: Could not open 'PATH': "; we name the file ourselves.
    prefix = f"qemu-img: Could not open '{path}': "
    if msg.startswith(prefix):
        msg = msg[len(prefix) :]
    return msg.removeprefix("qemu-img: ")


def probe_image(path: Path, *, check: bool = True) -> ImageInfo:
    """Identify path's format and size; raise DiskImageError if it is no usable disk image."""
    _check_readable(path)
    try:
        proc = run(["qemu-img", "info", "--output=json", str(path)], timeout=120)
    except CommandFailed as exc:
        problem = _qemu_message(exc, path)
        raise DiskImageError(f"{path}: not a usable disk image: {problem}") from exc
    try:
        data = json.loads(proc.stdout)
        fmt = str(data["format"])
        vsize = int(data["virtual-size"])
    except (ValueError, KeyError) as exc:
        raise DiskImageError(f"{path}: qemu-img gave an answer vmshift cannot read") from exc
    backing = data.get("full-backing-filename") or data.get("backing-filename")

    if fmt == "raw" and _has_vhd_footer(path):
        # A fixed VHD is raw data followed by a 512-byte footer, so qemu's probe (which looks
        # at the start of the file) calls it raw; reading it as raw would expose the footer as
        # a bogus last sector.
        return probe_image_as(path, "vpc", check=check)
    if fmt == "raw":
        size = path.stat().st_size
        if size == 0:
            raise DiskImageError(f"{path}: empty file, not a disk image")
        if size % SECTOR:
            raise DiskImageError(
                f"{path}: not a disk image (raw, but {size} bytes is not a whole number of "
                f"{SECTOR}-byte sectors)"
            )
    if check and fmt in CHECKABLE:
        _check_consistency(path, fmt)
    return ImageInfo(path=path, format=fmt, virtual_size=vsize, backing_file=backing)


def _has_vhd_footer(path: Path) -> bool:
    size = path.stat().st_size
    if size < SECTOR * 2:
        return False
    with path.open("rb") as f:
        f.seek(size - SECTOR)
        return f.read(8) == b"conectix"


def probe_image_as(path: Path, fmt: str, *, check: bool = True) -> ImageInfo:
    """Like probe_image, for a format known by other means than qemu's probing."""
    try:
        proc = run(["qemu-img", "info", "-f", fmt, "--output=json", str(path)], timeout=120)
        data = json.loads(proc.stdout)
        vsize = int(data["virtual-size"])
    except CommandFailed as exc:
        problem = _qemu_message(exc, path)
        raise DiskImageError(f"{path}: not a usable {fmt} image: {problem}") from exc
    except (ValueError, KeyError) as exc:
        raise DiskImageError(f"{path}: qemu-img gave an answer vmshift cannot read") from exc
    if check and fmt in CHECKABLE:
        _check_consistency(path, fmt)
    return ImageInfo(path=path, format=fmt, virtual_size=vsize, backing_file=None)


def _check_consistency(path: Path, fmt: str) -> None:
    try:
        run(["qemu-img", "check", "-f", fmt, "--output=json", str(path)], timeout=600)
    except CommandFailed as exc:
        # Exit 3 means only leaked clusters: wasted space, harmless for reading.
        # Exit 63 means this format cannot be checked.
        if exc.returncode in (3, 63):
            return
        if exc.returncode == 2:
            raise DiskImageError(
                f"{path}: corrupt {FORMAT_NAMES.get(fmt, fmt)} image (qemu-img check found errors; "
                "the file may be truncated)"
            ) from exc
        raise DiskImageError(
            f"{path}: damaged {FORMAT_NAMES.get(fmt, fmt)} image: {_qemu_message(exc, path)}"
        ) from exc
