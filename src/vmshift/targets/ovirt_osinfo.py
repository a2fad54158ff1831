"""The oVirt osinfo name for an inspected guest: the OS type the engine shows and tunes for.

The engine turns an unknown name into "Other OS" without a word, so every name here is one of
oVirt's own (packaging/conf/osinfo-defaults.properties; tests hold the list). When a guest is
newer than anything oVirt names, it gets the newest name of its line rather than "other":
RHEL 10 is tuned as RHEL 9, Windows Server 2022 as 2019, Ubuntu 24.04 as 18.04.
"""

from __future__ import annotations

from vmshift.convert.windows.osdirs import SERVER, guest_kind, parse_build
from vmshift.model.inspection import OperatingSystem

# libguestfs's distro names for RHEL and its rebuilds: the same kernels and drivers.
RHEL_LIKE = frozenset(
    {
        "rhel",
        "centos",
        "rocky",
        "alma",
        "almalinux",
        "oraclelinux",
        "scientificlinux",
        "redhat-based",
    }
)
UBUNTU_NAMED = {(12, 4), (12, 10), (13, 4), (13, 10), (14, 4), (18, 4)}
WIN10_SERVER_BUILDS = ((17763, "windows_2019x64"), (14393, "windows_2016x64"))
WIN11_FIRST_BUILD = 22000


def osinfo_name(os_: OperatingSystem) -> str:
    if os_.type == "windows":
        return _windows(os_)
    if os_.type == "linux":
        return _linux(os_)
    return "other"


def _x64(os_: OperatingSystem) -> bool:
    return os_.arch == "x86_64"


def _linux(os_: OperatingSystem) -> str:
    major, minor = os_.major_version, os_.minor_version
    if os_.distro in RHEL_LIKE and major >= 3:
        if major <= 6:
            return f"rhel_{major}x64" if _x64(os_) else f"rhel_{major}"
        if _x64(os_):
            return f"rhel_{min(major, 9)}x64"
    if os_.distro == "sles" and major >= 11:
        return "sles_11"
    if os_.distro == "debian" and major >= 7:
        return "debian_9" if major >= 9 else "debian_7"
    if os_.distro == "ubuntu" and major >= 12:
        if (major, minor) in UBUNTU_NAMED:
            return f"ubuntu_{major}_{minor:02d}"
        return "ubuntu_18_04" if major >= 18 else "ubuntu_14_04"
    return "other_linux_kernel_4" if _kernel_major(os_) >= 4 else "other_linux"


def _kernel_major(os_: OperatingSystem) -> int:
    kernels = os_.linux.kernels if os_.linux else ()
    majors = [int(k.version.split(".", 1)[0]) for k in kernels if k.version[:1].isdigit()]
    return max(majors, default=0)


def _windows(os_: OperatingSystem) -> str:
    version = (os_.major_version, os_.minor_version)
    x64 = _x64(os_)
    server = guest_kind(os_.product_variant, os_.product_name) == SERVER
    if version == (5, 1) or (version == (5, 2) and "xp" in os_.product_name.lower()):
        return "windows_xp"
    if version == (5, 2):
        return "windows_2003x64" if x64 else "windows_2003"
    if version == (6, 0):
        return "windows_2008x64" if x64 else "windows_2008"
    if version == (6, 1):
        if not x64:
            return "windows_7"
        return "windows_2008R2x64" if server else "windows_7x64"
    if version in ((6, 2), (6, 3)):
        if not x64:
            return "windows_8"
        if server:
            return "windows_2012R2x64" if version == (6, 3) else "windows_2012x64"
        return "windows_8x64"
    if version >= (10, 0):
        if not x64:
            return "windows_10"
        build = parse_build(os_.windows.build) if os_.windows else 0
        if server:
            for first, name in WIN10_SERVER_BUILDS:
                if build >= first:
                    return name
            return "windows_2016x64"
        return "windows_11" if build >= WIN11_FIRST_BUILD else "windows_10x64"
    return "other"
