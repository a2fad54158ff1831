"""P2V partition selection and resizing with the real tools (issue 13): a GPT disk with an ext4
to grow, an xfs to leave out, an ext4 and an ntfs to shrink, attached read-only as a loop
device (the physical disk). The client's own export (used-data map, layout checks, the
left-out partition taken out) is served by nbdkit; the server's -i p2v source reads a request
for it and reshapes the disk (staging, resize2fs and ntfsresize in an appliance, virt-resize).
The result is checked with the filesystems' own tools, outside vmshift: its partition table
(sfdisk), sizes (dumpe2fs, ntfsinfo), e2fsck -fn and ntfsfix -n, and every file's bytes.

Three appliance launches in all (the shrinks; virt-resize's copy, then its expansion of the
resized filesystems): a minute and a half under TCG.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from tests.integration.p2v_lab import loop_device
from vmshift.blockio.imageinfo import probe_image_as
from vmshift.model.vm import SourceVM
from vmshift.p2v.client import _Export, _Exports
from vmshift.p2v.events import LogLine, P2VEvent
from vmshift.p2v.fsprobe import read_partition_table
from vmshift.p2v.layout import Layout
from vmshift.p2v.machine import Cpu, Disk, Machine
from vmshift.p2v.settings import parse_cmdline
from vmshift.sources import p2v as p2v_source
from vmshift.sources.base import SourceOptions
from vmshift.sources.p2v import ForwardedDisk, P2VRequest, P2VSource
from vmshift.sources.p2v_reshape import SLACK, reshape

MIB = 1 << 20
IMAGE_SIZE = 866 * MIB  # the partitions, and room for the GPT backup
# name: (start, size) in MiB, fstype (mkfs.xfs makes nothing under 300 MiB)
LAYOUT = {
    "grown": ((1, 200), "ext4"),
    "dropped": ((201, 300), "xfs"),
    "shrunk": ((501, 300), "ext4"),
    "ntfs": ((801, 64), "ntfs"),
}
GROW, SHRINK_TO, NTFS_TO = 100 * MIB, 150 * MIB, 32 * MIB
KEPT = {"grown": 300 * MIB, "shrunk": SHRINK_TO, "ntfs": NTFS_TO}  # the new sizes
FILE_SIZES = (3 * MIB + 123, MIB, 200 * 1024 + 7, 5000)
ALIGNMENT = 128 * 512  # virt-resize ends a resized partition on its 128-sector alignment
TOOLS = ("losetup", "sfdisk", "blkid", "mkfs.ext4", "mkfs.xfs", "mkfs.ntfs", "ntfs-3g",
         "debugfs", "dumpe2fs", "e2fsck", "ntfsinfo", "ntfsfix", "nbdkit", "qemu-img",
         "virt-resize", "partclone.ext4", "partclone.xfs", "partclone.ntfs",
         "xfs_logprint")  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
        reason="needs root, loop devices, the filesystem tools, nbdkit and virt-resize",
    ),
]


def span(name: str) -> tuple[int, int]:
    (start, size), _ = LAYOUT[name]
    return start * MIB, size * MIB


def superblock(device: str) -> dict[str, str]:
    """dumpe2fs -h's fields."""
    fields = {}
    for line in sh("dumpe2fs", "-h", device).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def blocks(sb: dict[str, str]) -> int:
    return int(sb["Block count"]) * int(sb["Block size"])


def last_block(device: str, file: str) -> int:
    return max(int(b) for b in sh("debugfs", "-R", f"blocks /{file}", device).split())


