"""P2V hardware discovery: fake /sys, /proc and /dev trees built under tmp_path, and one real
read-only loop device whose partition table is read with sfdisk and probed with blkid."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmshift.errors import UsageError
from vmshift.p2v.discovery import FsInfo, discover, read_hostname
from vmshift.p2v.discovery import topology as cpu_topology
from vmshift.p2v.fsprobe import parse_blkid_export, parse_sfdisk_json
from vmshift.p2v.machine import Cpu, Disk, Interface, Machine, Partition, RemovableDevice

SATA = "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"
SATA2 = "pci0000:00/0000:00:1f.2/ata2/host1/target1:0:0/1:0:0:0"
NVME = "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0"
USB = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0"
CDROM = "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0"
MIB = 1 << 20


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent))


class FakeRoots:
    """A machine's /sys, /proc and /dev as the kernel lays them out, in small."""

    def __init__(self, root: Path) -> None:
        self.sys, self.proc, self.dev = root / "sys", root / "proc", root / "dev"
        for top in (self.sys / "block", self.sys / "class" / "net", self.dev):
            top.mkdir(parents=True)
        write(self.proc / "sys" / "kernel" / "hostname", "web01")
        write(self.proc / "meminfo", "MemTotal:       16314344 kB\nMemFree:         1024 kB")
        write(self.proc / "self" / "mountinfo", "22 1 0:25 / / rw - overlay overlay rw")

    def block(
        self,
        name: str,
        dev: str,
        sectors: int,
        bus: str | None = None,  # the parent device's path under devices/; None: virtual
        parts: tuple[tuple[int, int, int, str], ...] = (),  # number, start, size, dev
        **attrs: str,
    ) -> Path:
        """sys/block/NAME, a link to its directory under devices/, as sysfs has it."""
        parent = self.sys / "devices" / (bus or "virtual")
        real = parent / "block" / name
        write(real / "dev", dev)
        write(real / "size", str(sectors))
        write(real / "ro", attrs.pop("ro", "0"))
        write(real / "removable", attrs.pop("removable", "0"))
        write(real / "queue" / "rotational", attrs.pop("rotational", "0"))
        if bus is not None:
            link(real / "device", parent)
        for attr, value in attrs.items():
            write(real / attr.replace("__", "/"), value)
        for number, start, size, numbers in parts:
            part = real / (name + ("p" if name[-1].isdigit() else "") + str(number))
            write(part / "partition", str(number))
            write(part / "start", str(start))
            write(part / "size", str(size))
            write(part / "dev", numbers)
        link(self.sys / "block" / name, real)
        return real

    def cpus(self, sockets: int, cores: int, threads: int) -> None:
        """Linux numbers the first thread of every core first, then the siblings."""
        count = sockets * cores * threads
        blocks = []
        for cpu in range(count):
            core = cpu % (sockets * cores)
            package, core_id = core // cores, core % cores
            top = self.sys / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
            write(top / "physical_package_id", str(package))
            write(top / "core_id", str(core_id))
            write(top / "die_id", "0")
            blocks.append(
                f"processor\t: {cpu}\nvendor_id\t: GenuineIntel\n"
                f"model name\t: Intel(R) Xeon(R) CPU E5-2640 v3 @ 2.60GHz\n"
                f"physical id\t: {package}\ncore id\t\t: {core_id}\ncpu cores\t: {cores}\n"
            )
        write(self.proc / "cpuinfo", "\n".join(blocks))

    def nic(self, name: str, mac: str, driver: str | None, **attrs: str) -> None:
        if driver is None:
            real = self.sys / "devices" / "virtual" / "net" / name
        else:
            slot = len(list((self.sys / "class" / "net").iterdir())) + 3
            pci = self.sys / "devices" / "pci0000:00" / f"0000:00:{slot:02x}.0"
            real = pci / "net" / name
            link(real / "device", pci)
            link(pci / "driver", self.sys / "bus" / "pci" / "drivers" / driver)
        write(real / "address", mac)
        for attr, value in attrs.items():
            write(real / attr, value)
        link(self.sys / "class" / "net" / name, real)


