"""A disk copied in windows, each one journaled once it is durable: what makes a copy resumable.

The output is created at its full size first (`qemu-img create`, with the options a whole-disk
`qemu-img convert` would use), then each window [offset, offset+size) of the overlay is copied
onto the same range of the output by one `qemu-img convert -n`, both sides seen through qemu's
`raw` format driver, which exposes a byte range (offset, size) of any node:

    --image-opts        driver=raw,offset=O,size=S,file.driver=qcow2,file.file.filename=OVERLAY
    --target-image-opts driver=raw,offset=O,size=S,file.driver=FMT,file.file.filename=OUTPUT

Reading through the wrapper honours the overlay's backing chain (the qcow2 node opens its
backing file itself). After each window the output is fsync'ed, then a line `DISK OFFSET SIZE`
is appended to the journal and the journal fsync'ed: a journaled window is on the disk.

A resume never trusts the journal alone: the journaled windows of a disk (a prefix of it, as
windows are copied in order) are compared with the overlay by `qemu-img compare`, overlay as it
is against the output cut to the prefix (a raw node of size P). The overlay is not wrapped: for
`qemu-img compare`, a raw node over a qcow2 hides the qcow2's backing file from the block
status it skips unallocated ranges by, so whatever the overlay takes from its source would read
as zeros. Cut on the output side only, the compare says "mismatch at offset >= P" where the
prefix is good (the overlay goes on with data the short output lacks) and an offset below P in
the window that differs.

qemu's raw node cannot pass compressed writes on: a compressed qcow2 output (-c) is one window,
the whole disk, copied straight onto the qcow2 (a resume copies such a disk again if it was not
finished).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

# Each window costs a qemu-img process, an fsync and a journal line, 30-100 ms here; an
# interrupted copy loses at most one window's work. So windows are sized by time: the first is
# WINDOW, and each one copied in less than WINDOW_SECONDS makes the next twice as big, up to
# WINDOW_MAX (docs/benchmarks.md, "Resumable copy": fixed 1 GiB windows cost 5-20% on this
# machine's fast disk).
WINDOW = 1 << 30
WINDOW_MAX = 32 << 30
WINDOW_SECONDS = 8.0

JOURNAL = "copy.journal"


@dataclass(frozen=True)
class Window:
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


class Planner:
    """The windows of a disk from offset on, each sized by how fast the last one went."""

    def __init__(self, disk_size: int, offset: int = 0, *, compressed: bool = False) -> None:
        self.disk_size = disk_size
        self.offset = offset
        self.step = disk_size if compressed else WINDOW  # compressed: one window

    def next(self) -> Window | None:
        if self.offset >= self.disk_size:
            return None
        window = Window(self.offset, min(self.step, self.disk_size - self.offset))
        self.offset = window.end
        return window

    def took(self, seconds: float) -> None:
        if seconds < WINDOW_SECONDS:
            self.step = min(self.step * 2, max(WINDOW_MAX, self.step))


def image_opts(node: dict[str, object]) -> str:
    """A node tree as qemu's key=value list: nested keys dotted, commas in values doubled."""
    parts: list[str] = []

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}{key}.", sub)
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            parts.append(f"{prefix[:-1]}={text.replace(',', ',,')}")

    walk("", node)
    return ",".join(parts)


def _protocol(path: Path, device: bool) -> dict[str, object]:
    return {"driver": "host_device" if device else "file", "filename": str(path)}


def output_node(path: Path, fmt: str, device: bool) -> dict[str, object]:
    proto = _protocol(path, device)
    return proto if fmt == "raw" else {"driver": fmt, "file": proto}


def create_argv(output: Path, fmt: str, size: int, *, preallocated: bool) -> list[str]:
    """The empty output at its full size, made as a whole-disk qemu-img convert would."""
    opts = []
    if fmt == "qcow2":
        opts.append("compat=1.1")
    if preallocated:
        opts.append("preallocation=falloc")
    argv = ["qemu-img", "create", "-q", "-f", fmt]
    if opts:
        argv += ["-o", ",".join(opts)]
    return [*argv, str(output), str(size)]


def window_argv(
    overlay: Path,
    output: Path,
    fmt: str,
    window: Window,
    *,
    zero: bool,
    compressed: bool = False,
    device: bool = False,
) -> list[str]:
    """Copy one window of the overlay onto the same range of the existing output; zero: that
    range of the output is known to read as zeros (a fresh output), so zeros are not written."""
    argv = ["qemu-img", "convert", "-p", "-W", "-m", "8", "-n"]
    if zero:
        argv.append("--target-is-zero")
    if compressed:  # one window, the whole disk: no raw node (it cannot write compressed)
        return [*argv, "-c", "-f", "qcow2", "-O", fmt, str(overlay), str(output)]
    cut = {"driver": "raw", "offset": window.offset, "size": window.size}
    src = {**cut, "file": {"driver": "qcow2", "file": _protocol(overlay, False)}}
    dst = {**cut, "file": output_node(output, fmt, device)}
    return [*argv, "--image-opts", image_opts(src), "--target-image-opts", image_opts(dst)]


def prefix_compare_argv(
    overlay: Path, output: Path, fmt: str, prefix: int, device: bool
) -> list[str]:
    """Compare the output's first prefix bytes with the overlay (module docstring)."""
    node = {"driver": "raw", "offset": 0, "size": prefix, "file": output_node(output, fmt, device)}
    return ["qemu-img", "compare", "-p", "-f", "qcow2", str(overlay), "json:" + json.dumps(node)]


class Journal:
    """The append-only list of durable windows, one `DISK OFFSET SIZE` line each."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, disk: str, window: Window) -> None:
        line = f"{disk} {window.offset} {window.size}\n".encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def done(self, disk: str) -> list[Window]:
        """The windows the journal lists for disk that cover it from offset 0 without a gap,
        in order: a journal that skips one (it cannot, but a hand-edited one could) counts up
        to the gap only. A torn last line (a kill during the append) is ignored."""
        listed: dict[int, Window] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text(errors="replace").splitlines(keepends=True):
                fields = line.split()
                if not line.endswith("\n") or len(fields) != 3 or fields[0] != disk:
                    continue
                with contextlib.suppress(ValueError):
                    window = Window(int(fields[1]), int(fields[2]))
                    if window.size > 0:
                        listed[window.offset] = window
        prefix: list[Window] = []
        while (following := listed.get(prefix[-1].end if prefix else 0)) is not None:
            prefix.append(following)
        return prefix

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)
