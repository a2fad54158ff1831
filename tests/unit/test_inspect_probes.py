"""How inspection asks the appliance: guest files read with statns and pread (never a FIFO,
never over the limit), each filesystem identified by one blkid probe, the partition table
read with blkid before parted, and the slower calls used where blkid cannot answer. Against a
stand-in for the appliance that records every call; tests/integration/test_inspect_guests.py
checks the same answers on real images."""

from __future__ import annotations

import stat
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vmshift.guest import inspect, linux_facts
from vmshift.guest.probes import Probes


@dataclass
class FakeAppliance:
    """The calls inspection makes, answered from in-memory files and device tags."""

    files: dict[str, bytes] = field(default_factory=dict)
    fifos: set[str] = field(default_factory=set)
    blkid_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    parted: dict[str, str] = field(default_factory=dict)  # disk -> part_get_parttype
    vfs: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # type, label, uuid
    partitions: dict[str, list[str]] = field(default_factory=dict)  # disk -> GPT type GUIDs
    calls: Counter[str] = field(default_factory=Counter)
    max_read: int = 0

    def statns(self, path: str) -> dict[str, int]:
        self.calls["statns"] += 1
        if path in self.fifos:
            return {"st_mode": stat.S_IFIFO | 0o644, "st_size": 0}
        if path not in self.files:
            raise RuntimeError(f"statns: {path}: No such file or directory")
        return {"st_mode": stat.S_IFREG | 0o644, "st_size": len(self.files[path])}

    def pread(self, path: str, count: int, offset: int) -> bytes:
        self.calls["pread"] += 1
        self.max_read = max(self.max_read, count)
        return self.files[path][offset : offset + count]

    def blkid(self, device: str) -> dict[str, str]:
        self.calls["blkid"] += 1
        if device not in self.blkid_tags:
            raise RuntimeError(f"blkid: {device}: no filesystem or partition table found")
        return self.blkid_tags[device]

    def _vfs(self, device: str, index: int) -> str:
        if device not in self.vfs:
            raise RuntimeError(f"{device}: unknown")
        return self.vfs[device][index]

    def vfs_type(self, device: str) -> str:
        self.calls["vfs_type"] += 1
        return self._vfs(device, 0)

    def vfs_label(self, device: str) -> str:
        self.calls["vfs_label"] += 1
        return self._vfs(device, 1)

    def vfs_uuid(self, device: str) -> str:
        self.calls["vfs_uuid"] += 1
        return self._vfs(device, 2)

    def statvfs(self, path: str) -> dict[str, int]:
        return {"blocks": 100, "bfree": 40, "frsize": 4096}

    def blockdev_getsize64(self, device: str) -> int:
        return 1 << 30

    def part_to_dev(self, device: str) -> str:
        return device.rstrip("0123456789")

    def part_get_parttype(self, disk: str) -> str:
        self.calls["part_get_parttype"] += 1
        return self.parted[disk]

    def part_list(self, disk: str) -> list[dict[str, Any]]:
        return [{"part_num": n + 1} for n in range(len(self.partitions.get(disk, [])))]

    def part_get_gpt_type(self, disk: str, number: int) -> str:
        return self.partitions[disk][number - 1]


def test_a_guest_file_is_read_whole_in_chunks_and_only_when_it_is_a_small_file() -> None:
    big = bytes(range(256)) * (5 << 12)  # 5 MiB: more than one pread
    g = FakeAppliance(files={"/boot/initrd": big, "/etc/hosts": b"127.0.0.1 localhost\n"})
    g.fifos.add("/etc/network/interfaces")
    assert linux_facts.read_guest_file(g, "/boot/initrd", 8 << 20) == big
    assert g.max_read <= 2 << 20  # each reply fits the appliance protocol's 4 MiB messages
    assert linux_facts.read_guest_file(g, "/etc/hosts", 1 << 20) == b"127.0.0.1 localhost\n"
    g.calls.clear()
    assert linux_facts.read_guest_file(g, "/boot/initrd", 4 << 20) is None  # over the limit
    assert linux_facts.read_guest_file(g, "/etc/network/interfaces", 1 << 20) is None
    assert linux_facts.read_guest_file(g, "/etc/missing", 1 << 20) is None
    assert g.calls == Counter(statns=3)  # a FIFO is never read: the read would block


