"""The check of a finished copy: the output, read back through its format, against the overlay.

copier.py runs it once a disk's copy is durable, unless the job says not to
(`--no-verify-copy`): the output's size first (`qemu-img compare` only warns when the sizes
differ), then one `qemu-img compare` of the whole disk, whose first difference fails the copy,
naming the disk and the offset. docs/benchmarks.md ("Verified copy") has what it costs, and
what was measured to make it cheaper.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from vmshift.errors import CopyError

QCOW2_MAGIC = b"QFI\xfb"

# qemu-img compare's report of the first difference (exit 1); the offset is the first
# differing 512-byte sector's, in bytes.
_MISMATCH = re.compile(r"Content mismatch at offset (\d+)!")
DIFFERS_HINT = (
    "the output read back is not what was converted: check the target's storage (dmesg) and "
    "run the conversion again"
)


def virtual_size(path: Path, fmt: str) -> int:
    """The disk size the image's format records: a raw file's size, a qcow2 header's size field.

    Read here rather than by `qemu-img info`: a process per disk for 8 bytes of a header whose
    layout the qcow2 specification fixes (magic at 0, size as a big-endian u64 at 24).
    """
    if fmt == "raw":
        return path.stat().st_size
    with path.open("rb") as f:
        header = f.read(32)
    if fmt != "qcow2" or len(header) < 32 or header[:4] != QCOW2_MAGIC:
        raise CopyError(f"{path}: not a {fmt} image vmshift can read the size of")
    return int.from_bytes(header[24:32], "big")


def device_size(path: Path) -> int:
    with path.open("rb", buffering=0) as f:
        return f.seek(0, os.SEEK_END)


def check_size(label: str, output: Path, fmt: str, wanted: int, device: bool) -> None:
    """The output holds a disk of the overlay's size; a block device (a pool's logical volume)
    may be larger."""
    size = device_size(output) if device else virtual_size(output, fmt)
    if size < wanted or (size > wanted and not device):
        raise CopyError(
            f"{label}: the copy is {size} bytes, the converted disk {wanted} "
            "(the output was removed)",
            hint=DIFFERS_HINT,
        )


def compare_argv(
    overlay: Path, output: Path, fmt: str, *, device_size: int | None = None
) -> list[str]:
    """The output, read through its format, against the overlay.

    Not strict (-s): the output is allocated differently from the overlay by design (zeros
    skipped, preallocation, compression) and only the content counts. device_size: the output
    is a block device (a pool's logical volume), which may be larger than the disk; only the
    disk's first device_size bytes are compared (qemu-img would also want the rest zero).
    """
    target = str(output)
    if device_size is not None:
        node = {"driver": "host_device", "filename": target}
        target = "json:" + json.dumps({"driver": "raw", "size": device_size, "file": node})
    return ["qemu-img", "compare", "-p", "-f", "qcow2", "-F", fmt, str(overlay), target]


def mismatch_offset(messages: list[str]) -> int | None:
    """The offset qemu-img compare reported the first difference at, if it did."""
    found = (_MISMATCH.search(m) for m in messages)
    return next((int(m.group(1)) for m in found if m), None)


def differs(label: str, offset: int | None) -> CopyError:
    where = "" if offset is None else f" at offset {offset}"
    return CopyError(
        f"{label}: the copy differs from the converted disk{where} (the output was removed)",
        hint=DIFFERS_HINT,
    )


def last_line(stderr: str, rc: int) -> str:
    """What to quote of a failed qemu-img: its last line of stderr."""
    return stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {rc}"
