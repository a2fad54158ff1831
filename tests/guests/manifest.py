"""What a guest builder put into a guest, so tests can compare inspection against it.

Every builder returns a `BuiltGuest`. Fields left as None are not checked. The names mirror the
JSON that `vmshift inspect --json` prints (docs/inspect-json.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ExpectedKernel:
    version: str
    virtio_blk: str  # "builtin" | "module" | "absent"
    virtio_net: str
    # Whether the initramfs carries virtio_blk (None: no initramfs for this kernel).
    initramfs_virtio_blk: bool | None


@dataclass(frozen=True)
class ExpectedNetworkConfig:
    path: str
    kind: str  # ifupdown | netplan | ifcfg | networkmanager | wicked | systemd-networkd
    interfaces: tuple[str, ...]


@dataclass(frozen=True)
class ExpectedLinux:
    kernels: tuple[ExpectedKernel, ...]
    bootloader: str  # grub2 | grub1
    network_configs: tuple[ExpectedNetworkConfig, ...]


@dataclass(frozen=True)
class ExpectedWindows:
    systemroot: str  # as libguestfs reports it, e.g. "/Windows"
    build: str  # e.g. "7601"
    current_control_set: str  # e.g. "ControlSet001"
    boot_drivers: tuple[str, ...]  # service names with Start=0 that the builder registered
    hibernated: bool
    fast_startup: bool


@dataclass(frozen=True)
class ExpectedOS:
    type: str  # linux | windows
    distro: str  # debian | ubuntu | rhel | fedora | sles | opensuse | windows
    product_name: str  # must equal what inspection reports
    major_version: int
    minor_version: int
    arch: str  # x86_64 | i386
    hostname: str
    package_format: str  # deb | rpm | unknown
    package_manager: str  # apt | dnf | yum | zypper | unknown
    firmware: str  # bios | uefi
    mountpoints: dict[str, str]  # mountpoint -> filesystem type put there
    applications: tuple[str, ...]  # names that must be listed (a subset of what is listed)
    foreign_software: tuple[str, ...]  # ForeignKind values that must be reported
    linux: ExpectedLinux | None = None
    windows: ExpectedWindows | None = None


@dataclass(frozen=True)
class BuiltGuest:
    name: str
    disks: tuple[Path, ...]
    oses: tuple[ExpectedOS, ...]
    # Extra files that belong to the guest (a VMX next to its VMDK, say).
    extra: dict[str, Path] = field(default_factory=dict)
