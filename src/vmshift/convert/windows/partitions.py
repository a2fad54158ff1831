"""Each partition's table entry type and filesystem type, in one appliance call per partition.

blkid's low-level probe reports the partition table scheme, the entry's type (a GPT type GUID or
an MBR id) and the filesystem type together; asking parted and sfdisk the same costs three to
four calls per partition, and parted is slow without KVM. A partition blkid cannot probe is
asked the long way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PartEntry:
    gpt_type: str | None  # upper-case type GUID, on a GPT disk
    mbr_id: int | None  # the entry's id byte, on an MBR disk
    fstype: str  # "" when unknown


def partition_entries(g: Any) -> dict[str, PartEntry]:
    """Every partition of every disk, in device order; one whose entry cannot be read has
    neither type."""
    return {part: _entry(g, part) for part in g.list_partitions()}


def _entry(g: Any, part: str) -> PartEntry:
    try:
        tags: dict[str, str] = g.blkid(part)
        scheme = tags.get("PART_ENTRY_SCHEME")
        kind = tags.get("PART_ENTRY_TYPE")
        if scheme == "gpt" and kind:
            return PartEntry(kind.upper(), None, tags.get("TYPE", ""))
        if scheme == "dos" and kind:
            return PartEntry(None, int(kind, 16), tags.get("TYPE", ""))
    except (RuntimeError, ValueError):
        pass
    return _asked(g, part)


def _asked(g: Any, part: str) -> PartEntry:
    gpt_type: str | None = None
    mbr_id: int | None = None
    try:
        disk = g.part_to_dev(part)
        number = g.part_to_partnum(part)
        if g.part_get_parttype(disk) == "gpt":
            gpt_type = str(g.part_get_gpt_type(disk, number)).upper()
        else:
            mbr_id = int(g.part_get_mbr_id(disk, number))
    except RuntimeError:
        pass
    try:
        fstype = str(g.vfs_type(part))
    except RuntimeError:
        fstype = ""
    return PartEntry(gpt_type, mbr_id, fstype)
