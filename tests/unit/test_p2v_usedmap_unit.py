"""usedmap: partclone's domain map read, ranges merged and aligned, and used_map's choices on a
file standing in for the disk, with losetup and partclone replaced by a fake runner."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from vmshift.errors import EnvironmentProblem, SourceError
from vmshift.p2v.machine import Disk, Partition
from vmshift.p2v.usedmap import (
    UsedMap,
    aligned,
    export_argv,
    merge,
    parse_domain,
    subtract,
    used_map,
    write_extentlist,
)
from vmshift.process import CommandFailed

MIB = 1 << 20

# What partclone.ext4 -D (0.3.23) wrote for a 64 MiB ext4 (1 KiB blocks) with one 5 MiB file.
SAMPLE = """\
# Domain logfile created by unset_name v0.3.23
# Source: e.img
# Offset: 0x00000000
# current_pos  current_status
0x04000000     ?
#      pos        size  status
0x00000000  0x00448400  +
0x00448400  0x003B8000  ?
0x00800400  0x00040800  +
0x00840C00  0x000BF800  ?
0x00900400  0x00500000  +
0x00E00400  0x00200000  ?
0x01000400  0x00400000  +
0x01400400  0x00400000  ?
0x01800400  0x00040800  +
0x01840C00  0x00FBF800  ?
0x02800400  0x00040800  +
0x02840C00  0x00FBF800  ?
0x03800400  0x00040800  +
0x03840C00  0x007BF400  ?
"""
# its used blocks (+) as [start, end)
SAMPLE_USED = [
    (0, 0x448400),
    (0x800400, 0x840C00),
    (0x900400, 0xE00400),
    (0x1000400, 0x1400400),
    (0x1800400, 0x1840C00),
    (0x2800400, 0x2840C00),
    (0x3800400, 0x3840C00),
]

# partclone's standard error when it refuses a filesystem
REFUSAL = (
    "Partclone v0.3.23 http://partclone.org\n"
    "Starting to map device (/dev/loop7) to domain log (sda1.map)\n"
    "extfsclone.c: FS was not cleanly unmounted\n"
    "Partclone fail, please check sda1.log !\n"
)


def test_a_partclone_domain_map_is_read() -> None:
    blocks = parse_domain(SAMPLE)
    assert blocks[:3] == ((0, 0x448400, "+"), (0x448400, 0x3B8000, "?"), (0x800400, 0x40800, "+"))
    assert [(o, o + n) for o, n, status in blocks if status == "+"] == SAMPLE_USED
    assert {status for _, _, status in blocks} == {"+", "?"}
    ends = [o + n for o, n, _ in blocks]
    assert [o for o, _, _ in blocks] == [0, *ends[:-1]] and ends[-1] == 64 * MIB


def test_a_status_line_with_the_pass_and_decimal_numbers_are_read() -> None:
    assert parse_domain("0 ? 1\n0 4096 +\n4096 8192 ?  # free\n") == (
        (0, 4096, "+"),
        (4096, 8192, "?"),
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no status line"),
        ("# only comments\n", "no status line"),
        ("0x0 ?\n0x0 0x10\n", "line 2: not a block"),
        ("0x0 ?\n0x0 0x10 !\n", "line 2: not a block"),
        ("0x0 ?\n0x0 -0x10 +\n", "line 2: a negative number"),
        ("0x0 ?\nzero 0x10 +\n", "line 2: invalid literal"),
        ("Partclone fail\n", "line 1: invalid literal"),
        ("a b c d\n", "line 1: not a status line"),
    ],
)
def test_what_is_not_a_domain_map_is_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_domain(text)


def test_ranges_are_merged_and_subtracted() -> None:
    assert merge([(10, 20), (0, 5), (5, 8), (15, 30), (40, 40)]) == [(0, 8), (10, 30)]
    assert subtract((0, 100), [(90, 120), (10, 20), (15, 30), (-5, 2)]) == [(2, 10), (30, 90)]
    assert subtract((0, 100), []) == [(0, 100)]
    assert subtract((10, 20), [(0, 10), (20, 30)]) == [(10, 20)]
    assert subtract((10, 20), [(0, 30)]) == []


def test_extents_are_rounded_outwards_to_4k_and_merged() -> None:
    ranges = [(8192, 8193), (100, 200), (5000, 6000), (20000, 20480)]
    assert aligned(ranges, 1 << 30) == ((0, 12288), (16384, 4096))
    # not past the end of a disk whose size is not a multiple of 4 KiB
    assert aligned([(10 * 4096 + 1, 10 * 4096 + 2)], 10 * 4096 + 512) == ((40960, 512),)


def test_the_extent_list_names_the_data_and_nbdkit_serves_it_read_only(tmp_path: Path) -> None:
    m = UsedMap(1 << 30, ((0, 1 * MIB), (5 * MIB, 4096)), ())
    write_extentlist(m, tmp_path / "extents")
    assert (tmp_path / "extents").read_text() == "0 1048576\n5242880 4096\n"
    assert m.used_bytes == MIB + 4096
    argv = export_argv(Path("/dev/sda"), tmp_path / "extents", tmp_path / "sda.sock")
    assert argv[0] == "nbdkit" and "--readonly" in argv and "--exit-with-parent" in argv
    assert argv[argv.index("-U") + 1] == str(tmp_path / "sda.sock")
    assert argv[-4:] == [
        "--filter=extentlist",
        "file",
        "file=/dev/sda",
        f"extentlist={tmp_path}/extents",
    ]


class FakeTools:
    """losetup and partclone as used_map runs them: partclone writes `domain` as its map,
    or fails with `refusal`; `missing` tools are not installed."""

    def __init__(self, domain: str = SAMPLE, refusal: str | None = None) -> None:
        self.domain, self.refusal = domain, refusal
        self.calls: list[list[str]] = []
        self.attached: set[str] = set()
        self.missing: set[str] = set()

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[bytes]:
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] in self.missing:
            raise EnvironmentProblem(f"{argv[0]}: program not found")
        out = b""
        if argv[0] == "losetup" and "--find" in argv:
            loop = f"/dev/loop{len(self.calls)}"
            self.attached.add(loop)
            out = loop.encode() + b"\n"
        elif argv[0] == "losetup":
            self.attached.remove(argv[argv.index("--detach") + 1])
        elif argv[0].startswith("partclone."):
            if self.refusal is not None:
                raise CommandFailed(argv, 1, self.refusal)
            Path(argv[argv.index("-o") + 1]).write_text(self.domain)
        return subprocess.CompletedProcess(argv, 0, out, b"")


def disk_image(tmp_path: Path, *parts: Partition, size: int = 256 * MIB) -> tuple[Path, Disk]:
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(size)
    return image, Disk("sda", "/dev/sda", size, partitions=parts)


def put(image: Path, offset: int, data: bytes) -> None:
    with image.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def test_used_map_of_a_disk(tmp_path: Path) -> None:
    ext4 = Partition("sda1", "/dev/sda1", 1, 1 * MIB, 64 * MIB + 4096, "ext4")
    swap = Partition("sda2", "/dev/sda2", 2, 80 * MIB, 16 * MIB, "swap")
    lvm = Partition("sda3", "/dev/sda3", 3, 100 * MIB, 8 * MIB, "LVM2_member")
    image, disk = disk_image(tmp_path, swap, lvm, ext4)
    put(image, 80 * MIB + 4096 - 10, b"SWAPSPACE2")
    tools = FakeTools()
    m = used_map(image, disk, tmp_path, run=tools)

    assert [(p.name, p.method) for p in m.partitions] == [
        ("sda1", "partclone"),
        ("sda2", "swap header"),
        ("sda3", "whole: LVM2_member is not mapped"),
    ]
    # ext4: the map's used blocks (+), and the partition's last 4 KiB that the map does not cover
    ext4_used = [*SAMPLE_USED, (64 * MIB, 64 * MIB + 4096)]
    assert m.partitions[0].used == sum(e - s for s, e in ext4_used)
    assert m.extents == aligned(
        [(0, MIB)]  # the partition table and the gap before sda1
        + [(MIB + s, MIB + e) for s, e in ext4_used]
        + [(65 * MIB + 4096, 80 * MIB + 4096)]  # the gap after sda1, the swap header
        + [(96 * MIB, 256 * MIB)],  # the gap, sda3 whole, the rest of the disk
        256 * MIB,
    )
    assert m.used_bytes == sum(length for _, length in m.extents)
    assert not tools.attached, "every loop device is detached"
    partclone = next(c for c in tools.calls if c[0] == "partclone.ext4")
    assert "-I" not in partclone and "--ignore_fschk" not in partclone


def test_a_filesystem_on_the_whole_disk_is_mapped_at_offset_0(tmp_path: Path) -> None:
    image, disk = disk_image(
        tmp_path, Partition("sda", "/dev/sda", 0, 0, 64 * MIB, "ext4"), size=64 * MIB
    )
    m = used_map(image, disk, tmp_path, run=FakeTools())
    assert m.extents == aligned(SAMPLE_USED, 64 * MIB)


def test_a_refused_filesystem_is_sent_whole_with_partclones_reason(tmp_path: Path) -> None:
    image, disk = disk_image(tmp_path, Partition("sda1", "/dev/sda1", 1, MIB, 64 * MIB, "ext4"))
    tools = FakeTools(refusal=REFUSAL)
    m = used_map(image, disk, tmp_path, run=tools)
    assert m.partitions[0].method == "whole: partclone.ext4: FS was not cleanly unmounted"
    assert m.extents == ((0, 256 * MIB),)
    assert not tools.attached


@pytest.mark.parametrize(
    ("fstype", "offset", "data", "why"),
    [
        ("ext4", 1024 + 0x38, struct.pack("<H", 0xEF53), "ext4 journal needs recovery"),
        ("btrfs", 0x10040, b"_BHRfS_M" + bytes(24) + struct.pack("<Q", 0x4000), "btrfs log tree"),
        ("btrfs", 0x10040, b"_BHRfS_M" + bytes(64) + struct.pack("<Q", 2), "btrfs spans 2 devices"),
        ("exfat", 106, struct.pack("<H", 0x2), "exfat volume is dirty"),
    ],
)
def test_an_uncleanly_unmounted_filesystem_is_sent_whole(
    tmp_path: Path, fstype: str, offset: int, data: bytes, why: str
) -> None:
    image, disk = disk_image(tmp_path, Partition("sda1", "/dev/sda1", 1, MIB, 64 * MIB, fstype))
    put(image, MIB + offset, data)
    if fstype == "ext4":
        put(image, MIB + 1024 + 0x60, struct.pack("<I", 0x4 | 0x40))  # RECOVER, EXTENTS
    tools = FakeTools()
    m = used_map(image, disk, tmp_path, run=tools)
    assert m.partitions[0].method.startswith(f"whole: {why}")
    assert m.extents == ((0, 256 * MIB),)
    assert tools.calls == [], "neither a loop device nor partclone"


def test_what_cannot_be_mapped_is_sent_whole(tmp_path: Path) -> None:
    parts = (
        Partition("sda1", "/dev/sda1", 1, MIB, 8 * MIB, "swap"),  # no signature
        Partition("sda2", "/dev/sda2", 2, 9 * MIB, 8 * MIB, None),
        Partition("sda3", "/dev/sda3", 3, 17 * MIB, 8 * MIB, "ntfs"),
        Partition("sda4", "/dev/sda4", 4, 25 * MIB, 8 * MIB, "vfat"),
    )
    image, disk = disk_image(tmp_path, *parts)
    tools = FakeTools(domain="garbage\n")
    tools.missing.add("partclone.ntfs")
    m = used_map(image, disk, tmp_path, run=tools)
    assert [p.method for p in m.partitions] == [
        "whole: no swap signature in its first page",
        "whole: no filesystem found",
        "whole: partclone.ntfs is not installed",
        "whole: partclone.vfat wrote no usable map: line 1: not a status line: 'garbage'",
    ]
    assert m.extents == ((0, 256 * MIB),)
    assert not tools.attached


def test_a_disk_that_does_not_match_its_description_is_an_error(tmp_path: Path) -> None:
    image, disk = disk_image(
        tmp_path, Partition("sda1", "/dev/sda1", 1, 200 * MIB, 64 * MIB, "ext4")
    )
    with pytest.raises(SourceError, match=r"disk.img: partition sda1 .* is not within the disk"):
        used_map(image, disk, tmp_path, run=FakeTools())
    with pytest.raises(SourceError, match=r"disk.img: is 268435456 bytes, its description says 1"):
        used_map(image, Disk("sda", "/dev/sda", 1), tmp_path, run=FakeTools())
    with pytest.raises(SourceError, match=r"nothing.img: cannot open"):
        used_map(tmp_path / "nothing.img", disk, tmp_path, run=FakeTools())


def test_no_loop_device_is_an_environment_problem(tmp_path: Path) -> None:
    image, disk = disk_image(tmp_path, Partition("sda1", "/dev/sda1", 1, MIB, 64 * MIB, "xfs"))
    tools = FakeTools()
    tools.missing.add("losetup")
    with pytest.raises(
        EnvironmentProblem, match=r"disk.img: cannot attach a loop device over sda1"
    ):
        used_map(image, disk, tmp_path, run=tools)
