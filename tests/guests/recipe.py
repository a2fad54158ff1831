"""A phony guest recipe: the disks to build and fill, and the ExpectedOS that says what they hold.

Facts that follow from the disk layout (mountpoints, firmware, which partition grub calls root)
are derived here from the layout itself, so a recipe cannot state them inconsistently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tests.guests.disks import DiskJob, DiskSpec, Volume
from tests.guests.kernel_files import Kernel
from tests.guests.manifest import ExpectedLinux, ExpectedNetworkConfig, ExpectedOS

ROOT_DISK_MIB = 512
# Modules a kernel built for VMware, Hyper-V and bare metal carries besides virtio.
COMMON_MODULES = ("vmw_pvscsi", "vmxnet3", "libahci", "ahci", "e1000")
FUSION = ("scsi_transport_spi", "mptbase", "mptscsih", "mptspi")
EXT4 = ("mbcache", "jbd2", "ext4")


@dataclass(frozen=True)
class Recipe:
    job: DiskJob
    expected: ExpectedOS | None  # None: a disk without an operating system


def mountpoints(volumes: Sequence[Volume]) -> dict[str, str]:
    return {v.mountpoint: v.fstype for v in volumes if v.fstype != "swap"}


def firmware(volumes: Sequence[Volume]) -> str:
    esp = any(v.mountpoint == "/boot/efi" and v.fstype == "vfat" for v in volumes)
    return "uefi" if esp else "bios"


def grub_root(disks: Sequence[DiskSpec], volumes: Sequence[Volume]) -> str:
    """grub's name for the partition holding /boot, e.g. hd0,msdos1."""
    boot = next((v for v in volumes if v.mountpoint == "/boot"), None)
    boot = boot or next(v for v in volumes if v.mountpoint == "/")
    table = "gpt" if disks[boot.disk].ptable == "gpt" else "msdos"
    return f"hd{boot.disk},{table}{boot.part}"


def separate_boot(volumes: Sequence[Volume]) -> bool:
    return any(v.mountpoint == "/boot" for v in volumes)


def expected_linux(
    job: DiskJob,
    *,
    distro: str,
    product: str,
    version: tuple[int, int],
    hostname: str,
    packaging: tuple[str, str],  # (package format, package manager) as libguestfs names them
    applications: tuple[str, ...],
    foreign: tuple[str, ...],
    kernels: tuple[Kernel, ...],
    network: tuple[ExpectedNetworkConfig, ...],
) -> ExpectedOS:
    return ExpectedOS(
        type="linux",
        distro=distro,
        product_name=product,
        major_version=version[0],
        minor_version=version[1],
        arch="x86_64",
        hostname=hostname,
        package_format=packaging[0],
        package_manager=packaging[1],
        firmware=firmware(job.volumes),
        mountpoints=mountpoints(job.volumes),
        applications=applications,
        foreign_software=foreign,
        linux=ExpectedLinux(
            kernels=tuple(k.expected() for k in kernels),
            bootloader="grub2",
            network_configs=network,
        ),
    )
