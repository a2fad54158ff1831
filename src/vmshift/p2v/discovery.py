"""What the physical machine has: CPUs, memory, firmware, disks, removable media and NICs,
read from /proc and /sys of whatever Linux live system the client was booted from.

`discover()` is a function of the roots it is given (sysfs, procfs, devfs), so tests build fake
trees; it runs only the probe (default `blkid -p`) and, for a disk whose partitions sysfs does
not list (a loop device set up without -P), `sfdisk --json` (fsprobe.py).

Decisions:
- Fixed disks are the devices of sysfs/block that are not: loop, ram, zram, dm-*, md* (its
  member disks are converted; the guest assembles the array), hidden (multipath paths), of size
  0, another virtual device, the live medium, removable or on USB (removables of kind usb),
  sr* (cdrom) or fd* (floppy).
- The live medium is each disk under a filesystem mounted at one of LIVE_MOUNTS (by the device
  numbers of procfs/self/mountinfo, or the mount's /dev source; through partitions and dm or md
  slaves). A CD-ROM drive holding it is still a cdrom: the drive is hardware the guest may have.
- A disk named in `explicit` (p2v.disks=) is a disk whatever it is, its note saying why it
  would have been skipped; it is then not among the removables. Named by a /dev path (a
  /dev/disk/by-id link), that path is its Disk.path, so `Machine.disk(text)` finds it.
- A disk without a partition table but with a filesystem on it has one Partition with number
  0, start 0 and the disk's size, named and pathed as the disk (0 is never a table entry).
- A dos extended partition is not listed (sysfs shows it as a primary of at most 8 sectors).
- The CPU topology is exact when every socket has as many cores and every core as many
  threads; otherwise (hybrid CPUs) the sockets have all their logical CPUs as one-thread
  cores, so Cpu.count is always the number of logical CPUs.
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import EnvironmentProblem, UsageError
from vmshift.p2v.fsprobe import FsInfo, Probe, blkid_probe, partition_name, read_partition_table
from vmshift.p2v.machine import Cpu, Disk, Interface, Machine, Partition, RemovableDevice

__all__ = ["FsInfo", "Probe", "discover"]

SECTOR = 512  # the unit of sysfs sizes and offsets, whatever the disk's sector size
LIVE_MOUNTS = (
    "/",
    "/run/live/medium",  # Debian live-boot
    "/lib/live/mount/medium",  # older live-boot
    "/run/initramfs/live",  # dracut (Fedora, RHEL live images)
    "/run/archiso/bootmnt",  # Arch
)
_VIRTUAL = (
    ("loop", "loop device"),
    ("ram", "RAM disk"),
    ("zram", "compressed RAM disk (zram)"),
    ("dm-", "device-mapper device"),
    ("md", "software RAID (md) device"),
)
_LINKS = {"up": "up", "down": "down", "lowerlayerdown": "down", "notpresent": "down"}


def discover(
    *,
    sysfs: Path = Path("/sys"),
    procfs: Path = Path("/proc"),
    devfs: Path = Path("/dev"),
    explicit: Sequence[str] = (),
    probe: Probe | None = None,
) -> Machine:
    """Describe this machine; `explicit` names disks to include whatever they are."""
    blocks = _scan_blocks(sysfs)
    named: dict[str, str] = {}  # kernel name -> path
    for text in explicit:
        given = str(devfs / text.removeprefix("/dev/")) if text.startswith("/dev/") else ""
        named.setdefault(_explicit_name(text, devfs, blocks), given)
    live = live_medium(procfs, devfs, sysfs, blocks)
    disks: list[Disk] = []
    removables: list[RemovableDevice] = []
    for name in blocks.disks:
        kind, why = classify(name, sysfs, live)
        if kind == "disk" or name in named:
            path = named.get(name) or str(devfs / name)
            disks.append(_disk(name, path, sysfs=sysfs, devfs=devfs, probe=probe, note=why))
        elif kind != "skip":
            removables.append(RemovableDevice(name, str(devfs / name), kind))
    return Machine(
        hostname=read_hostname(procfs),
        cpu=read_cpu(sysfs, procfs),
        memory=read_memory(procfs),
        firmware="uefi" if (sysfs / "firmware" / "efi").is_dir() else "bios",
        disks=tuple(disks),
        removables=tuple(removables),
        interfaces=read_interfaces(sysfs),
    )


# ---- small readers ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    """A sysfs or procfs attribute, stripped; None if it is absent, unreadable or empty."""
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:  # absent, or EINVAL (the speed of a link that is down)
        return None
    return text or None


def _read_int(path: Path) -> int | None:
    try:
        return int(_read(path) or "")
    except ValueError:
        return None


def _natural(name: str) -> list[tuple[int, int | str]]:
    """The kernel's order: sdb < sdz < sdaa, nvme0n2 < nvme0n10."""
    return [(0, int(p)) if p.isdigit() else (len(p), p) for p in re.split(r"(\d+)", name) if p]


