"""Copy converted disks to their outputs: only allocated, non-zero data.

qemu-img convert does the block work (it already reads the overlay's allocation map and skips
zero runs, which is what virt-v2v's own copier achieves with nbdcopy); this module runs one per
disk, in parallel when there are several, turns its progress output into events, and makes
sure a failed or interrupted copy leaves no output file behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vmshift.blockio.overlay import Overlay
from vmshift.blockio.progress import CopyProgress, EventSink
from vmshift.errors import CopyError

log = logging.getLogger(__name__)

# Two copies keep both cores of a small conversion host busy; more only contend for the disk.
MAX_PARALLEL = 2
# How often, at most, the output's dirty pages are pushed to disk during the copy.
WRITEBACK_INTERVAL = 0.05


@dataclass(frozen=True)
class CopyJob:
    overlay: Overlay
    output: Path
    format: str  # raw or qcow2
    preallocated: bool
    label: str
    compressed: bool = False  # qcow2 only: every cluster written compressed (-oo compressed)


def convert_argv(job: CopyJob) -> list[str]:
    opts = []
    if job.format == "qcow2":
        opts.append("compat=1.1")
    if job.preallocated:
        opts.append("preallocation=falloc")
    argv = ["qemu-img", "convert", "-p", "-W", "-m", "8", "-f", "qcow2", "-O", job.format]
    if job.compressed:
        argv.append("-c")
    if opts:
        argv += ["-o", ",".join(opts)]
    return [*argv, str(job.overlay.path), str(job.output)]


class _EarlyWriteback:
    """Start writing the output back to disk while qemu-img still copies.

    qemu-img leaves everything it wrote dirty in the page cache, so the final fsync used to
    write the whole disk after the copy (docs/benchmarks.md). POSIX_FADV_DONTNEED starts
    writeback of dirty pages without waiting and drops the clean ones, so the copy and the
    flush overlap, as nbdcopy does with sync_file_range.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.last = 0.0

    def poke(self) -> None:
        now = time.monotonic()
        if now - self.last < WRITEBACK_INTERVAL:
            return
        self.last = now
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return  # qemu-img has not created it yet
        with contextlib.suppress(OSError):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _Copy:
    def __init__(self, job: CopyJob, sink: EventSink, cancelled: threading.Event) -> None:
        self.job = job
        self.sink = sink
        self.cancelled = cancelled
        self.proc: subprocess.Popen[bytes] | None = None

    def _emit(self, fraction: float, finished: bool = False) -> None:
        total = self.job.overlay.virtual_size
        self.sink(
            CopyProgress(
                disk=self.job.overlay.name,
                label=self.job.label,
                done=int(total * fraction),
                total=total,
                finished=finished,
            )
        )

    def run(self) -> None:
        argv = convert_argv(self.job)
        log.info("running: %s", shlex.join(argv))
        self._emit(0.0)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        writeback = _EarlyWriteback(self.job.output)
        try:
            self._follow(self.proc.stdout.fileno(), writeback)
        finally:
            writeback.close()
        stderr = self.proc.stderr.read().decode(errors="replace")
        rc = self.proc.wait()
        if self.cancelled.is_set():
            raise CopyError(f"{self.job.label}: copy cancelled")
        if rc != 0:
            last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {rc}"
            raise CopyError(f"{self.job.label}: copying to {self.job.output} failed: {last}")
        # qemu-img exits with data still in the page cache: make it durable before the target
        # renames the file into place as complete.
        fd_out = os.open(self.job.output, os.O_RDONLY)
        try:
            os.fsync(fd_out)
        finally:
            os.close(fd_out)
        self._emit(1.0, finished=True)

    def _follow(self, fd: int, writeback: _EarlyWriteback) -> None:
        """Turn qemu-img's progress into events until it closes stdout."""
        assert self.proc is not None
        buf = b""
        # qemu-img -p rewrites "    (12.34/100%)\r" in place: split on carriage returns.
        while chunk := os.read(fd, 4096):
            buf += chunk
            *records, buf = buf.replace(b"\n", b"\r").split(b"\r")
            for record in records:
                text = record.decode(errors="replace").strip()
                if text.startswith("(") and text.endswith("/100%)"):
                    with contextlib.suppress(ValueError):
                        self._emit(float(text[1:].split("/")[0]) / 100.0)
            writeback.poke()
            if self.cancelled.is_set():
                self.proc.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def copy_disks(jobs: Sequence[CopyJob], sink: EventSink) -> None:
    """Copy every job; on any failure or interrupt, stop the others and remove all outputs."""
    cancelled = threading.Event()
    copies = [_Copy(job, sink, cancelled) for job in jobs]
    try:
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, max(1, len(jobs)))) as pool:
            futures = [pool.submit(c.run) for c in copies]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                cancelled.set()
                for c in copies:
                    c.kill()
                raise
    except BaseException:
        for job in jobs:
            job.output.unlink(missing_ok=True)
        raise
