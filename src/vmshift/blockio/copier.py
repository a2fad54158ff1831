"""Copy converted disks to their outputs: only allocated, non-zero data, checked afterwards.

qemu-img convert does the block work (it already reads the overlay's allocation map and skips
zero runs, which is what virt-v2v's own copier achieves with nbdcopy); this module runs one per
window of each disk (blockio/windows.py: what makes a copy resumable), disks in parallel when
there are several, turns its progress output into events, and makes sure a failed or
interrupted copy leaves no output file behind, unless it was journaled for a resume.

Every copy is then verified unless its job says not to (`--no-verify-copy`): `qemu-img compare`
reads the output back through its format (qcow2 metadata, compressed clusters) and compares it
with the overlay it was copied from, skipping what both sides hold as unallocated or zero; the
first difference fails the copy, naming the disk and the offset (blockio/copy_check.py). A
compare pass rather than digests taken while copying, because qemu-img convert cannot hand out
what it read: the output has to be read back either way, and one compare reads both sides once.
The output's pages are kept in the page cache for it (early writeback starts with
sync_file_range instead of POSIX_FADV_DONTNEED, which drops them), so the check reads what the
copy wrote after the fsync made it durable, without reading the whole disk again from the
device. docs/benchmarks.md ("Verified copy") has what it costs, and what was tried to make it
cheaper (a check of each window while the next one is copied: no faster on this machine).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import stat
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from vmshift.blockio.copy_check import (
    DIFFERS_HINT,
    check_size,
    compare_argv,
    differs,
    last_line,
    mismatch_offset,
    virtual_size,
)
from vmshift.blockio.overlay import Overlay
from vmshift.blockio.progress import CopyProgress, EventSink, WarningEvent
from vmshift.blockio.windows import (
    Journal,
    Planner,
    Window,
    create_argv,
    prefix_compare_argv,
    window_argv,
)
from vmshift.blockio.writeback import EarlyWriteback, drop_pages
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
    compressed: bool = False  # qcow2 only: every cluster written compressed (-oo compressed)
    verify: bool = True  # compare the output with the overlay after the copy


def convert_argv(job: CopyJob) -> list[str]:
    """The whole-disk `qemu-img convert` the copier ran before windows (blockio/windows.py):
    bench/copy_bench.py's reference."""
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