def read_hostname(procfs: Path) -> str:
    """The kernel's hostname; "(none)" (a live system that set none) counts as no name."""
    name = _read(procfs / "sys" / "kernel" / "hostname")
    return name if name and name != "(none)" else "localhost"


def read_memory(procfs: Path) -> int:
    """MemTotal of procfs/meminfo, in bytes."""
    text = _read(procfs / "meminfo") or ""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    if match is None:
        raise EnvironmentProblem(f"{procfs / 'meminfo'}: no MemTotal line")
    return int(match.group(1)) * 1024


# ---- CPUs ------------------------------------------------------------------------------------


def read_cpu(sysfs: Path, procfs: Path) -> Cpu:
    processors, extra = _cpuinfo(procfs / "cpuinfo")
    first = processors[0] if processors else extra
    ids = _sysfs_topology(sysfs / "devices" / "system" / "cpu")
    if not ids and processors and all("physical id" in p and "core id" in p for p in processors):
        ids = [(p["physical id"], "0", p["core id"]) for p in processors]
    sockets, cores, threads = topology(ids) if ids else (1, max(len(processors), 1), 1)
    model = first.get("model name") or extra.get("Model")  # x86, ARM
    return Cpu(model, sockets, cores, threads, vendor=first.get("vendor_id"))


def _cpuinfo(path: Path) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The blocks of /proc/cpuinfo: those of processors, and the other fields (on ARM a last
    block carries Hardware and Model)."""
    processors: list[dict[str, str]] = []
    extra: dict[str, str] = {}
    for block in (_read(path) or "").split("\n\n"):
        pairs = (line.partition(":") for line in block.splitlines())
        fields = {key.strip(): value.strip() for key, sep, value in pairs if sep}
        if "processor" in fields:
            processors.append(fields)
        else:
            extra.update(fields)
    return processors, extra


def _sysfs_topology(cpus: Path) -> list[tuple[str, str, str]]:
    """(package, die, core) of every online CPU (an offline one has no topology)."""
    ids = []
    for cpu in cpus.glob("cpu[0-9]*/topology"):
        package = _read(cpu / "physical_package_id")
        core = _read(cpu / "core_id")
        if package is not None and core is not None:
            ids.append((package, _read(cpu / "die_id") or "0", core))
    return ids


def topology(ids: Iterable[tuple[str, str, str]]) -> tuple[int, int, int]:
    """Sockets, cores per socket, threads per core from the (package, die, core) of each
    logical CPU; see the module's docstring for an uneven machine."""
    threads_of = Counter(ids)  # (package, die, core) -> its logical CPUs
    cores_of = Counter(package for package, _, _ in threads_of)  # package -> its cores
    logical = sum(threads_of.values())
    threads, cores = set(threads_of.values()), set(cores_of.values())
    if len(threads) == 1 and len(cores) == 1:
        return len(cores_of), cores.pop(), threads.pop()
    if logical % len(cores_of) == 0:
        return len(cores_of), logical // len(cores_of), 1
    return 1, logical, 1


