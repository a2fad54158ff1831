"""Inspection of a plain Windows guest without libguestfs's inspect_os.

On the phony Windows Server 2022 guest under TCG, inspect_os and the inspect_get_* calls took
about 8 of the 9.8 s inspection took: inspect_os mounts every filesystem and runs its checks
for a dozen kinds of root on each, runs file(1) on cmd.exe, and opens both hives with hivex in
the appliance; the application list opens the SOFTWARE hive there again, one protocol round
trip per key and value read. Here one listing of each volume's top directory rules out every
other kind of root, the PE header of cmd.exe gives the architecture, and the two hives are
downloaded once and read on the host (by hivex, a pure data parser), where windows_facts and
the application list read the same copies.

The answers must be libguestfs 1.48's own (daemon/inspect_fs_windows.ml, lib/inspect-apps.c
and lib/inspect-osinfo.c), so that nothing downstream can tell which path ran;
tests/integration/test_inspect_fastpath.py compares both on every Windows test guest. The path
is taken only for the layouts its rules cover:

- block devices holding NTFS or FAT (an ESP), or nothing (the Microsoft Reserved partition),
  on partitions or whole disks: no dynamic disks (LDM), BitLocker, LVM, LUKS or Linux
  filesystems;
- exactly one Windows root, found at one of libguestfs's standard system roots (/Windows,
  /WINNT, /win32, /win, /reactos in any case) with System32, System32/config and
  System32/cmd.exe; no volume whose top directory has names of a Unix-like root or of DOS,
  and no boot.ini to consult for another system root;
- an i386 or x86_64 cmd.exe, both hives present, readable by hivex, with the
  CurrentVersion key and the Select key libguestfs reads, string and DWORD values of the
  types it reads.

Anything else raises `Unsure`, and inspection asks libguestfs's inspect_os as before (the
reason is logged).
"""

from __future__ import annotations

import logging
import re
from contextlib import closing
from pathlib import Path
from typing import Any

from vmshift.errors import InspectionError
from vmshift.formats.pe import HEADER_BYTES, pe_arch
from vmshift.formats.release_files import Unsure
from vmshift.guest.probes import (
    Probes,
    blkid_tags,
    each_mounted,
    listed,
    plain_devices,
    try_call,
)
from vmshift.guest.registry import ExpandSz, Hive, RegData, plain
from vmshift.guest.root_facts import RootFacts, WindowsRegistry
from vmshift.guest.windows_facts import CURRENT_VERSION, case_path, hive_copy
from vmshift.model.inspection import Application

log = logging.getLogger(__name__)

FILESYSTEMS = {"ntfs", "vfat"}
# Partition types of Windows' dynamic disks, whose volumes libguestfs finds through ldmtool:
# MBR type 0x42, GPT's LDM metadata and LDM data partitions.
_LDM_TYPES = {
    "0x42",
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3",
    "af9b60a0-1431-4f62-bc68-3311714a69ad",
}
# libguestfs's standard Windows system roots, tried in this order, in any case.
SYSTEMROOTS = ("/windows", "/winnt", "/win32", "/win", "/reactos")
# Top-level names (exact case) without which none of the checks libguestfs makes before it
# looks for Windows can match: a Grub /boot, a BSD, Hurd, Minix, Linux or CoreOS root, a
# Linux /usr, /usr/local or /var.
_UNIX_TOP = {"etc", "bin", "log", "grub", "grub2", "hurd"}
_DOS_TOP = {"fdos", "dos"}  # FreeDOS and MS-DOS roots (any case)
UNINSTALL = (
    r"Microsoft\Windows\CurrentVersion\Uninstall",
    # 32-bit applications on a 64-bit Windows.
    r"WOW6432node\Microsoft\Windows\CurrentVersion\Uninstall",
)
_MAJOR_MINOR = re.compile(r"(\d+)\.(\d+)")
_INT32_MAX = 2**31 - 1


def inspect_windows(g: Any, probes: Probes, hives: Path) -> RootFacts | None:
    """The guest's one root when it is a Windows layout this module covers, else None
    (libguestfs's inspect_os must answer). The hives it reads are left in `hives` for the
    rest of inspection; nothing is left mounted."""
    try:
        return _inspect(g, probes, hives)
    except (Unsure, RuntimeError, InspectionError) as exc:
        log.info("Windows inspection declined: %s", exc)
        return None