class _Copy:
    def __init__(
        self,
        job: CopyJob,
        sink: EventSink,
        cancelled: threading.Event,
        journal: Journal | None = None,
        resume: bool = False,
    ) -> None:
        self.job = job
        self.sink = sink
        self.cancelled = cancelled
        self.journal = journal
        self.resume = resume
        self.lock = threading.Lock()  # orders starting a process against kill()
        self.proc: subprocess.Popen[bytes] | None = None
        self.span = Window(0, job.overlay.virtual_size)  # what the running copy's -p counts

    def _emit(self, phase: str, fraction: float, finished: bool = False) -> None:
        total = self.job.overlay.virtual_size
        span = self.span if phase == "copy" else Window(0, total)
        self.sink(
            CopyProgress(
                disk=self.job.overlay.name,
                label=self.job.label,
                done=span.offset + int(span.size * fraction),
                total=total,
                finished=finished,
                phase=phase,
            )
        )

    def run(self) -> None:
        self._copy()
        if self.job.verify:
            self._verify()
        else:
            self._emit("copy", 1.0, finished=True)

    def _copy(self) -> None:
        """Copy the windows the output lacks (blockio/windows.py), each made durable and
        journaled before the next; on a resume, first check those the journal lists."""
        job = self.job
        size = virtual_size(job.overlay.path, "qcow2")  # the overlay's own, as convert reads it
        device = job.format == "raw" and _is_device(job.output)
        done: list[Window] = []
        if self.resume and self.journal is not None and _fits(job, size, device):
            done = self._checked(self.journal.done(job.overlay.name), device)
            fresh = False  # the first window left may hold part of a copy
        elif device:
            fresh = False  # a block device holds what it held before
        else:
            job.output.unlink(missing_ok=True)
            argv = create_argv(job.output, job.format, size, preallocated=job.preallocated)
            rc, _, stderr = self._run(argv, "copy", None)
            if rc != 0:
                raise CopyError(f"{job.label}: cannot create {job.output}: {last_line(stderr, rc)}")
            fresh = True
        self.span = Window(0, done[-1].end if done else 0)
        self._emit("copy", 1.0)
        writeback = EarlyWriteback(job.output, keep_pages=job.verify)
        # A window is made durable and journaled while the next one is copied: the flush
        # waits on the device, not on the copy (docs/benchmarks.md, "Resumable copy").
        with ThreadPoolExecutor(max_workers=1) as flusher:
            pending: Future[None] | None = None
            try:
                planner = Planner(size, self.span.end, compressed=job.compressed)
                while (window := planner.next()) is not None:
                    started = time.monotonic()
                    self._window(window, zero=fresh, device=device, writeback=writeback)
                    planner.took(time.monotonic() - started)
                    if pending is not None:
                        pending.result()
                    pending = flusher.submit(self._durable, window)
                if pending is not None:
                    pending.result()
            finally:
                writeback.close()

    def _window(
        self, window: Window, *, zero: bool, device: bool, writeback: EarlyWriteback | None
    ) -> None:
        """Copy one window with qemu-img; _durable() then makes it durable and journals it."""
        job = self.job
        self.span = window
        argv = window_argv(
            job.overlay.path, job.output, job.format, window,
            zero=zero, compressed=job.compressed, device=device,
        )  # fmt: skip
        rc, _, stderr = self._run(argv, "copy", writeback)
        if rc != 0:
            raise CopyError(f"{job.label}: copying to {job.output} failed: {last_line(stderr, rc)}")

    def _durable(self, window: Window) -> None:
        job = self.job
        # qemu-img exits with data still in the page cache: make it durable before the
        # journal says so, and before the target renames the file into place as complete.
        fd_out = os.open(job.output, os.O_RDONLY)
        try:
            os.fsync(fd_out)
        finally:
            os.close(fd_out)
        if self.journal is not None:
            self.journal.append(job.overlay.name, window)

    def _checked(self, done: list[Window], device: bool) -> list[Window]:
        """The journaled windows once compared with the overlay, a window that differs copied
        again (and said so): what the output holds for sure."""
        job = self.job
        if not done:
            return done
        self.sink(WarningEvent(
            f"{job.label}: resuming the copy after {done[-1].end >> 20} MiB already on "
            f"{job.output}; checking them against the converted disk"
        ))  # fmt: skip
        seen: set[int] = set()
        while True:
            self.span = Window(0, done[-1].end)
            argv = prefix_compare_argv(
                job.overlay.path, job.output, job.format, self.span.size, device
            )
            rc, messages, stderr = self._run(argv, "copy", None)
            offset = mismatch_offset(messages)
            if rc == 0 or (rc == 1 and offset is not None and offset >= self.span.size):
                return done
            if rc != 1 or offset is None:
                raise CopyError(
                    f"{job.label}: checking {job.output} failed: {last_line(stderr, rc)}"
                )
            bad = next(w for w in done if w.offset <= offset < w.end)
            if bad.offset in seen:
                raise CopyError(
                    f"{job.label}: {job.output} still differs at offset {offset} after copying "
                    "that part again", hint=DIFFERS_HINT,
                )  # fmt: skip
            seen.add(bad.offset)
            self.sink(WarningEvent(
                f"{job.label}: the part of {job.output} at {bad.offset}+{bad.size} differs from "
                f"the converted disk (at offset {offset}): copying it again"
            ))  # fmt: skip
            self._window(bad, zero=False, device=device, writeback=None)
            self._durable(bad)

    def _verify(self) -> None:
        """Compare the durable output with the overlay (copy_check.py); raise CopyError where
        they differ."""
        job = self.job
        # This phase's first event comes before anything is read back.
        self._emit("verify", 0.0)
        wanted = virtual_size(job.overlay.path, "qcow2")
        device = job.format == "raw" and stat.S_ISBLK(job.output.stat().st_mode)
        check_size(job.label, job.output, job.format, wanted, device)
        argv = compare_argv(
            job.overlay.path, job.output, job.format, device_size=wanted if device else None
        )
        rc, messages, stderr = self._run(argv, "verify", None)
        if rc == 1:
            raise differs(job.label, mismatch_offset(messages))
        if rc != 0:
            raise CopyError(f"{job.label}: verifying {job.output} failed: {last_line(stderr, rc)}")
        drop_pages(job.output)
        self._emit("verify", 1.0, finished=True)

    def _run(
        self, argv: list[str], phase: str, writeback: EarlyWriteback | None
    ) -> tuple[int, list[str], str]:
        """Run one qemu-img with -p to its end: exit code, stdout's messages, stderr."""
        log.info("running: %s", shlex.join(argv))
        with self.lock:
            if self.cancelled.is_set():
                raise CopyError(f"{self.job.label}: copy cancelled")
            self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self.proc as proc:
            assert proc.stdout is not None and proc.stderr is not None
            try:
                messages = self._follow(proc, phase, writeback)
                stderr = proc.stderr.read().decode(errors="replace")
            except BaseException:
                proc.kill()
                raise
            rc = proc.wait()
        if self.cancelled.is_set():
            raise CopyError(f"{self.job.label}: copy cancelled")
        return rc, messages, stderr

    def _follow(
        self, proc: subprocess.Popen[bytes], phase: str, writeback: EarlyWriteback | None
    ) -> list[str]:
        """Turn qemu-img's progress into events until it closes stdout; return the rest."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        messages: list[str] = []
        # qemu-img -p rewrites "    (12.34/100%)\r" in place: split on carriage returns.
        while chunk := os.read(fd, 4096):
            buf += chunk
            *records, buf = buf.replace(b"\n", b"\r").split(b"\r")
            for record in records:
                text = record.decode(errors="replace").strip()
                if text.startswith("(") and text.endswith("/100%)"):
                    with contextlib.suppress(ValueError):
                        self._emit(phase, float(text[1:].split("/")[0]) / 100.0)
                elif text:
                    messages.append(text)
            if writeback is not None:
                writeback.poke()
            if self.cancelled.is_set():
                proc.kill()
        if buf.strip():
            messages.append(buf.decode(errors="replace").strip())
        return messages

    def kill(self) -> None:
        with self.lock:
            proc = self.proc
            if proc is None or proc.poll() is not None:
                return
            proc.kill()
        proc.wait()


def _is_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except FileNotFoundError:
        return False


def _fits(job: CopyJob, size: int, device: bool) -> bool:
    """The output a resume finds is one this copy could have made: there, of the disk's size."""
    try:
        return device or virtual_size(job.output, job.format) == size
    except (OSError, CopyError):
        return False


def copy_disks(
    jobs: Sequence[CopyJob],
    sink: EventSink,
    journal: Journal | None = None,
    *,
    resume: bool = False,
) -> None:
    """Copy (and verify) every job; on any failure or interrupt, stop the others and remove
    all outputs, except with a journal: then what was copied stays for a resume, and the
    caller decides (pipeline.py keeps it when a signal interrupted the copy).

    journal: each window of each disk is listed there once durable (blockio/windows.py).
    resume: continue the copy the journal describes: the windows it lists are checked against
    the overlays, one that differs is copied again (with a WarningEvent), then the rest.

    Each disk's events are its copy's progress, then, when verified, the compare's (phase
    "verify"), whose first event is sent before the output is read back. The last event of a
    disk is `finished`.
    """
    cancelled = threading.Event()
    copies = [_Copy(job, sink, cancelled, journal, resume) for job in jobs]
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
        if journal is None:
            for job in jobs:
                job.output.unlink(missing_ok=True)
        raise