# ---- NICs ------------------------------------------------------------------------------------


def read_interfaces(sysfs: Path) -> tuple[Interface, ...]:
    """Physical NICs: those with a device link (bridges, bonds, veth, tun ... have none)."""
    net = sysfs / "class" / "net"
    names = sorted((e.name for e in net.iterdir()), key=_natural) if net.is_dir() else []
    found = []
    for name in names:
        entry = net / name
        if name == "lo" or not os.path.lexists(entry / "device"):
            continue
        driver = entry / "device" / "driver"
        speed = _read_int(entry / "speed")
        found.append(
            Interface(
                name=name,
                mac=(_read(entry / "address") or "").lower(),
                driver=driver.readlink().name if driver.is_symlink() else None,
                link=_LINKS.get(_read(entry / "operstate") or "", "unknown"),
                speed=speed if speed is not None and speed > 0 else None,
            )
        )
    return tuple(found)


# ---- block devices ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocks:
    """The block devices sysfs/block lists: whole devices, and their partitions."""

    disks: tuple[str, ...]  # in natural order
    parent: dict[str, str]  # partition -> its disk
    by_dev: dict[str, str]  # "8:1" -> sda1 (whole devices and partitions)


def _scan_blocks(sysfs: Path) -> Blocks:
    root = sysfs / "block"
    disks = sorted((e.name for e in root.iterdir()), key=_natural) if root.is_dir() else []
    parent: dict[str, str] = {}
    by_dev: dict[str, str] = {}
    for disk in disks:
        by_dev[_read(root / disk / "dev") or ""] = disk
        for part in (root / disk).iterdir():
            if (part / "partition").is_file():
                parent[part.name] = disk
                by_dev[_read(part / "dev") or ""] = part.name
    by_dev.pop("", None)
    return Blocks(tuple(disks), parent, by_dev)


def classify(name: str, sysfs: Path, live: set[str]) -> tuple[str, str | None]:
    """(kind, why) of a device of sysfs/block: kind is disk, cdrom, floppy, usb or skip; why
    says why it is not a fixed disk (None for one)."""
    base = sysfs / "block" / name
    virtual = next((why for prefix, why in _VIRTUAL if name.startswith(prefix)), None)
    if virtual:
        return "skip", virtual
    if name.startswith("sr"):
        return "cdrom", "a CD-ROM drive"
    if name.startswith("fd"):
        return "floppy", "a floppy drive"
    if _read(base / "hidden") == "1":
        return "skip", "a hidden device (a multipath path)"
    if name in live:
        return "skip", "the live medium"
    if _read(base / "removable") == "1" or _on_usb(base):
        return "usb", "a removable or USB disk"
    if not _read_int(base / "size"):
        return "skip", "no medium (size 0)"
    if base.is_symlink() and "virtual" in base.readlink().parts:
        return "skip", "a virtual block device"
    return "disk", None


def _on_usb(base: Path) -> bool:
    """Whether the device hangs off a USB bus (sysfs/block/sdc -> ../devices/.../usb2/...)."""
    return base.is_symlink() and any(p.startswith("usb") for p in base.readlink().parts)


def live_medium(procfs: Path, devfs: Path, sysfs: Path, blocks: Blocks) -> set[str]:
    """The disks that hold the filesystems of LIVE_MOUNTS."""
    disks: set[str] = set()
    for numbers, source, point in _mounts(procfs):
        if point not in LIVE_MOUNTS:
            continue
        name = blocks.by_dev.get(numbers) or _kernel_name(source, devfs, blocks)
        if name is not None:
            disks |= _disks_under(name, sysfs, blocks)
    return disks


def _mounts(procfs: Path) -> list[tuple[str, str, str]]:
    """(major:minor, source, mount point) of each mount of procfs/self/mountinfo."""
    found = []
    for line in (_read(procfs / "self" / "mountinfo") or "").splitlines():
        fields, _, tail = line.partition(" - ")
        words, more = fields.split(), tail.split()
        if len(words) >= 5 and len(more) >= 2:
            found.append((words[2], more[1], _unescape(words[4])))
    return found


