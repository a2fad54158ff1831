"""Inspected operating systems as tests hand them to targets and converters."""

from __future__ import annotations

from vmshift.model.inspection import Bootloader, LinuxDetails, OperatingSystem

LINUX = OperatingSystem(
    root="/dev/sda1",
    type="linux",
    distro="debian",
    product_name="Debian 12",
    product_variant="",
    major_version=12,
    minor_version=0,
    arch="x86_64",
    hostname="g",
    package_format="deb",
    package_manager="apt",
    osinfo="debian12",
    firmware="bios",
    mountpoints={"/": "/dev/sda1"},
    filesystems=(),
    applications=(),
    foreign_software=(),
    linux=LinuxDetails(
        kernels=(), bootloader=Bootloader("grub2", "bios", None), network_configs=()
    ),
)