class FakeProbe:
    """blkid's answers, by (offset, size) of a device; records what was asked."""

    def __init__(self, answers: dict[tuple[str, int, int], FsInfo]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int, int]] = []

    def __call__(self, device: str, offset: int, size: int) -> FsInfo:
        self.asked.append((device, offset, size))
        return self.answers.get((device, offset, size), FsInfo())


@pytest.fixture
def roots(tmp_path: Path) -> FakeRoots:
    return FakeRoots(tmp_path)


def build_workstation(r: FakeRoots) -> None:
    """Two sockets of four cores of two threads; a SATA disk with two partitions, an NVMe
    disk, the live medium (a second SATA disk), the devices that are no disks, a USB stick, a
    CD-ROM, a floppy; two NICs, a bridge and lo."""
    r.cpus(2, 4, 2)
    r.block(
        "sda", "8:0", 1953525168, SATA, device__model="Samsung SSD 860",
        device__wwid="t10.ATA     Samsung SSD 860 EVO 1TB S3Z9NB0K123456",
        parts=((1, 2048, 1048576, "8:1"), (2, 1050624, 1952474511, "8:2")),
    )  # fmt: skip
    nvme = r.block(
        "nvme0n1", "259:0", 500118192, NVME, wwid="eui.0025388b91b2a3c4",
        parts=((1, 2048, 204800, "259:1"), (2, 206848, 499911311, "259:2")),
    )  # fmt: skip
    write(nvme.parent.parent / "model", "Samsung SSD 970 EVO Plus 500GB")
    write(nvme.parent.parent / "serial", "S4EVNF0M123456")
    r.block("sdb", "8:16", 62521344, SATA2, rotational="1", parts=((1, 2048, 62519296, "8:17"),))
    r.block("loop0", "7:0", 1638400)
    r.block("loop3", "7:3", 131072, ro="1")
    r.block("zram0", "252:0", 8388608)
    r.block("ram0", "1:0", 131072)
    r.block("dm-0", "253:0", 409600)
    r.block("md127", "9:127", 409600)
    r.block("sdc", "8:32", 30031872, USB, parts=((1, 2048, 30029824, "8:33"),))
    r.block("sr0", "11:0", 2097151, CDROM, removable="1")
    r.block("fd0", "2:0", 2880, "platform/floppy.0")
    write(
        r.proc / "self" / "mountinfo",
        "22 1 0:25 / / rw,noatime - overlay overlay rw,lowerdir=/run/live/rootfs\n"
        "30 22 8:17 / /run/live/medium ro,noatime - vfat /dev/sdb1 ro\n"
        "31 22 7:0 / /run/live/rootfs/filesystem.squashfs ro - squashfs /dev/loop0 ro\n"
        "40 22 8:33 / /media/usb\\040stick rw - vfat /dev/sdc1 rw",
    )
    r.nic("eth0", "52:54:00:AB:CD:EF", "e1000e", operstate="up", speed="1000")
    r.nic("eth1", "52:54:00:12:34:56", "igb", operstate="down", speed="-1")
    r.nic("br0", "52:54:00:ab:cd:01", None, operstate="up")
    r.nic("lo", "00:00:00:00:00:00", None, operstate="unknown")