def _inspect(g: Any, probes: Probes, hives: Path) -> RootFacts:
    found = []
    for dev in plain_devices(g):
        tags = blkid_tags(g, dev, probes)
        if tags.get("PART_ENTRY_TYPE", "").lower() in _LDM_TYPES:
            raise Unsure(f"{dev} is part of a dynamic disk (LDM)")
        kind = tags.get("TYPE", "")
        if kind in FILESYSTEMS:
            found.append(dev)
        elif kind:
            raise Unsure(f"{dev} holds {kind}")
    roots: list[RootFacts] = []
    # From the last partition: Windows' own volume comes after a System Reserved partition
    # or an ESP, so a guest of another kind is declined before its hives are read.
    with closing(each_mounted(g, reversed(found))) as mounted:
        for dev in mounted:
            systemroot = _systemroot(g, dev)
            if systemroot is not None:
                if roots:
                    raise Unsure(f"two Windows roots, {roots[0].root} and {dev}")
                roots.append(_root(g, dev, systemroot, hives))
    if not roots:
        raise Unsure("no Windows root found")
    return roots[0]


def _systemroot(g: Any, dev: str) -> str | None:
    """The system root of the volume mounted at /, as libguestfs finds it; None for a volume
    that is no root; Unsure where libguestfs might call it another OS's root or look
    further (boot.ini)."""
    names = listed(lambda: g.ls("/"))
    if unix := _UNIX_TOP.intersection(names):
        raise Unsure(f"{dev} has /{min(unix)}: part of a Unix-like system, or a Grub /boot")
    lower = {name.lower() for name in names}
    for candidate in SYSTEMROOTS:
        if candidate[1:] not in lower:
            continue  # case_sensitive_path would name nothing that exists
        path = try_call(g.case_sensitive_path, candidate)
        if path and _is_systemroot(g, path):
            return str(path)
    if "boot.ini" in lower:
        raise Unsure(f"{dev}: boot.ini would be read for a system root elsewhere")
    if lower & _DOS_TOP:
        raise Unsure(f"{dev} looks like a DOS root")
    return None


def _is_systemroot(g: Any, path: str) -> bool:
    return bool(
        case_path(g, f"{path}/system32", g.is_dir)
        and case_path(g, f"{path}/system32/config", g.is_dir)
        and case_path(g, f"{path}/system32/cmd.exe", g.is_file)
    )


def _root(g: Any, dev: str, systemroot: str, hives: Path) -> RootFacts:
    cmd = g.case_sensitive_path(f"{systemroot}/system32/cmd.exe")
    arch = pe_arch(bytes(g.pread(cmd, HEADER_BYTES, 0)))
    if arch is None:
        raise Unsure(f"{cmd}: not an i386 or x86_64 executable")
    software_path = case_path(g, f"{systemroot}/system32/config/software", g.is_file)
    system_path = case_path(g, f"{systemroot}/system32/config/system", g.is_file)
    if software_path is None or system_path is None:
        raise Unsure(f"{dev}: a registry hive is missing from {systemroot}/System32/config")
    software = _hive(g, dev, software_path, hives)
    system = _hive(g, dev, system_path, hives)
    product_name, (major, minor), variant = _software_facts(software)
    ccs, hostname = _system_facts(system)
    return RootFacts(
        root=dev,
        type="windows",
        distro="windows",
        product_name=product_name,
        product_variant=variant,
        major_version=major,
        minor_version=minor,
        arch=arch,
        hostname=hostname,
        package_format="unknown",
        package_manager="unknown",
        osinfo=windows_osinfo(major, minor, product_name, variant),
        mountpoints={"/": dev},
        filesystems=(dev,),
        inspect_os=False,
        windows=WindowsRegistry(systemroot, ccs, system_path, software_path),
    )


def _hive(g: Any, dev: str, guest_path: str, hives: Path) -> Hive:
    local = hive_copy(g, dev, guest_path, hives)
    if local is None:
        raise Unsure(f"{guest_path} cannot be downloaded")
    return Hive(local)


def _text(value: RegData, what: str) -> str:
    """A string value as hivex's value_string reads it (REG_SZ or REG_EXPAND_SZ)."""
    if isinstance(value, str):
        return value
    if isinstance(value, ExpandSz):
        return value.text
    raise Unsure(f"{what} is not a string")


