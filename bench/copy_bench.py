"""Copy throughput and bytes written: vmshift's copy engine against qemu-img convert and nbdcopy.

The goal (issue: copy benchmark): on the same image, vmshift copies at >= 0.95x the speed of
the faster of `qemu-img convert` and `nbdcopy`, and writes <= 1.05x the guest's used data.

The bench builds its own image: a GPT disk with a swap-sized partition of written zeros
(allocated but empty, like a thick-provisioned disk, so zero detection matters) and an ext4
filesystem filled with files of random data by `mke2fs -d` (no root, loop device or appliance
needed). "Used data" is what is left to copy once zeros are skipped: the bytes in 4 KiB blocks
that hold any non-zero byte, counted by reading the image.

Then, for raw->raw and raw->qcow2 (both sparse), it times every tool `--runs` times,
interleaved (each run starting with a different tool), and keeps each one's best. A timed run
ends when the output is on disk: the output is fsync'ed after the tool exits, because the tools
differ there (qemu-img convert writes through the page cache and does not flush by default;
nbdcopy writes a local file through with sync_file_range but does not fsync without --flush).
The time at the tool's exit and the CPU time of its processes are reported too. vmshift's path
is the pipeline's: a qcow2 overlay over the source (create_overlay), then copy_disks() with one
CopyJob, unverified (the copy engine alone). `--variants` adds rows for other qemu-img flags,
and for nbdcopy, on the same overlay, to find what would close a gap.

`--verify` times something else (issue 12): vmshift's copy with and without its verification
(`qemu-img compare` of the output against the overlay, on by default in `vmshift convert`), and
the same compare after dropping the output's pages, so that it reads the output from the disk.
The goal: the verified copy takes at most 1.15x the plain copy's wall time.

    .venv/bin/python -m bench.copy_bench [--size 2G] [--runs 3] [--workdir DIR] [--json]
                                         [--drop-caches] [--variants | --verify]

Timings on a shared machine are noisy: read the ratios, and run it again before believing a
small difference.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmshift.blockio.copier import CopyJob, convert_argv, copy_disks
from vmshift.blockio.copy_check import compare_argv
from vmshift.blockio.overlay import Overlay, create_overlay
from vmshift.blockio.progress import discard
from vmshift.errors import VmshiftError
from vmshift.guest.accel import detect_accelerator
from vmshift.model.vm import DiskEndpoint
from vmshift.process import CommandFailed, run

KiB = 1 << 10
MiB = 1 << 20
BLOCK = 4096  # granularity of "used data"
SEED = 20261126
IMAGE_VERSION = 1  # bump when the image recipe changes, so a cached image is rebuilt

GOAL_SPEED = 0.95  # vmshift's speed / the faster other tool's
GOAL_BYTES = 1.05  # bytes vmshift allocates in the output / used data
GOAL_VERIFY = 1.15  # the verified copy's time / the plain copy's (--verify)

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


class BenchError(VmshiftError):
    """A tool failed or produced a wrong copy."""


# --- the test image ------------------------------------------------------------------------


@dataclass(frozen=True)
class TestImage:
    path: Path
    size: int  # virtual size
    files: int  # files written into the filesystem
    payload: int  # bytes of file content (random data)
    used: int  # bytes in 4 KiB blocks holding a non-zero byte: what a copier must write
    zeros: int  # bytes of written (allocated) zeros in the swap-like partition


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: not a size like 2G or 512M")
    shift = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]
    value = int(m.group(1)) << shift
    if value < 64 * MiB or value % MiB:
        raise argparse.ArgumentTypeError(f"{text!r}: need a whole number of MiB, at least 64M")
    return value


def _file_sizes(rng: random.Random, budget: int) -> Iterator[int]:
    """Mostly small files, some medium, a few large: roughly what a system disk holds.

    85% up to 256 KiB, 14% up to 8 MiB, 1% up to 64 MiB: about one file per MiB.
    """
    left = budget
    while left > 0:
        r = rng.random()
        if r < 0.85:
            size = rng.randint(512, 256 * KiB)
        elif r < 0.99:
            size = rng.randint(256 * KiB, 8 * MiB)
        else:
            size = rng.randint(8 * MiB, 64 * MiB)
        size = min(size, left)
        left -= size
        yield size


def _write_tree(root: Path, budget: int, rng: random.Random) -> tuple[int, int]:
    """Files of random data under root, `budget` bytes in all; returns (files, bytes)."""
    dirs = ["usr/lib", "usr/share/doc", "var/lib/db", "var/log", "home/user/media", "opt/app"]
    count = total = 0
    for i, size in enumerate(_file_sizes(rng, budget)):
        directory = root / dirs[i % len(dirs)] / f"d{i // 97:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / f"f{i:05d}.bin").open("wb") as f:
            left = size
            while left:
                n = min(left, MiB)
                f.write(rng.randbytes(n))
                left -= n
        count += 1
        total += size
    return count, total


def _partition(path: Path, swap_bytes: int) -> list[tuple[int, int]]:
    """A GPT with a swap partition and a Linux partition on the rest; (offset, size) of each."""
    script = f"label: gpt\n,{swap_bytes // MiB}M,S\n,,L\n"
    run(["sfdisk", "-q", str(path)], input_bytes=script.encode(), timeout=60)
    table = json.loads(run(["sfdisk", "-J", str(path)], timeout=60).stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    return [(int(p["start"]) * sector, int(p["size"]) * sector) for p in table["partitions"]]


def _data_extents(fd: int, end: int) -> Iterator[tuple[int, int]]:
    pos = 0
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            raise
        stop = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, stop
        pos = stop


def nonzero_bytes(path: Path) -> int:
    """Bytes in BLOCK-sized blocks of the file that hold any non-zero byte."""
    zero = memoryview(bytes(MiB))
    total = 0
    with path.open("rb") as f:
        fd = f.fileno()
        done = 0
        for start, stop in _data_extents(fd, os.fstat(fd).st_size):
            pos = max(done, start - start % BLOCK)
            while pos < stop:
                chunk = memoryview(os.pread(fd, min(MiB, stop - pos), pos))
                if not chunk:
                    break
                if chunk != zero[: len(chunk)]:
                    for i in range(0, len(chunk), BLOCK):
                        block = chunk[i : i + BLOCK]
                        if block != zero[: len(block)]:
                            total += len(block)
                pos += len(chunk)
            done = pos
    return total


def build_image(path: Path, size: int, fill: float, seed: int) -> TestImage:
    """The test disk: GPT, a partition of written zeros, ext4 `fill` full of random files."""
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    swap_bytes = max(MiB, size // 16 // MiB * MiB)
    (swap_off, swap_size), (fs_off, fs_size) = _partition(path, swap_bytes)
    # A swap area that was zeroed when the disk was provisioned: allocated, all zeros.
    fd = os.open(path, os.O_WRONLY)
    try:
        zeros = bytes(MiB)
        for off in range(swap_off, swap_off + swap_size, MiB):
            os.pwrite(fd, zeros[: min(MiB, swap_off + swap_size - off)], off)
        os.fsync(fd)
    finally:
        os.close(fd)
    staging = path.with_name(path.name + ".tree")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        files, payload = _write_tree(staging, int(fs_size * fill), rng)
        run(
            [
                "mke2fs", "-q", "-F", "-t", "ext4", "-L", "benchroot", "-d", str(staging),
                "-E", f"offset={fs_off}", str(path), f"{fs_size // KiB}k",
            ],
            timeout=1800,
        )  # fmt: skip
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TestImage(path, size, files, payload, nonzero_bytes(path), swap_size)


def cached_image(workdir: Path, size: int, fill: float, seed: int) -> TestImage:
    """The image for these parameters, built once per work directory."""
    stem = f"source-{size // MiB}M-fill{int(fill * 100)}-seed{seed}-v{IMAGE_VERSION}"
    path = workdir / f"{stem}.raw"
    meta = workdir / f"{stem}.json"
    if path.exists() and meta.exists():
        with meta.open() as f:
            data = json.load(f)
        image = TestImage(path=path, **data)
        if path.stat().st_size == image.size:
            return image
    image = build_image(path, size, fill, seed)
    fields = asdict(image)
    del fields["path"]
    meta.write_text(json.dumps(fields, indent=1) + "\n")
    return image


# --- the tools -----------------------------------------------------------------------------

CopyFn = Callable[[TestImage, Path, str, Path], None]  # image, output, format, scratch dir


@dataclass(frozen=True)
class Tool:
    name: str
    copy: CopyFn
    programs: tuple[str, ...]
    variant: bool = False  # an investigation row (--variants), not one of the compared tools


def _vmshift(verify: bool, *, from_disk: bool = False) -> CopyFn:
    """What pipeline.py does: an overlay in a private work dir, then copy_disks().

    from_disk: copy unverified, drop the output's pages, then run the copier's compare: the
    check reading the output back from the disk instead of the page cache.
    """

    def copy(image: TestImage, out: Path, fmt: str, scratch: Path) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="vmshift-", dir=scratch))
        try:
            endpoint = DiskEndpoint(uri=str(image.path), format="raw", virtual_size=image.size)
            overlay = create_overlay(endpoint, workdir, "sda")
            job = CopyJob(overlay, out, fmt, False, "bench-sda", verify=verify and not from_disk)
            copy_disks([job], discard)
            if from_disk:
                fd = os.open(out, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
                run(compare_argv(overlay.path, out, fmt), timeout=1800)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return copy


def _qemu_img(image: TestImage, out: Path, fmt: str, scratch: Path) -> None:
    run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(image.path), str(out)])


def _create_target(out: Path, fmt: str, size: int) -> None:
    """An empty sparse destination, which nbdcopy needs to exist."""
    if fmt == "raw":
        with out.open("wb") as f:
            f.truncate(size)
    else:
        run(["qemu-img", "create", "-q", "-f", fmt, "-o", "compat=1.1", str(out), str(size)])


def _nbd_target(out: Path, fmt: str) -> list[str]:
    """nbdcopy's destination argument(s): the file itself, or qemu-nbd serving it."""
    if fmt == "raw":
        return [str(out)]
    return ["[", "qemu-nbd", "-f", fmt, str(out), "]"]