def test_workstation(roots: FakeRoots) -> None:
    build_workstation(roots)
    probe = FakeProbe(
        {
            ("/dev/sda", 2048 * 512, 1048576 * 512): FsInfo("vfat", "EFI", "6A1B-2C3D"),
            ("/dev/sda", 1050624 * 512, 1952474511 * 512): FsInfo("LVM2_member", None, "pv-1"),
            ("/dev/nvme0n1", 206848 * 512, 499911311 * 512): FsInfo("xfs", "root", "9f3e"),
        }
    )
    machine = discover(sysfs=roots.sys, procfs=roots.proc, probe=probe)

    assert machine.hostname == "web01"
    assert machine.memory == 16314344 * 1024
    assert machine.firmware == "bios"
    assert machine.cpu == Cpu(
        "Intel(R) Xeon(R) CPU E5-2640 v3 @ 2.60GHz", 2, 4, 2, vendor="GenuineIntel"
    )
    assert machine.cpu.count == 16
    sda = Disk(
        "sda", "/dev/sda", 1953525168 * 512, model="Samsung SSD 860",
        serial="t10.ATA     Samsung SSD 860 EVO 1TB S3Z9NB0K123456",
        partitions=(
            Partition("sda1", "/dev/sda1", 1, 1 * MIB, 512 * MIB, "vfat", "EFI", "6A1B-2C3D"),
            Partition("sda2", "/dev/sda2", 2, 513 * MIB, 1952474511 * 512, "LVM2_member",
                      None, "pv-1"),
        ),
    )  # fmt: skip
    nvme = Disk(
        "nvme0n1", "/dev/nvme0n1", 500118192 * 512, model="Samsung SSD 970 EVO Plus 500GB",
        serial="S4EVNF0M123456",
        partitions=(
            Partition("nvme0n1p1", "/dev/nvme0n1p1", 1, 1 * MIB, 100 * MIB),
            Partition("nvme0n1p2", "/dev/nvme0n1p2", 2, 101 * MIB, 499911311 * 512, "xfs",
                      "root", "9f3e"),
        ),
    )  # fmt: skip
    assert machine.disks == (sda, nvme)
    assert machine.removables == (
        RemovableDevice("fd0", "/dev/fd0", "floppy"),
        RemovableDevice("sr0", "/dev/sr0", "cdrom"),
        RemovableDevice("sdc", "/dev/sdc", "usb"),
    )
    assert machine.interfaces == (
        Interface("eth0", "52:54:00:ab:cd:ef", "e1000e", "up", 1000),
        Interface("eth1", "52:54:00:12:34:56", "igb", "down", None),
    )
    # The partitions of sysfs are probed on the disk's own node: no partition node needed.
    assert {device for device, _, _ in probe.asked} == {"/dev/sda", "/dev/nvme0n1"}
    assert Machine.from_json(machine.to_json()) == machine


def test_uefi(roots: FakeRoots) -> None:
    roots.cpus(1, 2, 1)
    (roots.sys / "firmware" / "efi" / "efivars").mkdir(parents=True)
    machine = discover(sysfs=roots.sys, procfs=roots.proc, probe=FakeProbe({}))
    assert machine.firmware == "uefi"
    assert (machine.cpu.sockets, machine.cpu.cores, machine.cpu.threads) == (1, 2, 1)
    assert (machine.disks, machine.removables, machine.interfaces) == ((), (), ())


def test_explicit_devices_are_disks_with_a_note(roots: FakeRoots) -> None:
    build_workstation(roots)
    ext4 = FsInfo("ext4", "guest root", "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9")
    probe = FakeProbe({("/dev/loop3", 0, 131072 * 512): ext4})
    machine = discover(
        sysfs=roots.sys, procfs=roots.proc, probe=probe, explicit=["/dev/loop3", "sdb", "sdc"]
    )
    assert [d.name for d in machine.disks] == ["sda", "sdb", "sdc", "loop3", "nvme0n1"]
    loop3 = machine.disk("/dev/loop3")
    # A filesystem on the whole disk: one partition numbered 0 that is the disk itself.
    assert loop3 == Disk(
        "loop3", "/dev/loop3", 64 * MIB, read_only=True, note="loop device",
        partitions=(Partition("loop3", "/dev/loop3", 0, 0, 64 * MIB, "ext4", "guest root",
                              "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"),),
    )  # fmt: skip
    sdb = machine.disk("sdb")
    assert sdb is not None
    assert sdb.note == "the live medium"
    assert sdb.rotational
    assert sdb.partitions == (Partition("sdb1", "/dev/sdb1", 1, 1 * MIB, 62519296 * 512),)
    sdc = machine.disk("sdc")
    assert sdc is not None
    assert sdc.note == "a removable or USB disk"
    assert [r.name for r in machine.removables] == ["fd0", "sr0"]  # sdc is a disk now


