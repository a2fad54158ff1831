"""P2V's used-data map against real filesystems: a GPT disk image with ext4, xfs, vfat, ntfs,
swap, unknown bytes, btrfs, a dirty ext4 and exfat, attached read-only as a loop device
without partition nodes (as the tests stand in for a physical disk), mapped, served through
nbdkit's extentlist filter and copied by qemu-img. What nbdkit served is counted by its log
filter, outside vmshift; the copy is checked by each filesystem's own fsck and by its files.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.p2v_disks import (
    attached,
    describe,
    digest,
    make_filesystem,
    mounted,
    partitioned_image,
    read_files,
    sh,
)
from vmshift.p2v.machine import Disk, Partition
from vmshift.p2v.usedmap import PartitionUse, UsedMap, export_argv, used_map, write_extentlist

MIB = 1 << 20
# name: (start, size) in MiB; a 1 MiB gap of boot loader bytes before swap
LAYOUT = {
    "ext4": (1, 64),
    "xfs": (65, 300),
    "vfat": (365, 64),
    "ntfs": (429, 64),
    "swap": (494, 32),
    "unknown": (526, 8),
    "btrfs": (534, 128),
    "dirty": (662, 32),
    "exfat": (694, 16),
}
IMAGE_SIZE = 712 * MIB
GAPS = ((20 * 1024, MIB), (493 * MIB, 494 * MIB))  # boot loader areas, with random bytes
FILE_SIZES = (3 * MIB + 123, MIB, 200 * 1024 + 7, 5000)
WITH_FILES = ("ext4", "xfs", "vfat", "ntfs", "btrfs")
FSCK = {
    "ext4": ["e2fsck", "-fn"],
    "xfs": ["xfs_repair", "-n"],
    "vfat": ["fsck.vfat", "-n"],
    "ntfs": ["ntfsfix", "-n"],
    "btrfs": ["btrfs", "check", "--readonly"],
    "exfat": ["fsck.exfat", "-n"],
}
TOOLS = [
    *(
        "losetup",
        "sfdisk",
        "blkid",
        "mkfs.ext2",
        "mcopy",
        "mdir",
        "debugfs",
        "xfs_io",
        "ntfs-3g",
        "nbdkit",
    ),
    *("mkfs.ext4", "mkfs.xfs", "mkfs.vfat", "mkfs.ntfs", "mkswap", "mkfs.btrfs", "mkfs.exfat"),
    *(f"partclone.{fs}" for fs in ("ext2", "ext4", "xfs", "vfat", "ntfs", "btrfs", "exfat")),
    *("qemu-img", "xfs_logprint", *(argv[0] for argv in FSCK.values())),
]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="needs root, loop devices and the filesystem tools",
)


def span(name: str) -> tuple[int, int]:
    start, size = LAYOUT[name]
    return start * MIB, size * MIB


def read_range(path: Path, start: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(length)


def build_source(image: Path, staging: Path) -> dict[str, dict[str, str]]:
    """The source disk; the digests of the files put in each filesystem."""
    rng = random.Random(13)
    partitioned_image(image, IMAGE_SIZE, LAYOUT.values())
    with image.open("r+b") as f:
        for start, end in GAPS:
            f.seek(start)
            f.write(rng.randbytes(end - start))
        f.seek(span("unknown")[0])
        f.write(rng.randbytes(span("unknown")[1]))
    files: dict[str, dict[str, str]] = {}
    for name in LAYOUT:
        if name == "unknown":
            continue
        with attached(image, span(name)) as dev:
            contents = {f"{name}-{i}.bin": rng.randbytes(n) for i, n in enumerate(FILE_SIZES)}
            if name in WITH_FILES:
                files[name] = {file: digest(data) for file, data in contents.items()}
            make_filesystem(name, dev, contents, staging)
    return files


def serve_and_copy(device: str, usage: UsedMap, work: Path, out: Path) -> int:
    """Copy the served device to out (qcow2) with qemu-img; the bytes nbdkit served (its log
    filter, outermost: what the client asked for)."""
    extents, sock, reads = work / "extents", work / "nbd.sock", work / "reads.log"
    write_extentlist(usage, extents)
    argv = export_argv(Path(device), extents, sock)
    argv.insert(argv.index("--filter=extentlist"), "--filter=log")
    argv.append(f"logfile={reads}")
    pidfile = Path(argv[argv.index("-P") + 1])
    with (work / "nbdkit.err").open("wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists():
            assert proc.poll() is None, (work / "nbdkit.err").read_text()
            assert time.monotonic() < deadline, "nbdkit did not start"
            time.sleep(0.05)
        sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", f"nbd+unix:///?socket={sock}", out)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    asked = re.findall(r" Read id=\d+ offset=0x[0-9a-f]+ count=0x([0-9a-f]+) ", reads.read_text())
    return sum(int(count, 16) for count in asked)


@dataclass(frozen=True)
class Copied:
    source: Path
    copy: Path  # raw
    usage: UsedMap
    served: int
    files: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def copied(tmp_path_factory: pytest.TempPathFactory) -> Copied:
    work = tmp_path_factory.mktemp("usedmap")
    source, staging = work / "source.img", work / "staging"
    staging.mkdir()
    files = build_source(source, staging)
    with attached(source, ro=True) as device:
        mapdir = work / "maps"
        mapdir.mkdir()
        usage = used_map(Path(device), describe(device), mapdir)
        served = serve_and_copy(device, usage, work, work / "copy.qcow2")
    sh("qemu-img", "convert", "-O", "raw", work / "copy.qcow2", work / "copy.raw")
    return Copied(source, work / "copy.raw", usage, served, files)


def by_layout(usage: UsedMap) -> dict[str, PartitionUse]:
    """The map's partitions by their names in LAYOUT (the table lists them in its order)."""
    names = list(LAYOUT)
    return {names[int(p.name.rsplit("p", 1)[1]) - 1]: p for p in usage.partitions}


