"""P2V partition selection and resizing, checked on the client (p2v/layout.py), and the
left-out partitions taken out of what the client serves (client.without)."""

from __future__ import annotations

import pytest

from vmshift.errors import UsageError
from vmshift.p2v.client import without
from vmshift.p2v.layout import SHRINK_MARGIN, Layout, layouts
from vmshift.p2v.machine import Disk, Partition
from vmshift.p2v.settings import Resize, parse_cmdline
from vmshift.p2v.usedmap import ALIGN, PartitionUse, UsedMap

MIB = 1 << 20
GIB = 1 << 30
ODD = 3 * 512  # sda1 is not a whole number of MiB


def _part(disk: str, number: int, start_mib: int, size: int, fstype: str | None) -> Partition:
    name = f"{disk}{number}"
    return Partition(name, f"/dev/{name}", number, start_mib * MIB, size, fstype)


SDA = Disk(
    "sda",
    "/dev/sda",
    2 * GIB,
    partitions=(
        _part("sda", 1, 1, 200 * MIB + ODD, "ext4"),
        _part("sda", 2, 202, 300 * MIB, "xfs"),
        _part("sda", 3, 502, 300 * MIB, "ext4"),
        _part("sda", 4, 802, 64 * MIB, "vfat"),
        _part("sda", 5, 866, 32 * MIB, "swap"),
        _part("sda", 6, 898, 8 * MIB, None),
        _part("sda", 7, 906, 100 * MIB, "ntfs"),
    ),
)
SDB = Disk("sdb", "/dev/sdb", GIB, partitions=(_part("sdb", 1, 1, 500 * MIB, "ext4"),))
USED = {"sda1": 50 * MIB, "sda3": 100 * MIB + 12345, "sda7": 20 * MIB, "sdb1": 10 * MIB}


def plan(*words: str, disks: tuple[Disk, ...] = (SDA, SDB)) -> dict[str, Layout]:
    """layouts() from kernel command line words, as the client calls it."""
    settings = parse_cmdline(" ".join(words))
    return layouts(disks, settings.partitions, settings.resize, USED)


def refused(*words: str) -> str:
    with pytest.raises(UsageError) as info:
        plan(*words)
    return info.value.message


def test_nothing_asked_changes_nothing() -> None:
    assert plan() == {"sda": Layout(), "sdb": Layout()}
    assert not Layout().changed


def test_a_relative_grow_is_rounded_up_to_whole_mib() -> None:
    # 200 MiB + 1.5 KiB + 100 MiB is not a whole number of MiB: the grow takes the next one
    assert plan("p2v.resize=/dev/sda1:+100M")["sda"] == Layout(resize=((1, 301 * MIB),))
    # a grow by less than a MiB stays a grow (sdb1 is whole MiB: the next MiB up)
    assert plan("p2v.resize=sdb1:+512K")["sdb"] == Layout(resize=((1, 501 * MIB),))


def test_an_absolute_grow_is_rounded_to_whole_mib() -> None:
    assert plan("p2v.resize=sda3:1G")["sda"] == Layout(resize=((3, GIB),))
    chosen = layouts([SDA], (), [Resize("sda3", 400 * MIB + 5000)], USED)
    assert chosen["sda"] == Layout(resize=((3, 401 * MIB),))


def test_xfs_btrfs_swap_grow() -> None:
    layout = plan("p2v.resize=sda2:+1G,sda5:64M")["sda"]
    assert layout == Layout(resize=((2, 300 * MIB + GIB), (5, 64 * MIB)))
    assert layout.changed


