"""The oVirt OS type of a guest: right for the guests we know, and always a name oVirt has.

tests/golden/ovirt-osinfo-names.txt lists oVirt's own names; a name outside it would make the
engine import the guest as "Other OS" without telling anyone.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.os_samples import LINUX
from vmshift.model.inspection import (
    Bootloader,
    DriverPresence,
    LinuxDetails,
    LinuxKernel,
    OperatingSystem,
    WindowsDetails,
)
from vmshift.targets.ovirt_osinfo import osinfo_name

NAMES_FILE = Path(__file__).resolve().parent.parent / "golden" / "ovirt-osinfo-names.txt"
OVIRT_NAMES = {
    line.split()[0]
    for line in NAMES_FILE.read_text().splitlines()
    if line.strip() and not line.startswith("#")
}

BASE = replace(LINUX, linux=None)


def kernel(version: str) -> LinuxKernel:
    absent = DriverPresence.ABSENT
    path = f"/boot/vmlinuz-{version}"
    return LinuxKernel(version, path, None, absent, absent, absent, None, None, None)


def linux(
    distro: str, major: int, minor: int = 0, arch: str = "x86_64", kver: str = ""
) -> OperatingSystem:
    kernels = (kernel(kver),) if kver else ()
    details = LinuxDetails(kernels, Bootloader("grub2", "bios", None), ())
    return replace(
        BASE, distro=distro, major_version=major, minor_version=minor, arch=arch, linux=details
    )


def windows(  # noqa: PLR0917 - a table of guests reads best positionally
    major: int, minor: int, build: str, variant: str, arch: str = "x86_64", product: str = ""
) -> OperatingSystem:
    details = WindowsDetails("/Windows", product, build, "ControlSet001", (), False, False)
    return replace(
        BASE,
        type="windows",
        distro="windows",
        product_name=product,
        product_variant=variant,
        major_version=major,
        minor_version=minor,
        arch=arch,
        windows=details,
    )


def test_the_names_file_is_the_osinfo_list() -> None:
    assert len(OVIRT_NAMES) == 44
    assert {"rhel_9x64", "windows_2019x64", "windows_11", "debian_9", "other"} <= OVIRT_NAMES


@pytest.mark.parametrize(
    ("guest", "name"),
    [
        (linux("rhel", 9, 4), "rhel_9x64"),
        (linux("rocky", 8, 9), "rhel_8x64"),
        (linux("centos", 7, 9), "rhel_7x64"),
        (linux("rhel", 6, 10), "rhel_6x64"),
        (linux("rhel", 6, 10, arch="i686"), "rhel_6"),
        (linux("rhel", 10, 0), "rhel_9x64"),  # newer than oVirt knows: the newest RHEL
        (linux("rhel", 7, 9, arch="i686"), "other_linux"),  # no 32-bit RHEL 7 in oVirt
        (linux("debian", 12), "debian_9"),
        (linux("debian", 8), "debian_7"),
        (linux("ubuntu", 14, 4), "ubuntu_14_04"),
        (linux("ubuntu", 16, 4), "ubuntu_14_04"),
        (linux("ubuntu", 22, 4), "ubuntu_18_04"),
        (linux("sles", 15, 5), "sles_11"),
        (linux("fedora", 39, kver="6.5.6-300.fc39.x86_64"), "other_linux_kernel_4"),
        (linux("archlinux", 0, kver="3.10.0"), "other_linux"),
        (windows(5, 1, "2600", "Client", arch="i386", product="Windows XP"), "windows_xp"),
        (windows(6, 1, "7601", "Client", arch="i386"), "windows_7"),
        (windows(6, 1, "7601", "Client"), "windows_7x64"),
        (windows(6, 1, "7601", "Server"), "windows_2008R2x64"),
        (windows(6, 3, "9600", "Server"), "windows_2012R2x64"),
        (windows(10, 0, "19045", "Client"), "windows_10x64"),
        (windows(10, 0, "22631", "Client"), "windows_11"),
        (windows(10, 0, "14393", "Server"), "windows_2016x64"),
        (windows(10, 0, "17763", "Server"), "windows_2019x64"),
        (windows(10, 0, "20348", "Server"), "windows_2019x64"),  # 2022: newest server oVirt names
        (windows(10, 0, "19045", "Client", arch="i386"), "windows_10"),
    ],
)
def test_known_guests(guest: OperatingSystem, name: str) -> None:
    assert osinfo_name(guest) == name


def _every_guest() -> list[OperatingSystem]:
    guests = []
    for distro in (
        "rhel",
        "centos",
        "rocky",
        "alma",
        "oraclelinux",
        "fedora",
        "debian",
        "ubuntu",
        "sles",
        "opensuse",
        "archlinux",
        "unknown",
    ):
        for major in range(0, 31):
            for minor in (0, 4, 10):
                for arch in ("x86_64", "i686"):
                    for kver in ("", "2.6.32", "5.10.0"):
                        guests.append(linux(distro, major, minor, arch, kver))
    for major, minor in ((5, 0), (5, 1), (5, 2), (6, 0), (6, 1), (6, 2), (6, 3), (10, 0), (11, 0)):
        for build in ("", "2600", "10240", "14393", "17763", "19045", "20348", "22000", "26100"):
            for variant in ("Client", "Server", "Server Core", "Embedded", ""):
                for arch in ("x86_64", "i386"):
                    for product in ("", "Windows XP Professional x64", "Windows Server 2022"):
                        guests.append(windows(major, minor, build, variant, arch, product))
    return guests


def test_every_name_emitted_is_an_ovirt_name() -> None:
    emitted = {osinfo_name(g) for g in _every_guest()}
    emitted.add(osinfo_name(replace(BASE, type="unknown")))
    assert emitted - OVIRT_NAMES == set()
    assert len(emitted) > 25  # the matrix reaches most of the table