def _nbdcopy(image: TestImage, out: Path, fmt: str, scratch: Path) -> None:
    # The destination was just created empty, so let nbdcopy skip the zeros (virt-v2v's
    # nbdcopy call notes this as an optimisation its outputs could make); no --flush, since
    # every tool's time includes an fsync of the output.
    _create_target(out, fmt, image.size)
    argv = ["nbdcopy", "--destination-is-zero", "--", str(image.path), *_nbd_target(out, fmt)]
    run(argv)


OverlayArgv = Callable[[Overlay, Path, str], list[str]]


def _on_overlay(
    name: str, argv_for: OverlayArgv, *, precreate: bool = False, programs: Sequence[str] = ()
) -> Tool:
    """A variant row: the overlay as vmshift makes it, copied by argv_for(overlay, out, fmt)."""

    def copy(image: TestImage, out: Path, fmt: str, scratch: Path) -> None:
        workdir = Path(tempfile.mkdtemp(prefix="vmshift-", dir=scratch))
        try:
            endpoint = DiskEndpoint(uri=str(image.path), format="raw", virtual_size=image.size)
            overlay = create_overlay(endpoint, workdir, "sda")
            if precreate:
                _create_target(out, fmt, image.size)
            run(argv_for(overlay, out, fmt))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    return Tool(name, copy, ("qemu-img", *programs), variant=True)