def test_explicit_names_through_dev_links(roots: FakeRoots) -> None:
    build_workstation(roots)
    link(roots.dev / "disk" / "by-id" / "ata-Samsung_SSD_860", roots.dev / "sdb")
    machine = discover(
        sysfs=roots.sys, procfs=roots.proc, devfs=roots.dev, probe=FakeProbe({}),
        explicit=["/dev/disk/by-id/ata-Samsung_SSD_860"],
    )  # fmt: skip
    sdb = machine.disk("sdb")
    assert sdb is not None
    assert (sdb.path, sdb.note) == (
        str(roots.dev / "disk" / "by-id" / "ata-Samsung_SSD_860"), "the live medium",
    )  # fmt: skip
    assert sdb.partitions[0].path == str(roots.dev / "sdb1")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("sdx", "p2v.disks: sdx is not a block device"),
        ("/dev/nope", "p2v.disks: /dev/nope is not a block device"),
        ("/tmp/disk.img", "p2v.disks: /tmp/disk.img is not a block device"),
        ("sda1", "p2v.disks: sda1 is a partition of sda, not a disk"),
        ("/dev/nvme0n1p2", "p2v.disks: /dev/nvme0n1p2 is a partition of nvme0n1, not a disk"),
    ],
)
def test_explicit_name_that_is_no_disk(roots: FakeRoots, name: str, message: str) -> None:
    build_workstation(roots)
    with pytest.raises(UsageError) as info:
        discover(sysfs=roots.sys, procfs=roots.proc, probe=FakeProbe({}), explicit=[name])
    assert str(info.value) == message


def test_root_on_lvm_marks_the_disks_below_it(roots: FakeRoots) -> None:
    """/ on a device-mapper volume (btrfs's device numbers match nothing): the mount's source
    is followed through /dev/mapper and dm-0's slaves to the disk."""
    roots.cpus(1, 1, 1)
    roots.block("sda", "8:0", 2097152, SATA, parts=((1, 2048, 2095104, "8:1"),))
    roots.block("sdb", "8:16", 2097152, SATA2)
    dm = roots.block("dm-0", "253:0", 2095104)
    link(dm / "slaves" / "sda1", roots.sys / "block" / "sda" / "sda1")
    link(roots.dev / "mapper" / "vg-root", roots.dev / "dm-0")
    write(roots.proc / "self" / "mountinfo", "25 1 0:45 / / rw - btrfs /dev/mapper/vg-root rw")
    machine = discover(sysfs=roots.sys, procfs=roots.proc, devfs=roots.dev, probe=FakeProbe({}))
    assert [d.name for d in machine.disks] == ["sdb"]


def test_dos_extended_partition_is_left_out(roots: FakeRoots) -> None:
    """The kernel lists a dos extended partition as 2 sectors; its logical ones are listed."""
    roots.cpus(1, 1, 1)
    parts = ((1, 2048, 40960, "8:1"), (2, 43008, 2, "8:2"), (5, 45056, 16384, "8:5"))
    roots.block("sda", "8:0", 131072, SATA, parts=parts)
    machine = discover(sysfs=roots.sys, procfs=roots.proc, probe=FakeProbe({}))
    assert machine.disks[0].partitions == (
        Partition("sda1", "/dev/sda1", 1, 1 * MIB, 20 * MIB),
        Partition("sda5", "/dev/sda5", 5, 22 * MIB, 8 * MIB),
    )


def test_cpuinfo_without_sysfs_topology(roots: FakeRoots) -> None:
    roots.cpus(2, 4, 2)
    shutil.rmtree(roots.sys / "devices" / "system")
    cpu = discover(sysfs=roots.sys, procfs=roots.proc, probe=FakeProbe({})).cpu
    assert (cpu.sockets, cpu.cores, cpu.threads) == (2, 4, 2)


def test_cpuinfo_of_arm(roots: FakeRoots) -> None:
    blocks = [f"processor\t: {n}\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n" for n in range(4)]
    write(roots.proc / "cpuinfo", "\n".join([*blocks, "Hardware\t: BCM2835\nModel\t: Pi 4 B"]))
    cpu = discover(sysfs=roots.sys, procfs=roots.proc, probe=FakeProbe({})).cpu
    assert cpu == Cpu("Pi 4 B", 1, 4, 1, vendor=None)


