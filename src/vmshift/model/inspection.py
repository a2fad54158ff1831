"""What inspection learns about a guest: one record per operating system found.

The JSON document `vmshift inspect --json` prints is `InspectionReport.to_json()`; its schema is
documented in docs/inspect-json.md and versioned by `SCHEMA`. Change both together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SCHEMA = "vmshift-inspect/1"


class DriverPresence(StrEnum):
    """How a kernel provides a driver."""

    BUILTIN = "builtin"
    MODULE = "module"
    ABSENT = "absent"


class ForeignKind(StrEnum):
    """The hypervisor whose guest software was found."""

    VMWARE = "vmware"
    XEN = "xen"
    HYPERV = "hyperv"
    VIRTUALBOX = "virtualbox"
    PARALLELS = "parallels"


@dataclass(frozen=True)
class DiskInfo:
    path: str
    format: str
    virtual_size: int


@dataclass(frozen=True)
class Filesystem:
    device: str
    type: str
    label: str | None
    uuid: str | None
    size: int | None
    used: int | None


@dataclass(frozen=True)
class Application:
    name: str
    version: str
    release: str = ""
    epoch: int = 0
    publisher: str = ""


@dataclass(frozen=True)
class ForeignSoftware:
    kind: ForeignKind
    name: str
    evidence: str


@dataclass(frozen=True)
class LinuxKernel:
    version: str
    path: str
    initramfs: str | None
    virtio_blk: DriverPresence
    virtio_net: DriverPresence
    virtio_scsi: DriverPresence
    # None when there is no initramfs or it could not be read.
    initramfs_virtio_blk: bool | None
    initramfs_virtio_net: bool | None
    initramfs_virtio_scsi: bool | None

    @property
    def supports_virtio(self) -> bool:
        return (
            self.virtio_blk is not DriverPresence.ABSENT
            and self.virtio_net is not DriverPresence.ABSENT
        )


@dataclass(frozen=True)
class Bootloader:
    kind: str  # grub2, grub1, extlinux, systemd-boot, unknown
    firmware: str  # bios or uefi
    config: str | None


@dataclass(frozen=True)
class NetworkConfig:
    path: str
    kind: str  # ifupdown, netplan, ifcfg, networkmanager, wicked, systemd-networkd
    interfaces: tuple[str, ...]
    # Static IPv4 addresses it sets (no prefix): what a boot check expects to come up.
    static_ipv4: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinuxDetails:
    kernels: tuple[LinuxKernel, ...]
    bootloader: Bootloader
    network_configs: tuple[NetworkConfig, ...]


@dataclass(frozen=True)
class WindowsDriver:
    name: str
    group: str
    image_path: str
    file_present: bool


@dataclass(frozen=True)
class WindowsDetails:
    systemroot: str
    product_name: str
    build: str
    current_control_set: str
    boot_drivers: tuple[WindowsDriver, ...]
    hibernated: bool
    fast_startup: bool


@dataclass(frozen=True)
class OsIdentity:
    """What an operating system is, as inspection names it (libguestfs's inspect_get_*
    answers): guest/root_facts.py's RootFacts, before the rest of inspection looks at the
    root, and OperatingSystem, after."""

    root: str
    type: str
    distro: str
    product_name: str
    product_variant: str
    major_version: int
    minor_version: int
    arch: str
    hostname: str
    package_format: str
    package_manager: str
    osinfo: str


@dataclass(frozen=True)
class OperatingSystem(OsIdentity):
    firmware: str  # bios or uefi
    mountpoints: dict[str, str]
    filesystems: tuple[Filesystem, ...]
    applications: tuple[Application, ...]
    foreign_software: tuple[ForeignSoftware, ...]
    linux: LinuxDetails | None = None
    windows: WindowsDetails | None = None


@dataclass(frozen=True)
class InspectionReport:
    disks: tuple[DiskInfo, ...]
    accelerator: str
    operating_systems: tuple[OperatingSystem, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **_plain(self)}


def _plain(value: Any) -> Any:
    """Turn dataclasses, tuples and enums into JSON-ready values."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, StrEnum):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value