def test_only_the_used_data_is_served(copied: Copied) -> None:
    methods = {name: p.method for name, p in by_layout(copied.usage).items()}
    assert methods["swap"] == "swap header"
    assert methods["unknown"].startswith("whole: ")
    for name in ("ext4", "xfs", "vfat", "ntfs", "btrfs", "exfat"):
        assert methods[name] == "partclone", (name, methods[name])
    in_files = sum(FILE_SIZES) * len(WITH_FILES)
    used = copied.usage.used_bytes
    print(f"files {in_files}, used {used}, served {copied.served}, disk {IMAGE_SIZE}")
    assert in_files <= copied.served <= 1.05 * used
    assert used < IMAGE_SIZE / 3


def test_the_copy_passes_fsck_and_holds_every_file(copied: Copied, tmp_path: Path) -> None:
    for name, argv in FSCK.items():
        with attached(copied.copy, span(name), ro=True) as dev:
            proc = subprocess.run([*argv, dev], capture_output=True, text=True, check=False)
            assert proc.returncode == 0, f"{name}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
            if name in copied.files:
                assert read_files(name, dev, tmp_path) == copied.files[name], name


def test_unknown_data_and_all_outside_the_filesystems_is_copied_whole(copied: Copied) -> None:
    partitions = {name: span(name) for name in ("unknown", "dirty")}
    starts = sorted(start * MIB for start, _ in LAYOUT.values())
    outside = {"before the partitions": (0, starts[0]), "GPT backup": (IMAGE_SIZE - MIB, MIB)}
    outside |= {f"gap at {start}": (start, end - start) for start, end in GAPS}
    for what, (start, length) in {**partitions, **outside}.items():
        expected = read_range(copied.source, start, length)
        assert read_range(copied.copy, start, length) == expected, what
    swap = span("swap")[0]
    assert read_range(copied.copy, swap, 4096) == read_range(copied.source, swap, 4096)


def test_a_dirty_ext4_is_sent_whole(copied: Copied) -> None:
    dirty = by_layout(copied.usage)["dirty"]
    assert dirty.fstype == "ext4"
    assert dirty.method == "whole: ext4 journal needs recovery (not cleanly unmounted)"
    assert dirty.used == span("dirty")[1]


def map_whole_disk(image: Path, fstype: str, workdir: Path) -> UsedMap:
    """The map of image, a filesystem without a partition table."""
    size = image.stat().st_size
    with attached(image, ro=True) as dev:
        name = Path(dev).name
        disk = Disk(name, dev, size, partitions=(Partition(name, dev, 0, 0, size, fstype),))
        return used_map(Path(dev), disk, workdir)


def test_an_xfs_with_a_dirty_log_on_a_whole_disk_is_sent_whole(tmp_path: Path) -> None:
    image = tmp_path / "xfs.img"
    with image.open("wb") as f:
        f.truncate(300 * MIB)
    with attached(image) as dev:
        sh("mkfs.xfs", "-q", dev)
        with mounted(dev, tmp_path / "mnt") as mnt:
            (mnt / "file").write_bytes(b"x" * MIB)
            sh("xfs_io", "-x", "-c", "shutdown -f", mnt)  # the log is left unreplayed
    usage = map_whole_disk(image, "xfs", tmp_path)
    assert [p.method for p in usage.partitions] == ["whole: xfs log is dirty (not replayed)"]
    assert usage.extents == ((0, 300 * MIB),)


def test_a_filesystem_partclone_refuses_is_sent_whole_with_its_reason(tmp_path: Path) -> None:
    image = tmp_path / "ext2.img"
    with image.open("wb") as f:
        f.truncate(32 * MIB)
    sh("mkfs.ext2", "-q", "-F", image)
    sh("debugfs", "-w", "-R", "ssv state 0", image)  # not cleanly unmounted
    usage = map_whole_disk(image, "ext2", tmp_path)
    assert [p.method for p in usage.partitions] == [
        "whole: partclone.ext2: FS was not cleanly unmounted"
    ]
    assert usage.used_bytes == 32 * MIB