def test_topology_of_a_hybrid_cpu() -> None:
    """Eight two-thread performance cores and eight efficiency cores: 24 logical CPUs."""
    ids = [("0", "0", str(core)) for core in range(8) for _ in range(2)]
    ids += [("0", "0", str(core)) for core in range(8, 16)]
    assert cpu_topology(ids) == (1, 24, 1)
    assert cpu_topology([("0", "0", "0"), ("0", "0", "1"), ("1", "0", "0")]) == (1, 3, 1)
    assert cpu_topology([("0", "0", "0"), ("0", "1", "0")]) == (1, 2, 1)  # two dies


def test_parse_blkid_export() -> None:
    text = "DEVNAME=/dev/loop0\nLABEL=web\\ 01\nUUID=24e5\nTYPE=ext4\nUSAGE=filesystem\n"
    assert parse_blkid_export(text) == FsInfo("ext4", "web 01", "24e5")
    assert parse_blkid_export("PTUUID=7abb\nPTTYPE=gpt\n") == FsInfo(pttype="gpt")


def test_parse_sfdisk_json_of_a_4k_gpt_disk() -> None:
    text = """{"partitiontable": {"label": "gpt", "unit": "sectors", "sectorsize": 4096,
        "partitions": [{"node": "/dev/sdb2", "start": 65792, "size": 1000},
                       {"node": "/dev/sdb1", "start": 256, "size": 65536}]}}"""
    assert parse_sfdisk_json(text) == [(1, 1 * MIB, 256 * MIB), (2, 257 * MIB, 4096000)]


# ---- a real read-only loop device -----------------------------------------------------------

ROOT_UUID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"


def make_image(path: Path) -> None:
    """64 MiB, dos table: an ext4 primary at 1 MiB, an extended partition holding a FAT
    logical at 22 MiB."""
    subprocess.run(["truncate", "-s", "64M", str(path)], check=True)
    table = (
        "label: dos\nstart=2048, size=40960, type=83\nstart=43008, size=86016, type=5\n"
        "start=45056, size=16384, type=c\n"
    )
    subprocess.run(["sfdisk", "-q", str(path)], input=table.encode(), check=True)
    subprocess.run(
        ["mkfs.ext4", "-q", "-L", "web 01", "-U", ROOT_UUID, "-E", "offset=1048576",
         str(path), "20M"], check=True,
    )  # fmt: skip
    subprocess.run(
        ["mkfs.vfat", "-i", "1234ABCD", "-n", "BOOT", "--offset", "45056", str(path), "8192"],
        check=True, capture_output=True,
    )  # fmt: skip


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    tools = ("losetup", "sfdisk", "blkid", "mkfs.ext4", "mkfs.vfat")
    if any(shutil.which(t) is None for t in tools) or os.geteuid() != 0:
        pytest.skip("needs root and util-linux's losetup, sfdisk, blkid, mkfs.ext4, mkfs.vfat")
    image = tmp_path / "disk.img"
    make_image(image)
    device = subprocess.run(
        ["losetup", "-r", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


def test_real_read_only_loop_device(loop_device: str) -> None:
    machine = discover(explicit=[loop_device])
    disk = machine.disk(loop_device)
    assert disk is not None
    name = Path(loop_device).name
    assert (disk.name, disk.size, disk.read_only, disk.note) == (
        name,
        64 * MIB,
        True,
        "loop device",
    )
    assert disk.partitions == (
        Partition(f"{name}p1", f"/dev/{name}p1", 1, 1 * MIB, 20 * MIB, "ext4", "web 01", ROOT_UUID),
        Partition(f"{name}p5", f"/dev/{name}p5", 5, 22 * MIB, 8 * MIB, "vfat", "BOOT", "1234-ABCD"),
    )
    assert machine.memory > 0
    assert machine.cpu.count == os.cpu_count()


@pytest.mark.parametrize(
    ("text", "expected"), [("db1\n", "db1"), ("(none)\n", "localhost"), ("", "localhost")]
)
def test_a_live_system_without_a_hostname_is_localhost(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "hostname").write_text(text)
    assert read_hostname(tmp_path) == expected
