"""What the P2V client found on the physical machine, and what it sends to the server.

Frozen and free of I/O: discovery.py fills it in from /proc and /sys; the server reads it back
from JSON (`Machine.from_json`) to describe the source guest (sources/p2v.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "vmshift-p2v-machine/1"


@dataclass(frozen=True)
class Partition:
    name: str  # kernel name: sda1, nvme0n1p2, loop3p1
    path: str  # /dev/sda1 (may not exist as a node: a loop device's partitions need -P)
    number: int  # 1-based partition number in the table
    start: int  # bytes from the start of the disk
    size: int  # bytes
    fstype: str | None = None  # blkid's name: ext4, xfs, btrfs, ntfs, vfat, swap, LVM2_member
    label: str | None = None
    uuid: str | None = None


@dataclass(frozen=True)
class Disk:
    name: str  # kernel name: sda, nvme0n1, loop3
    path: str  # /dev/sda
    size: int  # bytes
    model: str | None = None
    serial: str | None = None
    rotational: bool = False
    read_only: bool = False
    partitions: tuple[Partition, ...] = ()
    # Why discovery would skip it (the live medium, a loop device ...) when it was named
    # explicitly (p2v.disks=/dev/loop3); None for an ordinary fixed disk.
    note: str | None = None


@dataclass(frozen=True)
class RemovableDevice:
    name: str  # sr0, fd0, sdc (a USB stick counts as removable)
    path: str
    kind: str  # cdrom, floppy, usb


@dataclass(frozen=True)
class Interface:
    name: str  # eth0, enp1s0
    mac: str  # lower-case colon form
    driver: str | None = None  # e1000e, igb, virtio_net ...
    link: str = "unknown"  # up, down, unknown (from operstate)
    speed: int | None = None  # Mbit/s, when the driver says


@dataclass(frozen=True)
class Cpu:
    model: str | None  # "Intel(R) Xeon(R) ..." from /proc/cpuinfo
    sockets: int
    cores: int  # per socket
    threads: int  # per core
    vendor: str | None = None  # GenuineIntel, AuthenticAMD

    @property
    def count(self) -> int:
        return self.sockets * self.cores * self.threads


@dataclass(frozen=True)
class Machine:
    hostname: str
    cpu: Cpu
    memory: int  # bytes (MemTotal)
    firmware: str  # bios or uefi (/sys/firmware/efi)
    disks: tuple[Disk, ...] = ()
    removables: tuple[RemovableDevice, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def disk(self, name: str) -> Disk | None:
        return next((d for d in self.disks if name in (d.name, d.path)), None)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Machine:
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document (schema {doc.get('schema')!r})")
        disks = tuple(
            Disk(**{**d, "partitions": tuple(Partition(**p) for p in d.get("partitions", ()))})
            for d in doc.get("disks", ())
        )
        return cls(
            hostname=doc["hostname"],
            cpu=Cpu(**doc["cpu"]),
            memory=int(doc["memory"]),
            firmware=doc["firmware"],
            disks=disks,
            removables=tuple(RemovableDevice(**r) for r in doc.get("removables", ())),
            interfaces=tuple(Interface(**i) for i in doc.get("interfaces", ())),
            extra=dict(doc.get("extra", {})),
        )