def _unescape(text: str) -> str:
    """The octal escapes of mount tables: \\040 is a space."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _kernel_name(text: str, devfs: Path, blocks: Blocks) -> str | None:
    """The kernel name of a device named as sda or /dev/PATH (a node or a link to one)."""
    name = text
    if text.startswith("/dev/"):
        node = devfs / text.removeprefix("/dev/")
        try:
            st = node.stat()
        except OSError:
            st = None
        if st is not None and stat.S_ISBLK(st.st_mode):
            return blocks.by_dev.get(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
        name = Path(os.path.realpath(node)).name if node.is_symlink() else node.name
    return name if name in blocks.disks or name in blocks.parent else None


def _disks_under(name: str, sysfs: Path, blocks: Blocks) -> set[str]:
    """The whole disks a device lives on: a partition's disk, a dm or md device's slaves'."""
    if name in blocks.parent:
        return {blocks.parent[name]}
    slaves = sysfs / "block" / name / "slaves"
    below = sorted(p.name for p in slaves.iterdir()) if slaves.is_dir() else []
    if not below:
        return {name}
    return set().union(*(_disks_under(s, sysfs, blocks) for s in below))


def _explicit_name(text: str, devfs: Path, blocks: Blocks) -> str:
    name = _kernel_name(text, devfs, blocks)
    if name is None:
        raise UsageError(f"p2v.disks: {text} is not a block device")
    if name in blocks.parent:
        raise UsageError(f"p2v.disks: {text} is a partition of {blocks.parent[name]}, not a disk")
    return name


# ---- disks and partitions --------------------------------------------------------------------


def _disk(
    name: str, path: str, *, sysfs: Path, devfs: Path, probe: Probe | None, note: str | None
) -> Disk:
    base = sysfs / "block" / name
    device = base / "device"
    size = (_read_int(base / "size") or 0) * SECTOR
    serial = next(
        filter(None, (_read(p / f) for f in ("serial", "wwid") for p in (device, base))), None
    )
    return Disk(
        name=name,
        path=path,
        size=size,
        model=_read(device / "model"),
        serial=serial,
        rotational=_read(base / "queue" / "rotational") == "1",
        read_only=_read(base / "ro") == "1",
        partitions=_partitions(
            name, path, size, sysfs=sysfs, devfs=devfs, probe=probe or blkid_probe
        ),
        note=note,
    )


def _partitions(
    name: str, path: str, size: int, *, sysfs: Path, devfs: Path, probe: Probe
) -> tuple[Partition, ...]:
    """(name, number, start, size) of each partition, then probed for its filesystem."""
    entries = _sysfs_partitions(sysfs / "block" / name)
    if not entries and size > 0:
        whole = probe(path, 0, size)
        if whole.pttype:
            entries = [
                (partition_name(name, number), number, start, length)
                for number, start, length in read_partition_table(path)
            ]
        elif whole.fstype:
            return (Partition(name, path, 0, 0, size, whole.fstype, whole.label, whole.uuid),)
    found = []
    for part, number, start, length in entries:
        info = probe(path, start, length)
        fs = (info.fstype, info.label, info.uuid)
        found.append(Partition(part, str(devfs / part), number, start, length, *fs))
    return tuple(found)


def _sysfs_partitions(base: Path) -> list[tuple[str, int, int, int]]:
    entries = []
    for part in base.iterdir() if base.is_dir() else ():
        number = _read_int(part / "partition")
        if number is None:
            continue
        start, length = _read_int(part / "start") or 0, _read_int(part / "size") or 0
        if number <= 4 and length <= 8:
            continue  # a dos extended partition: the kernel shows 1 KiB of it (8 on 4Kn)
        entries.append((part.name, number, start * SECTOR, length * SECTOR))
    return sorted(entries, key=lambda e: e[1])
