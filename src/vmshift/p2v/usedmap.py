"""Which bytes of a physical disk hold data, so that only those cross the wire.

The client serves each disk read-only through nbdkit's extentlist filter: the ranges listed in
the file are data, every other range is reported as a hole that reads as zeros (NBD's HOLE and
ZERO flags), and NBD clients that copy (qemu-img convert, nbdcopy) skip reading those.

What counts as data, per partition (machine.Partition: start, size, blkid's fstype):

    ext2/3/4, xfs, btrfs, ntfs, vfat, exfat   the blocks the filesystem's allocation bitmap
                                              marks used, from `partclone.<fs> -D` (its ddrescue
                                              domain map: `+` used, `?` free); the rest of the
                                              partition beyond what the map covers is data
    swap                                      its first page (signature, UUID, label)
    anything else                             the whole partition, with the reason: unknown
                                              content, LVM2_member, crypto_LUKS, a filesystem
                                              not cleanly unmounted (its bitmaps may miss
                                              allocations still in its journal or log, so it is
                                              never mapped: no partclone -I), a missing tool

Everything outside the partitions (partition tables, the gap where boot loaders live, gaps
between partitions, the GPT backup) is data. partclone reads a filesystem at offset 0 of the
device it is given only (its --offset is for the output), and a loop device without -P has no
partition nodes, so each mapped filesystem is read through a read-only loop device over the
partition's bytes, detached when the map is made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmshift import process
from vmshift.errors import EnvironmentProblem, SourceError, VmshiftError
from vmshift.p2v.machine import Disk, Partition
from vmshift.process import CommandFailed, stop

log = logging.getLogger(__name__)

ALIGN = 4096  # extents are rounded outwards to this: NBD clients ask in 4 KiB multiples

# blkid's TYPE -> the partclone program that maps it
PARTCLONE = {
    "ext2": "partclone.ext2",
    "ext3": "partclone.ext3",
    "ext4": "partclone.ext4",
    "xfs": "partclone.xfs",
    "btrfs": "partclone.btrfs",
    "ntfs": "partclone.ntfs",
    "vfat": "partclone.vfat",
    "exfat": "partclone.exfat",
}

SWAP_PAGES = (4096, 8192, 16384, 65536)  # the header is one page of the kernel that made it
DOMAIN_STATUSES = frozenset("?*/-+")  # ddrescue's block states; partclone writes + and ?

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[bytes]]
Range = tuple[int, int]  # [start, end) in bytes


@dataclass(frozen=True)
class PartitionUse:
    """How one partition was mapped."""

    name: str  # sda1; the disk's name for a filesystem on the whole disk
    fstype: str | None
    method: str  # "partclone", "swap header" or "whole: <reason>"
    used: int  # bytes of the partition that are data (before the 4 KiB rounding)


@dataclass(frozen=True)
class UsedMap:
    """The data extents of one disk: sorted, merged, 4 KiB aligned (the last may end at an
    unaligned disk size)."""

    size: int  # bytes of the disk
    extents: tuple[tuple[int, int], ...]  # (offset, length)
    partitions: tuple[PartitionUse, ...]

    @property
    def used_bytes(self) -> int:
        return sum(length for _, length in self.extents)


def used_map(device: Path, disk: Disk, workdir: Path, *, run: Runner = process.run) -> UsedMap:
    """The data extents of device, whose partitions disk describes. partclone's maps and logs
    go to workdir. SourceError if the device cannot be read or does not match disk;
    EnvironmentProblem if no loop device can be attached."""
    size = _device_size(device)
    if size != disk.size:
        raise SourceError(f"{device}: is {size} bytes, its description says {disk.size}")
    parts = sorted(disk.partitions, key=lambda p: (p.start, p.number))
    for part in parts:
        if part.start < 0 or part.size <= 0 or part.start + part.size > size:
            raise SourceError(
                f"{device}: partition {part.name} ({part.start}+{part.size}) is not within "
                f"the disk ({size} bytes)"
            )
    used = subtract((0, size), [(p.start, p.start + p.size) for p in parts])
    records = []
    for part in parts:
        ranges, method = _partition_use(device, part, workdir, run)
        log.info("%s: %s (%s): %s", device, part.name, part.fstype, method)
        used += ranges
        records.append(PartitionUse(part.name, part.fstype, method, sum(e - s for s, e in ranges)))
    return UsedMap(size, aligned(used, size), tuple(records))


def write_extentlist(m: UsedMap, path: Path) -> None:
    """The file for nbdkit's extentlist filter: one `offset length` line per data extent
    (type omitted: 0, allocated data that is not known to be zero); the ranges not listed
    are holes that read as zeros (hole,zero), which copying clients do not read."""
    path.write_text("".join(f"{offset} {length}\n" for offset, length in m.extents))


def export_argv(device: Path, extentlist: Path, socket: Path) -> list[str]:
    """nbdkit serving device read-only on the unix socket with only the extents in extentlist
    as data. It stays in the foreground (the caller's child: stop it with SIGTERM), ends with
    its parent, and writes SOCKET.pid once it accepts connections (the sign it is ready), as
    sources/nbdkit.py's NbdkitServers.serve runs it."""
    return [
        "nbdkit",
        "--exit-with-parent",
        "--foreground",
        "--readonly",
        "-P",
        str(socket.with_name(socket.name + ".pid")),
        "-U",
        str(socket),
        "--filter=extentlist",
        "file",
        f"file={device}",
        f"extentlist={extentlist}",
    ]


# ---- ranges ----------------------------------------------------------------------------------


def merge(ranges: Iterable[Range]) -> list[Range]:
    """[start, end) ranges sorted, with overlapping and touching ones joined; empty ones
    dropped."""
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def subtract(whole: Range, holes: Iterable[Range]) -> list[Range]:
    """The parts of whole that none of holes covers."""
    out: list[Range] = []
    pos, end = whole
    for hole_start, hole_end in merge(holes):
        if hole_end <= pos:
            continue
        if hole_start >= end:
            break
        if hole_start > pos:
            out.append((pos, hole_start))
        pos = hole_end
    if pos < end:
        out.append((pos, end))
    return out


def aligned(ranges: Iterable[Range], size: int, align: int = ALIGN) -> tuple[tuple[int, int], ...]:
    """ranges rounded outwards to align (not past size) and merged, as (offset, length)."""
    rounded = ((s - s % align, min(-(-e // align) * align, size)) for s, e in ranges)
    return tuple((s, e - s) for s, e in merge(rounded))


# ---- partclone's domain map ------------------------------------------------------------------


def parse_domain(text: str) -> tuple[tuple[int, int, str], ...]:
    """The blocks (offset, size, status) of a ddrescue map file, as `partclone -D` writes it:
    `#` comments, a status line `current_pos current_status [current_pass]`, then one
    `pos size status` line per block, numbers in C notation (0x...). ValueError if the text is
    not such a map."""
    blocks: list[tuple[int, int, str]] = []
    status_line = False
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        try:
            if not status_line:
                if len(fields) not in (2, 3):
                    raise ValueError("not a status line")
                _number(fields[0])
                status_line = True
                continue
            if len(fields) != 3 or fields[2] not in DOMAIN_STATUSES:
                raise ValueError("not a block")
            blocks.append((_number(fields[0]), _number(fields[1]), fields[2]))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}: {line.strip()[:80]!r}") from None
    if not status_line:
        raise ValueError("no status line: not a domain map")
    return tuple(blocks)


def _number(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise ValueError("a negative number")
    return value


# ---- one partition ---------------------------------------------------------------------------


def _partition_use(
    device: Path, part: Partition, workdir: Path, run: Runner
) -> tuple[list[Range], str]:
    """The data ranges of part (disk offsets) and how they were found."""
    whole = [(part.start, part.start + part.size)]
    fstype = part.fstype
    if fstype == "swap":
        page = _swap_page(device, part)
        if page is None:
            return whole, "whole: no swap signature in its first page"
        return [(part.start, part.start + page)], "swap header"
    program = PARTCLONE.get(fstype or "")
    if program is None:
        what = f"{fstype} is not mapped" if fstype else "no filesystem found"
        return whole, f"whole: {what}"
    free: list[Range] = []
    why = _dirty(device, part)
    if why is None:
        with _loop(device, part, run) as loop:
            why = _xfs_log(loop) if fstype == "xfs" else None
            if why is None:
                free, why = _partclone_free(program, loop, part, workdir, run)
    if why is not None:
        return whole, f"whole: {why}"
    return subtract(whole[0], free), "partclone"


def _partclone_free(
    program: str, loop: Path, part: Partition, workdir: Path, run: Runner
) -> tuple[list[Range], str | None]:
    """The free ranges (disk offsets) partclone's domain map of loop shows, or why there are
    none to be had."""
    base = workdir / f"{part.name or 'disk'}.{program}"
    mapfile, logfile = base.with_name(base.name + ".map"), base.with_name(base.name + ".log")
    mapfile.unlink(missing_ok=True)  # partclone refuses to write over a file
    try:
        run([program, "-D", "-q", "-s", str(loop), "-o", str(mapfile), "-L", str(logfile)])
        blocks = parse_domain(mapfile.read_text(errors="replace"))
    except EnvironmentProblem:
        return [], f"{program} is not installed"
    except CommandFailed as exc:
        return [], f"{program}: {_partclone_reason(exc)}"
    except (OSError, ValueError) as exc:
        return [], f"{program} wrote no usable map: {exc}"
    end = part.start + part.size
    free = [
        (part.start + offset, min(part.start + offset + size, end))
        for offset, size, status in blocks
        if status == "?"
    ]
    return free, None


def _partclone_reason(exc: CommandFailed) -> str:
    """partclone's own complaint ("extfsclone.c: FS was not cleanly unmounted") without its
    source file's name and the banner and progress lines around it."""
    lines = [line.strip() for line in exc.stderr.splitlines()]
    skip = ("Partclone", "Starting to", "Calculating", "Elapsed", "Total Time", "done!")
    said = [line for line in lines if line and not line.startswith(skip)]
    if not said:
        return f"exit {exc.returncode}"
    return re.sub(r"^[\w.+-]+\.c: ", "", said[-1])


@contextlib.contextmanager
def _loop(device: Path, part: Partition, run: Runner) -> Iterator[Path]:
    """A read-only loop device over part's bytes of device, detached on leaving."""
    argv = ["losetup", "--read-only", "--find", "--show"]
    argv += [f"--offset={part.start}", f"--sizelimit={part.size}", str(device)]
    try:
        loop = Path(run(argv).stdout.decode().strip())
    except VmshiftError as exc:
        raise EnvironmentProblem(
            f"{device}: cannot attach a loop device over {part.name}: {exc}",
            hint="the loop module is needed to map filesystems",
        ) from None
    try:
        yield loop
    finally:
        try:
            run(["losetup", "--detach", str(loop)])
        except VmshiftError as exc:
            log.warning("%s: cannot detach %s: %s", device, loop, exc)


# ---- what is on the partition ----------------------------------------------------------------


def _dirty(device: Path, part: Partition) -> str | None:
    """Why a filesystem's allocation maps cannot be trusted, from its superblock (what
    partclone does not check itself), or None."""
    if part.fstype in ("ext2", "ext3", "ext4"):
        # s_feature_incompat RECOVER: the journal holds transactions not yet in place (partclone
        # only refuses a state other than clean, which a journalled ext keeps when it crashes).
        sb = 1024
        recover = _unpack(device, part, sb + 0x60, "<I") & 0x4
        if _unpack(device, part, sb + 0x38, "<H") == 0xEF53 and recover:
            return f"{part.fstype} journal needs recovery (not cleanly unmounted)"
    elif part.fstype == "btrfs":
        sb = 0x10000
        if _read(device, part.start + sb + 0x40, 8) == b"_BHRfS_M":
            if _unpack(device, part, sb + 0x60, "<Q"):
                return "btrfs log tree needs replay (not cleanly unmounted)"
            devices = _unpack(device, part, sb + 0x88, "<Q")
            if devices != 1:
                return f"btrfs spans {devices} devices"
    elif part.fstype == "exfat" and _unpack(device, part, 106, "<H") & 0x2:
        return "exfat volume is dirty (not cleanly unmounted)"
    return None


def _xfs_log(loop: Path) -> str | None:
    """Why the xfs log on loop rules its free space maps out (a dirty log), or None if it is
    clean. xfs_logprint says so in its header, before printing the log's transactions (a lot,
    for a big dirty log): it is stopped once it has."""
    argv = ["xfs_logprint", "-t", str(loop)]
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
    except FileNotFoundError:
        return "xfs_logprint is not installed (it tells a clean log)"
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if found := re.search(rb"state: <(\w+)>", line):
                state = found[1].decode()
                return None if state == "CLEAN" else f"xfs log is {state.lower()} (not replayed)"
    finally:
        stop(proc, grace=2.0)
        if proc.stdout is not None:
            proc.stdout.close()
    return "xfs_logprint did not tell the log's state"


def _swap_page(device: Path, part: Partition) -> int | None:
    """The size of a swap area's header page (its signature ends the page), or None."""
    head = _read(device, part.start, min(max(SWAP_PAGES), part.size))
    for page in SWAP_PAGES:
        if head[page - 10 : page] in (b"SWAPSPACE2", b"SWAP-SPACE"):
            return page
    return None


def _unpack(device: Path, part: Partition, offset: int, fmt: str) -> int:
    """One little-endian number at offset of part."""
    data = _read(device, part.start + offset, struct.calcsize(fmt))
    return int(struct.unpack(fmt, data)[0]) if len(data) == struct.calcsize(fmt) else 0


def _read(device: Path, offset: int, length: int) -> bytes:
    try:
        fd = os.open(device, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"{device}: cannot open: {exc.strerror}") from None
    try:
        return os.pread(fd, length, offset)
    except OSError as exc:
        raise SourceError(f"{device}: cannot read at {offset}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _device_size(device: Path) -> int:
    try:
        fd = os.open(device, os.O_RDONLY)
    except OSError as exc:
        raise SourceError(f"{device}: cannot open: {exc.strerror}") from None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
