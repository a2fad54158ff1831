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


@dataclass(frozen=True)
class CopyJob:
    overlay: Overlay
    output: Path
    format: str  # raw or qcow2
    preallocated: bool
    label: str


def convert_argv(job: CopyJob) -> list[str]:
    opts = []
    if job.format == "qcow2":
        opts.append("compat=1.1")
    if job.preallocated:
        opts.append("preallocation=falloc")
    argv = ["qemu-img", "convert", "-p", "-W", "-m", "8", "-f", "qcow2", "-O", job.format]
    if opts:
        argv += ["-o", ",".join(opts)]
    return [*argv, str(job.overlay.path), str(job.output)]


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
        buf = b""
        # qemu-img -p rewrites "    (12.34/100%)\r" in place: split on carriage returns.
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 4096):
            buf += chunk
            *records, buf = buf.replace(b"\n", b"\r").split(b"\r")
            for record in records:
                text = record.decode(errors="replace").strip()
                if text.startswith("(") and text.endswith("/100%)"):
                    with contextlib.suppress(ValueError):
                        self._emit(float(text[1:].split("/")[0]) / 100.0)
            if self.cancelled.is_set():
                self.proc.kill()
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