def write_high(mnt: Path, contents: dict[str, bytes]) -> None:
    """contents written at the end of the filesystem on mnt, where a shrink must move them:
    it is filled with 1 MiB files (the allocator goes upwards), the last few make room for
    contents, then all go."""
    fillers: list[Path] = []
    try:
        while True:
            fillers.append(mnt / f"filler-{len(fillers)}")
            fillers[-1].write_bytes(b"\xff" * MIB)
            if len(fillers) % 32 == 0:
                os.sync()  # allocated in the order written
    except OSError:  # full
        pass
    os.sync()
    room = -(-sum(len(data) for data in contents.values()) // MIB) + 2
    for filler in fillers[-room:]:
        filler.unlink(missing_ok=True)
    os.sync()
    for file, data in contents.items():
        (mnt / file).write_bytes(data)
    os.sync()
    for filler in fillers:
        filler.unlink(missing_ok=True)


def build(image: Path, staging: Path) -> dict[str, dict[str, str]]:
    """The source disk; the digests of the files in each kept partition."""
    rng = random.Random(13)
    partitioned_image(image, IMAGE_SIZE, (where for where, _ in LAYOUT.values()))
    files = {}
    for name, (_, fstype) in LAYOUT.items():
        contents = {f"{name}-{i}.bin": rng.randbytes(n) for i, n in enumerate(FILE_SIZES)}
        with attached(image, span(name)) as dev:
            if name == "shrunk":
                make_filesystem(fstype, dev, {}, staging)
                with mounted(dev, staging / "mnt") as mnt:
                    write_high(mnt, contents)
                block = int(superblock(dev)["Block size"])
                beyond = [f for f in contents if last_block(dev, f) * block > SHRINK_TO]
                assert beyond, "no file lies beyond the new end: nothing for resize2fs to move"
            else:
                make_filesystem(fstype, dev, contents, staging)
        if name in KEPT:
            files[name] = {file: digest(data) for file, data in contents.items()}
    return files


@dataclass(frozen=True)
class Reshaped:
    source: Path
    disk: Disk  # as the client described it
    files: dict[str, dict[str, str]]  # the digests of the files in each kept partition
    before: dict[str, dict[str, str]]  # each ext4's superblock fields before
    export: _Export  # what the client served: its layout, its used bytes
    log: list[str]  # the client's log lines
    reads: list[tuple[int, int]]  # (offset, length) of every read nbdkit made of the disk
    calls: list[tuple[Any, ...]]  # reshape()'s arguments and its result
    vm: SourceVM
    source_object: P2VSource
    result: Path  # the reshaped disk, as raw


@pytest.fixture(scope="module")
def reshaped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reshaped]:
    work = tmp_path_factory.mktemp("resize")
    image, staging = work / "source.img", work / "staging"
    staging.mkdir()
    files = build(image, staging)
    before = {}
    for name in ("grown", "shrunk"):
        with attached(image, span(name), ro=True) as dev:
            before[name] = superblock(dev)
    with loop_device(image) as device, pytest.MonkeyPatch.context() as patch:
        disk = describe(str(device))
        n = disk.name
        settings = parse_cmdline(
            f"p2v.disks={device} p2v.partitions={n}p1,/dev/{n}p3,{n}p4 p2v.resize=/dev/{n}p1:"
            f"+{GROW >> 20}M,{n}p3:{SHRINK_TO >> 20}M,{n}p4:-{(64 * MIB - NTFS_TO) >> 20}M"
        )
        client = work / "client"
        client.mkdir()
        exports = _Exports(client)
        log: list[str] = []

        def sink(event: P2VEvent) -> None:
            if isinstance(event, LogLine):
                log.append(event.text)

        calls: list[tuple[Any, ...]] = []
        real = reshape

        def spy(uri: str, d: Disk, layout: Layout, workdir: Path) -> tuple[Path, int]:
            out = real(uri, d, layout, workdir)
            calls.append((uri, d, layout, workdir, out))
            return out

        patch.setattr(p2v_source, "reshape", spy)
        try:
            exports.serve([disk], settings, sink)
            export = exports.exports[0]
            machine = Machine("p2v-resize", Cpu(None, 1, 1, 1), 1 << 30, "bios", disks=(disk,))
            forwarded = ForwardedDisk(n, str(export.sock), disk.size, export.used,
                                      export.layout.delete, export.layout.resize)  # fmt: skip
            request = work / "request.json"
            request.write_text(json.dumps(P2VRequest(machine, (forwarded,), (), "p2v-x").to_json()))
            source = P2VSource(SourceOptions(args=(str(request),)))
            server = work / "server"
            server.mkdir()
            vm = source.open(server)
        finally:
            exports.close()
    reads_log = export.sock.with_name(export.sock.name + ".reads").read_text()
    found = re.findall(r" Read id=\d+ offset=0x([0-9a-f]+) count=0x([0-9a-f]+) ", reads_log)
    result = work / "result.raw"
    sh("qemu-img", "convert", "-f", "qcow2", "-O", "raw", vm.disks[0].endpoint.uri, result)
    yield Reshaped(image, disk, files, before, export, log,
                   [(int(o, 16), int(c, 16)) for o, c in found], calls, vm, source,
                   result)  # fmt: skip


def sizes(disk: Disk) -> dict[int, int]:
    return {p.number: p.size for p in disk.partitions}