def _copier(edit: Callable[[list[str]], list[str]]) -> OverlayArgv:
    """copier.convert_argv's command for this copy, changed by `edit`."""

    def argv_for(overlay: Overlay, out: Path, fmt: str) -> list[str]:
        return edit(convert_argv(CopyJob(overlay, out, fmt, False, "bench")))

    return argv_for


def _without(*flags: str) -> Callable[[list[str]], list[str]]:
    def edit(argv: list[str]) -> list[str]:
        out: list[str] = []
        skip = False
        for arg in argv:
            if skip:
                skip = False
            elif arg in flags:
                skip = arg == "-m"  # the only one of ours that takes a value
            else:
                out.append(arg)
        return out

    return edit


def _with(*extra: str, drop: Sequence[str] = ()) -> Callable[[list[str]], list[str]]:
    def edit(argv: list[str]) -> list[str]:
        argv = _without(*drop)(argv)
        return [*argv[:2], *extra, *argv[2:]]  # right after "qemu-img convert"

    return edit


def _nbdcopy_overlay(overlay: Overlay, out: Path, fmt: str) -> list[str]:
    source = ["[", "qemu-nbd", "-r", "-f", "qcow2", str(overlay.path), "]"]
    return ["nbdcopy", "--destination-is-zero", "--", *source, *_nbd_target(out, fmt)]