def _dword(value: RegData, what: str) -> int:
    """A DWORD as libguestfs reads it (value_dword, then a signed 32-bit int)."""
    number = plain(value)
    if not isinstance(number, int) or number > _INT32_MAX:
        raise Unsure(f"{what} is not a DWORD libguestfs reads the same way")
    return number


def _software_facts(software: Hive) -> tuple[str, tuple[int, int], str]:
    """Product name, version and variant (InstallationType) from the SOFTWARE hive, read in
    libguestfs's order: a missing CurrentVersion ends the reading before the variant."""
    node = software.node(CURRENT_VERSION)
    if node is None:
        raise Unsure(f"no {CURRENT_VERSION} key in the SOFTWARE hive")
    values = software.values(node)  # by name as stored: libguestfs matches them exactly
    product_name = "unknown"
    if "ProductName" in values:
        product_name = _text(values["ProductName"], "ProductName")
    if "CurrentMajorVersionNumber" in values and "CurrentMinorVersionNumber" in values:
        major = _dword(values["CurrentMajorVersionNumber"], "CurrentMajorVersionNumber")
        minor = _dword(values["CurrentMinorVersionNumber"], "CurrentMinorVersionNumber")
        version = (major, minor)
    elif "CurrentVersion" in values:
        found = _MAJOR_MINOR.search(_text(values["CurrentVersion"], "CurrentVersion"))
        if found is None:
            raise Unsure("CurrentVersion holds no version number")
        version = (int(found.group(1)), int(found.group(2)))
    else:
        return product_name, (0, 0), "unknown"
    variant = "unknown"
    if "InstallationType" in values:
        variant = _text(values["InstallationType"], "InstallationType")
    return product_name, version, variant


def _system_facts(system: Hive) -> tuple[str, str]:
    """The current control set and the hostname from the SYSTEM hive."""
    select = system.node("Select")
    current = None if select is None else system.typed_value(select, "Current")
    if current is None:
        raise Unsure(r"no Select\Current in the SYSTEM hive")
    number = _dword(current, r"Select\Current")
    if number < 0:
        raise Unsure(r"Select\Current is negative")
    ccs = f"ControlSet{number:03d}"
    hostname = "unknown"
    params = system.node(rf"{ccs}\Services\Tcpip\Parameters")
    if params is not None:
        values = system.values(params)
        if "Hostname" in values:
            hostname = _text(values["Hostname"], "Hostname")
    return ccs, hostname


def windows_osinfo(major: int, minor: int, product_name: str, variant: str) -> str:
    """libosinfo's short ID for a Windows version (inspect_get_osinfo)."""
    server = "Server" in variant
    if major == 5 and minor == 1:
        return "winxp"
    if major == 5 and minor == 2:
        if "XP" in product_name:
            return "winxp"
        return "win2k3r2" if "R2" in product_name else "win2k3"
    if major == 6 and minor in (0, 1, 2, 3):
        servers = ("win2k8", "win2k8r2", "win2k12", "win2k12r2")
        clients = ("winvista", "win7", "win8", "win8.1")
        return (servers if server else clients)[minor]
    if major == 10 and minor == 0:
        if not server:
            return "win10"
        if "2022" in product_name:
            return "win2k22"
        return "win2k19" if "2019" in product_name else "win2k16"
    return "unknown"


def applications(software: Hive) -> tuple[Application, ...]:
    """The installed applications as inspect_list_applications2 lists a Windows guest's:
    each key under Uninstall (native, then WOW64) with a string DisplayName."""
    found: list[tuple[str, Application]] = []
    for path in UNINSTALL:
        node = software.node(path)
        if node is None:
            continue
        for key, child in software.subkeys(node):
            display = _optional_text(software, child, "DisplayName")
            if display is None:
                continue
            app = Application(
                # The key's name when the display name is empty, as vmshift names it.
                name=display or key,
                version=_optional_text(software, child, "DisplayVersion") or "",
                publisher=_optional_text(software, child, "Publisher") or "",
            )
            found.append((key, app))
    # libguestfs sorts by the key's name (strcmp); callers sort by display name after that.
    found.sort(key=lambda item: item[0].encode("utf-8"))
    return tuple(app for _, app in found)


def _optional_text(hive: Hive, node: int, name: str) -> str | None:
    """A string value (any case of its name, as hivex's node_get_value finds it); None when it
    is absent or not a string (libguestfs leaves it out then)."""
    value = hive.typed_value(node, name)
    if isinstance(value, str):
        return value
    return value.text if isinstance(value, ExpandSz) else None
