"""Partition selection and resizing (`p2v.partitions=`, `p2v.resize=`): checked on the
client, before anything is sent, and carried to the server as each disk's Layout.

- Selection: the partitions of a converted disk that p2v.partitions does not name are not
  sent (their ranges become holes in the export) and are deleted from the target's partition
  table. Without p2v.partitions, every partition is kept. A converted disk none of whose
  partitions is named is refused (it would arrive empty): leave it out of p2v.disks.
- Resizing: a partition grows or shrinks to a new size in the target's disk layout, in
  whole MiB (rounded away from its present size); its filesystem goes with it. Growing works
  for what virt-resize grows (ext2/3/4, xfs, btrfs, ntfs, swap, LVM PVs); shrinking only
  where the filesystem can be shrunk offline first (ext2/3/4 with resize2fs, ntfs with
  ntfsresize), and not below its used data plus a margin. An xfs (which cannot shrink at
  all) or any other shrink is refused here, up front, naming the partition. A partition is
  resized once, and only if it is sent.

The server applies a Layout on a staged copy of the used data (sources/p2v_reshape.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmshift.errors import UsageError
from vmshift.p2v.machine import Disk, Partition
from vmshift.p2v.settings import Resize

SHRINKABLE = frozenset({"ext2", "ext3", "ext4", "ntfs"})
GROWABLE = SHRINKABLE | {"xfs", "btrfs", "swap", "LVM2_member"}
SHRINK_MARGIN = 1.10  # a shrunk filesystem keeps its used data plus 10 %
MIN_STEP = 1 << 20  # sizes are whole MiB (virt-resize aligns partitions itself)


@dataclass(frozen=True)
class Layout:
    """What changes in one disk's partition table on the target."""

    delete: tuple[int, ...] = ()  # partition numbers not sent and removed
    resize: tuple[tuple[int, int], ...] = ()  # (partition number, new size in bytes)

    @property
    def changed(self) -> bool:
        return bool(self.delete or self.resize)

    def new_size(self, disk_size: int, sizes: dict[int, int]) -> int:
        """The target disk's size: the source's, plus what grows, less what shrinks or goes."""
        grown = sum(new - sizes[n] for n, new in self.resize)
        return disk_size + grown - sum(sizes[n] for n in self.delete)


def _find(disks: Sequence[Disk], name: str, key: str) -> tuple[Disk, Partition]:
    """The partition name (sda2 or /dev/sda2) of one of disks; UsageError naming key if none."""
    short = name.removeprefix("/dev/")
    for disk in disks:
        for part in disk.partitions:
            if part.number > 0 and short in (part.name, part.path.removeprefix("/dev/")):
                return disk, part
    raise UsageError(f"{key}: {name} is not a partition of the disks being converted")


def _target_size(part: Partition, resize: Resize) -> int:
    """The new size in whole MiB, rounded away from the partition's size: a grow by less
    than a MiB stays a grow, a shrink stays a shrink."""
    size = part.size + resize.size if resize.relative else resize.size
    if size > part.size:
        return -(-size // MIN_STEP) * MIN_STEP
    return size - size % MIN_STEP


def layouts(
    disks: Sequence[Disk],
    chosen: Iterable[str],
    resizes: Iterable[Resize],
    used: dict[str, int],
) -> dict[str, Layout]:
    """Each disk's Layout (by disk name) from p2v.partitions and p2v.resize, checked.

    used: each partition's used bytes (usedmap's PartitionUse.used, by partition name), for
    the lower bound of a shrink."""
    chosen = list(chosen)
    keep = {_find(disks, n, f"p2v.partitions={n}")[1].name for n in chosen}
    changes: dict[str, dict[str, list[tuple[int, int]]]] = {
        d.name: {"delete": [], "resize": []} for d in disks
    }
    if chosen:
        for disk in disks:
            numbered = [p for p in disk.partitions if p.number > 0]
            if numbered and not any(p.name in keep for p in numbered):
                raise UsageError(
                    f"p2v.partitions: names no partition of {disk.name}, which would be sent "
                    f"empty; leave it out of p2v.disks instead"
                )
            for part in numbered:
                if part.name not in keep:
                    changes[disk.name]["delete"].append((part.number, 0))
    resized: set[str] = set()
    for resize in resizes:
        key = f"p2v.resize={resize.partition}"
        disk, part = _find(disks, resize.partition, key)
        if part.name in resized:
            raise UsageError(f"{key}: {part.name} is resized twice")
        resized.add(part.name)
        if chosen and part.name not in keep:
            raise UsageError(f"{key}: {part.name} is not among p2v.partitions")
        new = _target_size(part, resize)
        fs = part.fstype or "unknown content"
        if new <= 0:
            raise UsageError(f"{key}: {part.name} would have no size left")
        if new > part.size and fs not in GROWABLE:
            raise UsageError(f"{key}: {part.name} holds {fs}, which cannot be grown")
        if new < part.size:
            if fs not in SHRINKABLE:
                why = "xfs cannot be shrunk" if fs == "xfs" else f"{fs} cannot be shrunk offline"
                raise UsageError(f"{key}: {part.name}: {why}")
            holds = used.get(part.name, part.size)
            floor = int(holds * SHRINK_MARGIN)
            if new < floor:
                raise UsageError(
                    f"{key}: {part.name} holds {holds / MIN_STEP:.1f} MiB of data; it cannot "
                    f"shrink to {new >> 20} MiB, only to {-(-floor // MIN_STEP)} MiB or more"
                )
        if new != part.size:
            changes[disk.name]["resize"].append((part.number, new))
    return {
        name: Layout(tuple(n for n, _ in c["delete"]), tuple(c["resize"]))
        for name, c in changes.items()
    }