def test_initramfs_that_cannot_be_listed_gives_no_answer() -> None:
    g = FakeAppliance(files={"/boot/initrd.img-6.1": b"not an initramfs at all"})
    assert linux_facts._initramfs_modules(g, "/boot/initrd.img-6.1") is None
    assert linux_facts._initramfs_modules(g, "/boot/initrd.img-missing") is None


def test_one_blkid_probe_identifies_a_filesystem() -> None:
    g = FakeAppliance(
        blkid_tags={
            "/dev/sda1": {"TYPE": "ext4", "UUID": "0a1b", "USAGE": "filesystem"},
            "/dev/sda2": {"TYPE": "vfat", "LABEL": "EFI", "UUID": "12AB-34CD"},
        }
    )
    found = inspect._filesystems(g, ["/dev/sda2", "/dev/sda1"], {"/": "/dev/sda1"}, {})
    assert [(f.device, f.type, f.label, f.uuid) for f in found] == [
        ("/dev/sda1", "ext4", None, "0a1b"),
        ("/dev/sda2", "vfat", "EFI", "12AB-34CD"),
    ]
    assert found[0].used == 60 * 4096 and found[1].size == 1 << 30
    assert g.calls == Counter(blkid=2)


def test_the_vfs_calls_answer_where_blkid_cannot() -> None:
    g = FakeAppliance(
        # blkid's export format escapes a space: the label is asked for as it is.
        blkid_tags={"/dev/sda1": {"TYPE": "ntfs", "LABEL": "System\\ Reserved", "UUID": "9F"}},
        vfs={
            "/dev/sda1": ("ntfs", "System Reserved", "9F"),
            "btrfsvol:/dev/sda2/root": ("btrfs", "", "77"),
            "/dev/sda3": ("", "", ""),
        },
    )
    devices = ["/dev/sda1", "btrfsvol:/dev/sda2/root", "/dev/sda3"]
    found = inspect._filesystems(g, devices, {}, {})
    assert [(f.type, f.label, f.uuid) for f in found] == [
        ("ntfs", "System Reserved", "9F"),
        ("unknown", None, None),  # blkid found nothing
        ("btrfs", None, "77"),  # a subvolume is no device blkid can take
    ]
    assert g.calls == Counter(blkid=2, vfs_type=2, vfs_label=3, vfs_uuid=2)


def test_firmware_reads_the_partition_table_with_blkid_before_parted() -> None:
    esp = inspect.ESP_GUID.lower()
    linux_fs = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    g = FakeAppliance(
        blkid_tags={"/dev/sda": {"PTTYPE": "gpt"}, "/dev/sdb": {"PTTYPE": "dos"}},
        partitions={"/dev/sda": [linux_fs, esp]},
    )
    assert inspect.firmware_of(g, ["/dev/sda2"]) == "uefi"
    assert inspect.firmware_of(g, ["/dev/sdb1"]) == "bios"
    assert g.calls["part_get_parttype"] == 0
    # A protective MBR over a GPT blkid cannot read, or no answer at all: parted decides.
    g = FakeAppliance(
        blkid_tags={"/dev/sda": {"PTTYPE": "PMBR"}},
        parted={"/dev/sda": "gpt", "/dev/sdb": "msdos"},
        partitions={"/dev/sda": [esp]},
    )
    assert inspect.firmware_of(g, ["/dev/sda1"]) == "uefi"
    assert inspect.firmware_of(g, ["/dev/sdb1"]) == "bios"
    assert g.calls["part_get_parttype"] == 2


def test_a_partition_probed_once_tells_its_table_and_its_filesystem() -> None:
    esp = inspect.ESP_GUID.lower()
    g = FakeAppliance(
        blkid_tags={
            "/dev/sda1": {"TYPE": "ext4", "UUID": "0a1b", "PART_ENTRY_SCHEME": "dos"},
            "/dev/sdb2": {"TYPE": "xfs", "UUID": "2c3d", "PART_ENTRY_SCHEME": "gpt"},
        },
        partitions={"/dev/sdb": [esp, esp]},
    )
    probes: Probes = {}
    assert inspect.firmware_of(g, ["/dev/sda1"], probes) == "bios"
    inspect._filesystems(g, ["/dev/sda1"], {}, probes)
    assert g.calls == Counter(blkid=1)  # neither the disk nor the partition asked again
    assert inspect.firmware_of(g, ["/dev/sdb2"], probes) == "uefi"
    assert g.calls == Counter(blkid=2)