TOOLS = [
    Tool("vmshift", _vmshift(False), ("qemu-img",)),
    Tool("qemu-img convert", _qemu_img, ("qemu-img",)),
    Tool("nbdcopy", _nbdcopy, ("nbdcopy", "qemu-nbd")),
]


def _vmshift_flags_on_raw(image: TestImage, out: Path, fmt: str, scratch: Path) -> None:
    """vmshift's qemu-img command straight from the raw source: what the overlay costs."""
    endpoint = DiskEndpoint(uri=str(image.path), format="raw", virtual_size=image.size)
    argv = convert_argv(CopyJob(Overlay(image.path, endpoint, "sda"), out, fmt, False, "bench"))
    run([*argv[: argv.index("-f")], "-f", "raw", *argv[argv.index("-f") + 2 :]])


WRITEBACK_INTERVAL = 0.05  # seconds between two early-writeback kicks


def _early_writeback(image: TestImage, out: Path, fmt: str, scratch: Path) -> None:
    """vmshift's overlay and argv, kicking the kernel to write the output back as it grows.

    qemu-img leaves all its writes dirty in the page cache, so the final flush starts only when
    it exits; nbdcopy writes back as it goes (sync_file_range). posix_fadvise(DONTNEED) on the
    output starts writeback of its dirty pages without waiting for it (and drops the clean
    ones), so the flush overlaps the copy.
    """
    workdir = Path(tempfile.mkdtemp(prefix="vmshift-", dir=scratch))
    try:
        endpoint = DiskEndpoint(uri=str(image.path), format="raw", virtual_size=image.size)
        overlay = create_overlay(endpoint, workdir, "sda")
        argv = convert_argv(CopyJob(overlay, out, fmt, False, "bench"))
        with tempfile.TemporaryFile(dir=workdir) as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
            fd: int | None = None
            try:
                while True:
                    try:
                        proc.wait(timeout=WRITEBACK_INTERVAL)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if fd is None:
                        with contextlib.suppress(FileNotFoundError):
                            fd = os.open(out, os.O_RDONLY)
                    if fd is not None:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                if fd is not None:
                    os.close(fd)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if proc.returncode != 0:
                err.seek(0)
                raise CommandFailed(argv, proc.returncode, err.read().decode(errors="replace"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


VARIANTS = [
    _on_overlay("overlay, qemu-img defaults", _copier(_without("-p", "-W", "-m"))),
    Tool("vmshift flags, no overlay", _vmshift_flags_on_raw, ("qemu-img",), variant=True),
    _on_overlay("vmshift argv, no -W", _copier(_without("-W"))),
    _on_overlay("vmshift argv, -m 16", _copier(_with("-m", "16", drop=["-m"]))),
    _on_overlay("vmshift argv, -t none", _copier(_with("-t", "none"))),
    _on_overlay("vmshift argv, -t writeback", _copier(_with("-t", "writeback"))),
    _on_overlay("vmshift argv, -T none", _copier(_with("-T", "none"))),
    Tool("vmshift argv + early writeback", _early_writeback, ("qemu-img",), variant=True),
    _on_overlay(
        "nbdcopy from overlay", _nbdcopy_overlay, precreate=True, programs=("nbdcopy", "qemu-nbd")
    ),
]


PLAIN, VERIFIED = "vmshift --no-verify-copy", "vmshift, verified"
VERIFY_TOOLS = [
    Tool(PLAIN, _vmshift(False), ("qemu-img",)),
    Tool(VERIFIED, _vmshift(True), ("qemu-img",)),
    Tool("verified, output read from disk", _vmshift(True, from_disk=True), ("qemu-img",), True),
]


# --- timing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    fmt: str


CASES = [Case("raw->raw sparse", "raw"), Case("raw->qcow2 sparse", "qcow2")]


@dataclass
class Row:
    case: str
    tool: str
    variant: bool
    seconds: list[float] = field(default_factory=list)  # until the output is on disk
    exit_seconds: list[float] = field(default_factory=list)  # until the tool exited
    cpu_seconds: list[float] = field(default_factory=list)
    allocated: int = 0  # st_blocks * 512 of the output of the last run

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def best_exit(self) -> float:
        return min(self.exit_seconds)

    @property
    def best_cpu(self) -> float:
        return min(self.cpu_seconds)


def _drop_caches() -> None:
    DROP_CACHES.write_text("3\n")


def can_drop_caches() -> bool:
    try:
        os.sync()
        _drop_caches()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Sample:
    seconds: float  # until the output is on disk
    exit_seconds: float  # until the tool exited
    cpu_seconds: float  # user + system time of the tool's processes (and of our own threads)
    allocated: int  # st_blocks * 512 of the output


def _cpu_seconds() -> float:
    """CPU time of this process and of the children it has reaped (theirs include their own)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_once(
    tool: Tool, image: TestImage, case: Case, out: Path, *, scratch: Path, drop_caches: bool
) -> Sample:
    out.unlink(missing_ok=True)
    os.sync()  # the previous run's writeback must not land in this one's time
    if drop_caches:
        _drop_caches()
    cpu = _cpu_seconds()
    start = time.perf_counter()
    tool.copy(image, out, case.fmt, scratch)
    exited = time.perf_counter()
    cpu = _cpu_seconds() - cpu
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    synced = time.perf_counter()
    return Sample(synced - start, exited - start, cpu, out.stat().st_blocks * 512)


def verify(image: TestImage, out: Path, case: Case, tool: Tool) -> None:
    """The copy reads back the same as the source (holes compare as zeros)."""
    argv = ["qemu-img", "compare", "-q", "-f", "raw", "-F", case.fmt, str(image.path), str(out)]
    try:
        run(argv, timeout=1800)
    except VmshiftError as exc:
        raise BenchError(
            f"{case.name}, {tool.name}: the copy differs from the source: {exc}"
        ) from exc


def bench(
    image: TestImage, tools: Sequence[Tool], runs: int, workdir: Path, drop_caches: bool
) -> list[Row]:
    rows = {(c.name, t.name): Row(c.name, t.name, t.variant) for c in CASES for t in tools}
    for n in range(runs):
        # Each run starts with the next tool, so none is always first (or always after the
        # slowest one) while the machine's load drifts.
        order = [*tools[n % len(tools) :], *tools[: n % len(tools)]]
        for case in CASES:
            out = workdir / f"output.{case.fmt}"
            for tool in order:
                try:
                    sample = time_once(
                        tool, image, case, out, scratch=workdir, drop_caches=drop_caches
                    )
                except VmshiftError as exc:
                    raise BenchError(f"{case.name}, {tool.name}: {exc}") from exc
                if n == 0:
                    verify(image, out, case, tool)
                row = rows[case.name, tool.name]
                row.seconds.append(sample.seconds)
                row.exit_seconds.append(sample.exit_seconds)
                row.cpu_seconds.append(sample.cpu_seconds)
                row.allocated = sample.allocated
                print(
                    f"run {n + 1}/{runs}  {case.name:<18} {tool.name:<30} "
                    f"{sample.seconds:6.2f} s (exit {sample.exit_seconds:.2f} s, "
                    f"CPU {sample.cpu_seconds:.2f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            out.unlink(missing_ok=True)
    return list(rows.values())


# --- the report ----------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        return run(argv, timeout=30).stdout.decode(errors="replace").splitlines()[0]
    except (VmshiftError, IndexError):
        return "unknown"


def machine_info(workdir: Path) -> dict[str, Any]:
    accel = detect_accelerator()
    fstype = _first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(workdir)])
    return {
        "cpus": os.cpu_count(),
        "accelerator": f"{accel.name} ({accel.reason})",
        "kernel": platform.release(),
        "qemu-img": _first_line(["qemu-img", "--version"]),
        "nbdcopy": _first_line(["nbdcopy", "--version"]),
        "workdir filesystem": " ".join(fstype.split()),
    }


def _speed_vs_others(rows: Sequence[Row], row: Row) -> float | None:
    """row's speed over the fastest compared tool other than itself, in the same case."""
    others = [r.best for r in rows if r.case == row.case and not r.variant and r.tool != row.tool]
    return min(others) / row.best if others else None


def summarise(rows: Sequence[Row], image: TestImage) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        ratio = _speed_vs_others(rows, row)
        table.append(
            {
                "case": row.case,
                "tool": row.tool,
                "variant": row.variant,
                "best_seconds": round(row.best, 3),
                "best_exit_seconds": round(row.best_exit, 3),
                "best_cpu_seconds": round(row.best_cpu, 3),
                "seconds": [round(s, 3) for s in row.seconds],
                "cpu_seconds": [round(s, 3) for s in row.cpu_seconds],
                "mib_s_virtual": round(image.size / MiB / row.best, 1),
                "mib_s_used": round(image.used / MiB / row.best, 1),
                "allocated_bytes": row.allocated,
                "allocated_vs_used": round(row.allocated / image.used, 3),
                "speed_vs_fastest_other": None if ratio is None else round(ratio, 3),
            }
        )
    return table


def goals(rows: Sequence[Row], image: TestImage) -> list[dict[str, Any]]:
    result = []
    for case in CASES:
        ours = next(r for r in rows if r.case == case.name and r.tool == "vmshift")
        others = [r for r in rows if r.case == case.name and not r.variant and r is not ours]
        fastest = min(others, key=lambda r: r.best)
        speed = fastest.best / ours.best
        # Less sensitive to one lucky or unlucky run: the same ratio within each run (the
        # tools ran back to back), its median over the runs.
        paired = statistics.median(
            t / v for t, v in zip(fastest.seconds, ours.seconds, strict=True)
        )
        written = ours.allocated / image.used
        result.append(
            {
                "case": case.name,
                "fastest_other": fastest.tool,
                "speed_ratio": round(speed, 3),
                "speed_goal_met": speed >= GOAL_SPEED,
                "paired_speed_ratio_median": round(paired, 3),
                "bytes_ratio": round(written, 3),
                "bytes_goal_met": written <= GOAL_BYTES,
            }
        )
    return result


def render(report: dict[str, Any]) -> str:
    image = report["image"]
    lines = [
        f"image: {image['size'] / MiB:.0f} MiB raw (GPT, {image['zeros'] / MiB:.0f} MiB written "
        f"zeros, ext4 with {image['files']} files of random data = "
        f"{image['payload'] / MiB:.1f} MiB); used data (non-zero 4 KiB blocks): "
        f"{image['used'] / MiB:.1f} MiB",
        f"runs: {report['runs']} per tool, best kept; page cache dropped before each run: "
        f"{'yes' if report['drop_caches'] else 'no'}; load average before/after: "
        f"{report['load_before']} / {report['load_after']}",
        "",
        "| case | tool | best s (on disk) | s at exit | CPU s | MiB/s virtual | MiB/s used "
        "| written MiB | written/used | speed vs fastest other |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in report["results"]:
        vs = r["speed_vs_fastest_other"]
        lines.append(
            f"| {r['case']} | {r['tool']} | {r['best_seconds']:.2f} | "
            f"{r['best_exit_seconds']:.2f} | {r['best_cpu_seconds']:.2f} | "
            f"{r['mib_s_virtual']:.0f} | {r['mib_s_used']:.0f} | "
            f"{r['allocated_bytes'] / MiB:.1f} | {r['allocated_vs_used']:.3f} | "
            f"{'-' if vs is None else f'{vs:.2f}x'} |"
        )
    lines.append("")
    for g in report["goals"]:
        lines.append(
            f"{g['case']}: vmshift speed = {g['speed_ratio']:.2f}x {g['fastest_other']} "
            f"(goal >= {GOAL_SPEED}: {'met' if g['speed_goal_met'] else 'NOT met'}; "
            f"median of the per-run ratios {g['paired_speed_ratio_median']:.2f}x); "
            f"written = {g['bytes_ratio']:.3f}x used "
            f"(goal <= {GOAL_BYTES}: {'met' if g['bytes_goal_met'] else 'NOT met'})"
        )
    return "\n".join(lines)


def verify_goals(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """--verify: the verified copy's time against the plain copy's, per case."""
    result = []
    for case in CASES:
        plain, checked = (
            next(r for r in rows if r.case == case.name and r.tool == name)
            for name in (PLAIN, VERIFIED)
        )
        ratio = checked.best / plain.best
        paired = statistics.median(
            v / p for p, v in zip(plain.seconds, checked.seconds, strict=True)
        )
        result.append(
            {
                "case": case.name,
                "plain_seconds": round(plain.best, 3),
                "verified_seconds": round(checked.best, 3),
                "ratio": round(ratio, 3),
                "paired_ratio_median": round(paired, 3),
                "goal_met": ratio <= GOAL_VERIFY,
            }
        )
    return result


def render_verify(report: dict[str, Any]) -> str:
    lines = [
        f"image: {report['image']['size'] / MiB:.0f} MiB, used data "
        f"{report['image']['used'] / MiB:.1f} MiB; runs: {report['runs']} per tool, best kept; "
        f"page cache dropped before each run: {'yes' if report['drop_caches'] else 'no'}; "
        f"load average before/after: {report['load_before']} / {report['load_after']}",
        "",
        "| case | tool | best s (on disk) | CPU s | all runs s |",
        "|---|---|--:|--:|---|",
    ]
    for r in report["results"]:
        runs = " ".join(f"{x:.2f}" for x in r["seconds"])
        lines.append(
            f"| {r['case']} | {r['tool']} | {r['best_seconds']:.2f} | "
            f"{r['best_cpu_seconds']:.2f} | {runs} |"
        )
    lines.append("")
    for g in report["goals"]:
        lines.append(
            f"{g['case']}: verified copy = {g['ratio']:.2f}x the plain copy's time "
            f"({g['verified_seconds']:.2f} s / {g['plain_seconds']:.2f} s; median of the "
            f"per-run ratios {g['paired_ratio_median']:.2f}x; goal <= {GOAL_VERIFY}: "
            f"{'met' if g['goal_met'] else 'NOT met'})"
        )
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_workdir(path: Path | None) -> tuple[Path, bool]:
    """--workdir made absolute and created (kept at the end: True), or a new temporary
    directory under /var/tmp (removed at the end: False)."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="vmshift-bench-", dir="/var/tmp")), False
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path, True


def print_report(
    report: dict[str, Any], render: Callable[[dict[str, Any]], str], *, as_json: bool
) -> None:
    """The report on stdout: JSON, or the machine line and render(report)'s tables."""
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print("machine: " + "; ".join(f"{k}: {v}" for k, v in report["machine"].items()))
    print(render(report))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.copy_bench",
        description="Copy throughput and bytes written: vmshift vs qemu-img convert and nbdcopy.",
    )
    p.add_argument("--size", type=parse_size, default=2 << 30, help="disk size (default 2G)")
    p.add_argument("--runs", type=int, default=3, help="runs per tool; the best counts")
    p.add_argument(
        "--workdir",
        type=Path,
        help="where the image and outputs go; the image is kept there and reused "
        "(default: a temporary directory under /var/tmp, removed at the end)",
    )
    p.add_argument("--fill", type=float, default=0.5, help="fraction of ext4 to fill (0.5)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the image's random data")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--drop-caches",
        action="store_true",
        help="drop the page cache before each run (needs root), so sources are read from disk",
    )
    p.add_argument(
        "--variants",
        action="store_true",
        help="also time other qemu-img flags, and nbdcopy, on vmshift's overlay",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="time vmshift's copy with and without its verification instead",
    )
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if not 0.0 < args.fill <= 0.9:
        p.error("--fill must be in (0, 0.9]")
    if args.verify and args.variants:
        p.error("--verify and --variants do not go together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = VERIFY_TOOLS if args.verify else TOOLS + (VARIANTS if args.variants else [])
    missing = sorted({p for t in tools for p in t.programs if shutil.which(p) is None})
    for prog in ("sfdisk", "mke2fs"):
        if shutil.which(prog) is None:
            missing.append(prog)
    if missing:
        print(f"copy_bench: not installed: {', '.join(missing)}", file=sys.stderr)
        return 1
    drop = args.drop_caches
    if drop and not can_drop_caches():
        print(f"copy_bench: cannot write {DROP_CACHES}: not dropping caches", file=sys.stderr)
        drop = False
    workdir, keep = bench_workdir(args.workdir)
    try:
        print(f"building the test image in {workdir} ...", file=sys.stderr, flush=True)
        image = cached_image(workdir, args.size, args.fill, args.seed)
        load_before = _load()
        rows = bench(image, tools, args.runs, workdir, drop)
        report: dict[str, Any] = {
            "date": datetime.date.today().isoformat(),
            "machine": machine_info(workdir),
            "image": {k: v for k, v in asdict(image).items() if k != "path"},
            "runs": args.runs,
            "drop_caches": drop,
            "load_before": load_before,
            "load_after": _load(),
            "results": summarise(rows, image),
            "goals": verify_goals(rows) if args.verify else goals(rows, image),
        }
    except VmshiftError as exc:
        print(f"copy_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(report, render_verify if args.verify else render, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