def test_the_client_plans_and_sends_only_the_chosen_partitions(reshaped: Reshaped) -> None:
    n = reshaped.disk.name
    assert [(p.number, p.fstype) for p in reshaped.disk.partitions] == [
        (1, "ext4"), (2, "xfs"), (3, "ext4"), (4, "ntfs"),
    ]  # fmt: skip
    layout = reshaped.export.layout
    assert layout == Layout(delete=(2,), resize=((1, 300 * MIB), (3, SHRINK_TO), (4, NTFS_TO)))
    assert f"{n}: {n}p2 xfs: left out (p2v.partitions)" in reshaped.log
    dropped_start, dropped_size = span("dropped")
    assert reshaped.reads, "nbdkit served nothing"
    for offset, length in reshaped.reads:
        assert offset + length <= dropped_start or offset >= dropped_start + dropped_size, (
            f"read {offset}+{length} of the left-out partition"
        )
    assert sum(length for _, length in reshaped.reads) <= reshaped.export.used
    # what filled the shrunk ext4 (its blocks still hold 0xff) was deleted: it is not sent
    assert reshaped.export.used < span("shrunk")[1]


def test_reshape_makes_a_local_qcow2_of_the_new_size(reshaped: Reshaped) -> None:
    assert len(reshaped.calls) == 1
    uri, disk, layout, workdir, (path, size) = reshaped.calls[0]
    assert uri == f"nbd+unix:///?socket={reshaped.export.sock}"
    assert (disk, layout) == (reshaped.disk, reshaped.export.layout)
    shrunk = (300 * MIB - SHRINK_TO) + (64 * MIB - NTFS_TO)
    expected = IMAGE_SIZE + GROW - shrunk - span("dropped")[1]
    assert layout.new_size(IMAGE_SIZE, sizes(disk)) == expected
    assert size == expected + SLACK
    assert path.parent == workdir and path.suffix == ".qcow2"
    assert probe_image_as(path, "qcow2").virtual_size == size
    assert sorted(p.name for p in workdir.iterdir() if p.suffix == ".qcow2") == [path.name]


def test_the_source_reads_the_reshaped_disk_locally(reshaped: Reshaped) -> None:
    path, size = reshaped.calls[0][-1]
    [disk] = reshaped.vm.disks
    assert (disk.endpoint.uri, disk.endpoint.format, disk.endpoint.virtual_size) == (
        str(path), "qcow2", size,
    )  # fmt: skip
    assert disk.name == reshaped.disk.name and disk.endpoint.is_local
    assert reshaped.source_object.identity() is None  # made again from the client on a resume
    assert reshaped.source_object.lost() is None  # the client's export is gone: not needed


def test_the_new_table_has_the_kept_partitions_at_their_new_sizes(reshaped: Reshaped) -> None:
    table = read_partition_table(str(reshaped.result))
    assert [number for number, _, _ in table] == [1, 2, 3]
    for (_, _, size), wanted in zip(table, KEPT.values(), strict=True):
        assert wanted <= size < wanted + ALIGNMENT, (size, wanted)
    for (_, start, size), (_, following, _) in itertools.pairwise(table):
        assert start + size <= following


def test_the_ext4s_are_resized_and_whole(reshaped: Reshaped, tmp_path: Path) -> None:
    table = read_partition_table(str(reshaped.result))
    for (_, start, size), name in zip(table, ("grown", "shrunk"), strict=False):
        with attached(reshaped.result, (start, size), ro=True) as dev:
            sh("e2fsck", "-fn", dev)
            after = superblock(dev)
            assert read_files("ext4", dev, tmp_path) == reshaped.files[name], name
        old = blocks(reshaped.before[name])
        block = int(after["Block size"])
        assert blocks(after) == size - size % block, (name, after["Block count"])
        if name == "grown":
            assert blocks(after) >= old + GROW
        else:
            assert blocks(after) == SHRINK_TO < old


def test_the_ntfs_is_shrunk_whole_and_left_for_chkdsk(reshaped: Reshaped, tmp_path: Path) -> None:
    _, start, size = read_partition_table(str(reshaped.result))[2]
    with attached(reshaped.result, (start, size), ro=True) as dev:
        sh("ntfsfix", "-n", dev)
        info = sh("ntfsinfo", "--force", "-m", dev)
        assert read_files("ntfs", dev, tmp_path) == reshaped.files["ntfs"]
    fields = dict(re.findall(r"^\s*([^:\n]+):\s*(.*)$", info, re.M))
    cluster = int(fields["Cluster Size"])
    # the volume fills the partition, less the cluster its backup boot sector lives in
    assert int(fields["Volume Size in Clusters"]) == size // cluster - 1
    assert "DIRTY" in fields["Volume Flags"]  # ntfsresize's: Windows checks it on first boot
