"""Partitioned disk images with real filesystems for the P2V tests (used-data maps, partition
selection and resizing): a GPT made by sfdisk, each filesystem made through a loop device over
its partition's bytes, files of random bytes written into it; and the disk described as P2V
discovery would describe it. Needs root (loop devices, mount)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from vmshift.p2v.fsprobe import blkid_probe, partition_name, read_partition_table
from vmshift.p2v.machine import Disk, Partition

MIB = 1 << 20
MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "dirty": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "vfat": ["mkfs.vfat"],
    "ntfs": ["mkfs.ntfs", "-q", "-f", "-Q"],
    "swap": ["mkswap"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "exfat": ["mkfs.exfat"],
}


def sh(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{argv[0]}: exit {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout


@contextlib.contextmanager
def attached(image: Path, span: tuple[int, int] | None = None, ro: bool = False) -> Iterator[str]:
    """A loop device over image, or over (start, size) bytes of it."""
    argv = ["losetup", "--find", "--show", *(["--read-only"] if ro else [])]
    if span is not None:
        argv += [f"--offset={span[0]}", f"--sizelimit={span[1]}"]
    device = sh(*argv, image).strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


@contextlib.contextmanager
def mounted(device: str, where: Path, *options: str) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    sh("mount", *options, device, where)
    try:
        yield where
    finally:
        sh("umount", where)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def partitioned_image(image: Path, size: int, spans: Iterable[tuple[int, int]]) -> None:
    """A sparse image of size bytes with a GPT of Linux partitions at (start, size) MiB."""
    with image.open("wb") as f:
        f.truncate(size)
    script = "label: gpt\n" + "".join(
        f"start={start * 2048}, size={length * 2048}, type=L\n" for start, length in spans
    )
    subprocess.run(["sfdisk", "-q", str(image)], input=script, text=True, check=True)


def make_filesystem(name: str, dev: str, contents: dict[str, bytes], staging: Path) -> None:
    """A filesystem of kind name (a MKFS key; "dirty" is an ext4 left needing recovery) on
    dev, holding contents (file name: bytes) in its top directory."""
    sh(*MKFS[name], dev)
    if name == "vfat":
        for file, data in contents.items():
            (staging / file).write_bytes(data)
            sh("mcopy", "-i", dev, staging / file, f"::/{file}")
    elif name in ("ext4", "xfs", "ntfs", "btrfs", "dirty"):
        options = ("-t", "ntfs-3g") if name == "ntfs" else ()
        with mounted(dev, staging / "mnt", *options) as mnt:
            for file, data in contents.items():
                (mnt / file).write_bytes(data)
    if name == "dirty":  # as if it crashed: its journal would need replaying
        sh("debugfs", "-w", "-R", "feature needs_recovery", dev)


def read_files(name: str, dev: str, tmp_path: Path) -> dict[str, str]:
    """The digests of the *.bin files in the top directory of the filesystem on dev."""
    found = {}
    if name == "vfat":
        for file in sh("mdir", "-b", "-i", dev, "::/").split():
            local = tmp_path / "vfat-file"
            sh("mcopy", "-n", "-i", dev, file, local)
            found[file.removeprefix("::/")] = digest(local.read_bytes())
        return found
    options = ("-t", "ntfs-3g", "-o", "ro") if name == "ntfs" else ("-o", "ro")
    with mounted(dev, tmp_path / "mnt", *options) as mnt:
        return {f.name: digest(f.read_bytes()) for f in mnt.iterdir() if f.name.endswith(".bin")}


def describe(device: str) -> Disk:
    """The disk as P2V discovery would describe it."""
    name = Path(device).name
    fd = os.open(device, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    parts = tuple(
        Partition(
            pname, f"/dev/{pname}", number, start, length, blkid_probe(device, start, length).fstype
        )
        for number, start, length in read_partition_table(device)
        for pname in [partition_name(name, number)]
    )
    return Disk(name, device, size, partitions=parts)