def test_an_ext4_shrinks_down_to_its_used_data_and_a_margin() -> None:
    floor = int(USED["sda3"] * SHRINK_MARGIN)
    lowest = -(-floor // MIB)  # the first whole MiB at or above the floor
    assert lowest == 111  # 100 MiB + 12345 bytes, plus 10 %
    assert plan(f"p2v.resize=sda3:{lowest}M")["sda"] == Layout(resize=((3, lowest * MIB),))
    assert plan("p2v.resize=/dev/sda3:-150M")["sda"] == Layout(resize=((3, 150 * MIB),))
    assert refused(f"p2v.resize=sda3:{lowest - 1}M") == (
        f"p2v.resize=sda3: sda3 holds {USED['sda3'] / MIB:.1f} MiB of data; it cannot shrink "
        f"to {lowest - 1} MiB, only to {lowest} MiB or more"
    )
    assert refused("p2v.resize=sda3:110M").endswith("only to 111 MiB or more")


def test_an_ntfs_shrinks_too() -> None:
    assert plan("p2v.resize=sda7:50M")["sda"] == Layout(resize=((7, 50 * MIB),))


def test_a_partition_without_a_used_figure_counts_as_full() -> None:
    # sent whole (nothing mapped it, e.g. a dirty journal): all of it counts as used
    assert plan("p2v.resize=sdb1:-100M")["sdb"] == Layout(resize=((1, 400 * MIB),))
    with pytest.raises(UsageError) as info:
        layouts([SDB], (), [Resize("sdb1", -100 * MIB, True)], {})
    assert info.value.message == (
        "p2v.resize=sdb1: sdb1 holds 500.0 MiB of data; it cannot shrink to 400 MiB, "
        "only to 550 MiB or more"
    )


def test_xfs_cannot_be_shrunk() -> None:
    assert refused("p2v.resize=/dev/sda2:-10M") == (
        "p2v.resize=/dev/sda2: sda2: xfs cannot be shrunk"
    )


@pytest.mark.parametrize(
    ("partition", "what"),
    [("sda4", "vfat"), ("sda5", "swap"), ("sda6", "unknown content")],
)
def test_other_shrinks_are_refused(partition: str, what: str) -> None:
    assert refused(f"p2v.resize={partition}:-1M") == (
        f"p2v.resize={partition}: {partition}: {what} cannot be shrunk offline"
    )


def test_vfat_and_unknown_content_cannot_grow() -> None:
    assert refused("p2v.resize=sda4:+1G") == (
        "p2v.resize=sda4: sda4 holds vfat, which cannot be grown"
    )
    assert refused("p2v.resize=sda6:+1G") == (
        "p2v.resize=sda6: sda6 holds unknown content, which cannot be grown"
    )


def test_a_shrink_to_nothing_is_refused() -> None:
    assert refused("p2v.resize=sda3:-300M") == "p2v.resize=sda3: sda3 would have no size left"


def test_names_that_are_not_partitions_of_the_converted_disks_are_refused() -> None:
    assert refused("p2v.resize=sdc1:+1G") == (
        "p2v.resize=sdc1: sdc1 is not a partition of the disks being converted"
    )
    assert refused("p2v.resize=sda:+1G") == (
        "p2v.resize=sda: sda is not a partition of the disks being converted"
    )
    with pytest.raises(UsageError) as info:
        plan("p2v.resize=sdb1:+1G", disks=(SDA,))  # sdb is not converted
    assert info.value.message == (
        "p2v.resize=sdb1: sdb1 is not a partition of the disks being converted"
    )
    assert refused("p2v.partitions=sda1,/dev/sda9") == (
        "p2v.partitions=/dev/sda9: /dev/sda9 is not a partition of the disks being converted"
    )


def test_a_partition_is_resized_once() -> None:
    assert refused("p2v.resize=sda1:+1G,/dev/sda1:+2G") == (
        "p2v.resize=/dev/sda1: sda1 is resized twice"
    )


def test_the_partitions_not_chosen_are_deleted() -> None:
    layouts_ = plan("p2v.partitions=sda1,/dev/sda3,sdb1")
    assert layouts_ == {"sda": Layout(delete=(2, 4, 5, 6, 7)), "sdb": Layout()}
    assert layouts_["sda"].changed


def test_names_with_and_without_dev_are_the_same_partition() -> None:
    assert plan("p2v.partitions=/dev/sda1,sda3,sdb1") == plan("p2v.partitions=sda1,/dev/sda3,sdb1")
    assert plan("p2v.resize=/dev/sda1:+100M") == plan("p2v.resize=sda1:+100M")


def test_a_disk_none_of_whose_partitions_is_chosen_is_refused() -> None:
    assert refused("p2v.partitions=sda1") == (
        "p2v.partitions: names no partition of sdb, which would be sent empty; "
        "leave it out of p2v.disks instead"
    )


def test_a_disk_without_a_partition_table_is_kept_whole() -> None:
    whole = Disk(
        "sdc", "/dev/sdc", GIB, partitions=(Partition("sdc", "/dev/sdc", 0, 0, GIB, "xfs"),)
    )
    chosen = layouts([SDA, whole], ["sda1"], [], USED)
    assert chosen == {"sda": Layout(delete=(2, 3, 4, 5, 6, 7)), "sdc": Layout()}
    with pytest.raises(UsageError, match="not a partition of the disks being converted"):
        layouts([whole], [], [Resize("sdc", GIB, True)], USED)


def test_a_left_out_partition_cannot_be_resized() -> None:
    assert refused("p2v.partitions=sda1,sdb1", "p2v.resize=sda3:+1G") == (
        "p2v.resize=sda3: sda3 is not among p2v.partitions"
    )


def test_selection_and_resizing_together() -> None:
    layout = plan("p2v.partitions=sda1,sda3,sdb1", "p2v.resize=sda1:+100M,/dev/sda3:150M")["sda"]
    assert layout == Layout(delete=(2, 4, 5, 6, 7), resize=((1, 301 * MIB), (3, 150 * MIB)))


def test_new_size() -> None:
    sizes = {p.number: p.size for p in SDA.partitions}
    layout = Layout(delete=(2, 4), resize=((1, 301 * MIB), (3, 150 * MIB)))
    grown = 301 * MIB - (200 * MIB + ODD)
    shrunk = 300 * MIB - 150 * MIB
    gone = 300 * MIB + 64 * MIB
    assert layout.new_size(SDA.size, sizes) == 2 * GIB + grown - shrunk - gone
    assert Layout().new_size(SDA.size, sizes) == SDA.size


# ---- client.without --------------------------------------------------------------------------

DISK = Disk(
    "loop3",
    "/dev/loop3",
    64 * MIB,
    partitions=(
        Partition("loop3p1", "/dev/loop3p1", 1, 1 * MIB, 20 * MIB, "ext4"),
        Partition("loop3p2", "/dev/loop3p2", 2, 21 * MIB, 20 * MIB, "xfs"),
        Partition("loop3p3", "/dev/loop3p3", 3, 41 * MIB, 22 * MIB, "ext4"),
    ),
)


def usage_of(disk: Disk, extents: tuple[tuple[int, int], ...]) -> UsedMap:
    uses = tuple(PartitionUse(p.name, p.fstype, "partclone", 0) for p in disk.partitions)
    return UsedMap(disk.size, extents, uses)


def test_without_removes_the_left_out_partitions_ranges_only() -> None:
    extents = (
        (0, 2 * MIB),  # the table and the start of p1
        (10 * MIB, 12 * MIB),  # the end of p1 and the start of p2
        (30 * MIB, 12 * MIB),  # the end of p2, the start of p3
        (60 * MIB, 4 * MIB),  # the end of p3 and the GPT backup
    )
    usage = usage_of(DISK, extents)
    kept = without(usage, DISK, (2,))
    assert kept.extents == (
        (0, 2 * MIB),
        (10 * MIB, 11 * MIB),  # to the end of p1
        (41 * MIB, 1 * MIB),  # from the start of p3
        (60 * MIB, 4 * MIB),
    )
    assert kept.used_bytes == usage.used_bytes - MIB - 11 * MIB
    assert kept.size == usage.size and kept.partitions == usage.partitions
    assert without(usage, DISK, ()) == usage
    both = without(usage, DISK, (1, 2))
    assert both.extents == ((0, MIB), (41 * MIB, MIB), (60 * MIB, 4 * MIB))


def test_without_keeps_4k_alignment_at_unaligned_partition_boundaries() -> None:
    start, size = 21 * MIB + 512, 20 * MIB - 1024  # an old table's sector-aligned partition
    odd = Disk(
        "sdz",
        "/dev/sdz",
        64 * MIB,
        partitions=(
            Partition("sdz1", "/dev/sdz1", 1, MIB, 20 * MIB + 512, "ext4"),
            Partition("sdz2", "/dev/sdz2", 2, start, size, "xfs"),
            Partition("sdz3", "/dev/sdz3", 3, start + size, 64 * MIB - start - size, "ext4"),
        ),
    )
    usage = usage_of(odd, ((0, 64 * MIB),))
    kept = without(usage, odd, (2,))
    # what is left of p1 and p3 is rounded outwards to whole 4 KiB blocks: p2's first and
    # last part-blocks go along, nothing more
    first_end = start - start % ALIGN + ALIGN
    second_start = (start + size) - (start + size) % ALIGN
    assert kept.extents == ((0, first_end), (second_start, 64 * MIB - second_start))
    assert all(offset % ALIGN == 0 and length % ALIGN == 0 for offset, length in kept.extents)
