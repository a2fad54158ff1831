"""Phony Windows guests that libguestfs inspection takes for real ones, built in seconds.

A guest is a partitioned disk with an NTFS volume holding only what inspection and a converter
read: the SYSTEM and SOFTWARE hives (made from nothing by tests/guests/hive.py), stub PE files
whose headers give the architecture, stub driver files, and the boot files of its firmware. All
guests are built in one appliance launch and cached together.

`GUESTS` describes every guest; `build_all()` returns what tests compare inspection against.
Traps a real guest also sets, on purpose: XP's systemroot is "/WINDOWS" and its CurrentBuild is
not a number; Windows 8.1 and later say CurrentVersion "6.3" (the DWORDs hold the real version);
Windows 11 calls itself "Windows 10 Pro"; win2008r2 runs from ControlSet002 while ControlSet001
has another hostname; every guest registers one boot driver whose file is missing.
"""

from __future__ import annotations

import os
import struct
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import guestfs

from tests.guests import hive
from tests.guests.cache import cached_dir, source_version
from tests.guests.hive import ExpandSz, RegValue
from tests.guests.manifest import BuiltGuest, ExpectedOS, ExpectedWindows
from vmshift.guest import regvalue

DISK_SIZE = 256 * 1024 * 1024
SECTOR = 512
_NS = uuid.UUID("6f1d3c2e-8a4b-4c55-9d1e-0b7a5e3f2c10")  # seeds every GUID a guest carries

_SCSI_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
_HDC_CLASS = "{4D36E96A-E325-11CE-BFC1-08002BE10318}"
_NET_CLASS = "{4D36E972-E325-11CE-BFC1-08002BE10318}"
_GPT_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
_GPT_MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
_GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
_GPT_NAMES = {
    "esp": "EFI system partition",
    "msr": "Microsoft reserved partition",
    "root": "Basic data partition",
}


@dataclass(frozen=True)
class Service:
    """A key under Services; `start` 0 makes it a boot driver the converter must care about."""

    name: str
    start: int  # 0 boot, 1 system, 2 automatic, 3 manual
    type: int  # 1 kernel driver, 2 file system driver, 16 service in its own process
    group: str
    image_path: str  # as the registry holds it
    file_present: bool = True


def _drv(
    name: str, group: str, start: int = 0, *, present: bool = True, xp: bool = False
) -> Service:
    folder = "system32\\DRIVERS" if xp else "System32\\drivers"
    return Service(name, start, 1, group, f"{folder}\\{name.lower()}.sys", present)


@dataclass(frozen=True)
class App:
    """An Uninstall entry, and the program it installed."""

    key: str
    display_name: str
    version: str
    publisher: str
    install_dir: str = ""  # a Windows path; a stub `exe` is put there
    exe: str = ""
    wow64: bool = False  # listed under WOW6432Node, as 32-bit programs on 64-bit Windows are


@dataclass(frozen=True)
class WindowsGuest:
    name: str
    product_name: str  # the registry's ProductName, which is what libguestfs reports
    version: tuple[int, int]
    current_version: str  # the CurrentVersion string: "6.3" on every release since 8.1
    build: str  # CurrentBuildNumber
    current_build: str  # CurrentBuild: the same number, except on XP
    edition_id: str | None
    installation_type: str | None  # InstallationType; XP has none
    arch: str
    hostname: str
    firmware: str
    disk_format: str
    services: tuple[Service, ...]
    apps: tuple[App, ...] = ()
    foreign: tuple[str, ...] = ()
    osinfo: str = ""  # what libguestfs 1.48 inspect_get_osinfo says
    control_set: int = 1
    display_version: str | None = None
    csd_version: str | None = None
    hiberfil_header: bytes | None = None  # None: no hiberfil.sys
    hiberboot_enabled: int | None = None  # Power\HiberbootEnabled, Windows 8 and later
    system_reserved: bool = False  # a 32 MiB boot partition before C:, as Windows 7 setup makes

    @property
    def systemroot(self) -> str:
        return "/WINDOWS" if self.version[0] < 6 else "/Windows"

    @property
    def pre_win8(self) -> bool:
        return self.version < (6, 2)

    @property
    def boot_drivers(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services if s.start == 0)

    @property
    def missing_driver_files(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services if not s.file_present)

    @property
    def hibernated(self) -> bool:
        return self.hiberfil_header is not None and self.hiberfil_header[:4].upper() == b"HIBR"

    @property
    def fast_startup(self) -> bool:
        return self.hiberboot_enabled == 1

    @property
    def disk_file(self) -> str:
        return f"{self.name}.{'qcow2' if self.disk_format == 'qcow2' else 'img'}"

    @property
    def disk_signature(self) -> int:
        """The MBR disk ID, unique per guest: inspection finds C: by it across all disks."""
        return zlib.crc32(self.name.encode()) | 1

    def guid(self, what: str) -> uuid.UUID:
        return uuid.uuid5(_NS, f"{self.name}/{what}")

    @property
    def root_partition(self) -> int:
        return 3 if self.firmware == "uefi" else 2 if self.system_reserved else 1


@dataclass(frozen=True)
class _Part:
    start: int  # sectors
    end: int  # sectors, inclusive
    fs: str | None
    label: str
    role: str  # esp | msr | boot | root
    gpt_type: str = _GPT_BASIC_DATA


_DISK_SECTORS = DISK_SIZE // SECTOR
_GPT_ENTRIES = 128
_GPT_ENTRY_SIZE = 128
_GPT_TABLE_SECTORS = _GPT_ENTRIES * _GPT_ENTRY_SIZE // SECTOR


def _layout(g: WindowsGuest) -> list[_Part]:
    mib = 1024 * 1024 // SECTOR
    if g.firmware == "uefi":
        # End on a 1 MiB boundary, short of the backup GPT, as Windows setup does.
        end = (_DISK_SECTORS - 2 - _GPT_TABLE_SECTORS + 1) // mib * mib - 1
        return [
            _Part(2048, 2048 + 64 * mib - 1, "vfat", "SYSTEM", "esp", _GPT_ESP),
            _Part(2048 + 64 * mib, 2048 + 80 * mib - 1, None, "", "msr", _GPT_MSR),
            _Part(2048 + 80 * mib, end, "ntfs", "Windows", "root"),
        ]
    if g.system_reserved:
        return [
            _Part(2048, 2048 + 32 * mib - 1, "ntfs", "System Reserved", "boot"),
            _Part(2048 + 32 * mib, _DISK_SECTORS - 1, "ntfs", "", "root"),
        ]
    return [_Part(2048, _DISK_SECTORS - 1, "ntfs", "", "root")]


def _mbr_entry(status: int, type_id: int, start: int, count: int) -> bytes:
    # CHS fields hold the "use LBA" marker values every modern partitioner writes.
    return struct.pack("<B3sB3sII", status, b"\xfe\xff\xff", type_id, b"\xfe\xff\xff", start, count)


def _mbr(signature: int, entries: list[bytes]) -> bytes:
    table = b"".join(entries).ljust(64, b"\0")
    return bytes(0x1B8) + struct.pack("<IH", signature, 0) + table + b"\x55\xaa"


def partition_table(g: WindowsGuest) -> list[tuple[int, bytes]]:
    """(byte offset, bytes) to write to a blank disk to partition it as `_layout` says.

    Written directly rather than through parted: each parted call costs over a second under
    TCG, and this way the MBR disk ID and GPT GUIDs are the ones the registry names.
    """
    parts = _layout(g)
    if g.firmware != "uefi":
        entries = [
            _mbr_entry(0x80 if n == 1 else 0, 0x07, p.start, p.end - p.start + 1)
            for n, p in enumerate(parts, start=1)
        ]
        return [(0, _mbr(g.disk_signature, entries))]

    table = b"".join(
        uuid.UUID(p.gpt_type).bytes_le
        + g.guid(p.role).bytes_le
        + struct.pack("<QQQ", p.start, p.end, 0)
        + _GPT_NAMES[p.role].encode("utf-16-le").ljust(72, b"\0")
        for p in parts
    ).ljust(_GPT_ENTRIES * _GPT_ENTRY_SIZE, b"\0")
    last = _DISK_SECTORS - 1

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = [
            b"EFI PART", 0x00010000, 92, 0, 0, current, backup,
            2 + _GPT_TABLE_SECTORS, last - 1 - _GPT_TABLE_SECTORS,
            g.guid("disk").bytes_le, entries_lba, _GPT_ENTRIES, _GPT_ENTRY_SIZE,
            zlib.crc32(table),
        ]  # fmt: skip
        fmt = "<8sIIIIQQQQ16sQIII"
        crc = zlib.crc32(struct.pack(fmt, *fields))
        fields[3] = crc
        return struct.pack(fmt, *fields).ljust(SECTOR, b"\0")

    protective = _mbr(0, [_mbr_entry(0, 0xEE, 1, min(last, 0xFFFFFFFF))])
    primary = protective + header(1, last, 2) + table
    backup = table + header(last, 1, last - _GPT_TABLE_SECTORS)
    return [(0, primary), ((last - _GPT_TABLE_SECTORS) * SECTOR, backup)]


def _root_offset(g: WindowsGuest) -> int:
    return _layout(g)[g.root_partition - 1].start * SECTOR


_VMWARE = (
    Service("vmci", 1, 1, "System Bus Extender", "System32\\drivers\\vmci.sys"),
    Service("vmhgfs", 1, 2, "Network", "System32\\drivers\\vmhgfs.sys"),
    Service("vm3dmp", 3, 1, "Video", "System32\\drivers\\vm3dmp.sys"),
    Service("VMTools", 2, 16, "", '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"'),
)


def _vmware_tools(version: str) -> App:
    return App(
        "{" + str(uuid.uuid5(_NS, "vmware-tools")).upper() + "}",
        "VMware Tools",
        version,
        "VMware, Inc.",
        "C:\\Program Files\\VMware\\VMware Tools\\",
        "vmtoolsd.exe",
    )


_WIN10_DRIVERS = (
    _drv("storahci", "SCSI Miniport"),
    _drv("stornvme", "SCSI Miniport"),
    _drv("atapi", "SCSI miniport", start=3),  # present in 10 but not boot-start
)

GUESTS: tuple[WindowsGuest, ...] = (
    WindowsGuest(
        name="win-xp",
        product_name="Microsoft Windows XP",
        version=(5, 1),
        current_version="5.1",
        build="2600",
        current_build="2600.xpsp.080413-2111",
        edition_id=None,
        installation_type=None,
        csd_version="Service Pack 3",
        arch="i386",
        hostname="winxp-vbox",
        firmware="bios",
        disk_format="raw",
        osinfo="winxp",
        services=(
            _drv("atapi", "SCSI miniport", xp=True),
            _drv("intelide", "System Bus Extender", xp=True),
            _drv("pciide", "Boot Bus Extender", xp=True),
            _drv("symmpi", "SCSI miniport", present=False, xp=True),
            _drv("VBoxGuest", "Base", start=1, xp=True),
            Service("VBoxService", 2, 16, "", "%SystemRoot%\\System32\\VBoxService.exe"),
        ),
        apps=(
            App(
                "Oracle VM VirtualBox Guest Additions",
                "Oracle VM VirtualBox Guest Additions 5.2.44",
                "5.2.44.139111",
                "Oracle Corporation",
                "C:\\Program Files\\Oracle\\VirtualBox Guest Additions\\",
                "VBoxTray.exe",
            ),
            App("WinRAR archiver", "WinRAR 5.50 (32-bit)", "5.50.0", "win.rar GmbH"),
        ),
        foreign=("virtualbox",),
    ),
    WindowsGuest(
        name="win7",
        product_name="Windows 7 Professional",
        version=(6, 1),
        current_version="6.1",
        build="7601",
        current_build="7601",
        edition_id="Professional",
        installation_type="Client",
        csd_version="Service Pack 1",
        arch="x86_64",
        hostname="win7-vmw",
        firmware="bios",
        disk_format="qcow2",
        osinfo="win7",
        system_reserved=True,
        services=(
            _drv("atapi", "SCSI miniport"),
            _drv("intelide", "System Bus Extender"),
            _drv("pciide", "Boot Bus Extender"),
            _drv("msahci", "SCSI miniport"),
            _drv("LSI_SAS", "SCSI miniport", present=False),
            _drv("pvscsi", "SCSI miniport"),
            *_VMWARE,
        ),
        apps=(
            _vmware_tools("10.3.26.22085142"),
            App(
                "Mozilla Firefox 52.9.0 ESR (x64 en-US)",
                "Mozilla Firefox 52.9.0 ESR (x64 en-US)",
                "52.9.0",
                "Mozilla",
            ),
        ),
        foreign=("vmware",),
    ),
    WindowsGuest(
        name="win2008r2",
        product_name="Windows Server 2008 R2 Standard",
        version=(6, 1),
        current_version="6.1",
        build="7601",
        current_build="7601",
        edition_id="ServerStandard",
        installation_type="Server",
        csd_version="Service Pack 1",
        arch="x86_64",
        hostname="w2k8r2-xen",
        firmware="bios",
        disk_format="raw",
        osinfo="win2k8r2",
        control_set=2,
        services=(
            _drv("atapi", "SCSI miniport"),
            _drv("intelide", "System Bus Extender"),
            _drv("pciide", "Boot Bus Extender"),
            _drv("LSI_SAS", "SCSI miniport"),
            _drv("LSI_SCSI", "SCSI miniport", present=False),
            _drv("xenbus", "System Bus Extender"),
            _drv("xenvbd", "SCSI miniport"),
            Service(
                "xensvc", 2, 16, "", '"C:\\Program Files\\Citrix\\XenTools\\XenGuestAgent.exe"'
            ),
        ),
        apps=(
            App(
                "Citrix XenServer Windows Management Agent",
                "Citrix XenServer Windows Management Agent",
                "7.2.0.1555",
                "Citrix Systems, Inc.",
                "C:\\Program Files\\Citrix\\XenTools\\",
                "XenGuestAgent.exe",
            ),
        ),
        foreign=("xen",),
    ),
    WindowsGuest(
        name="win10",
        product_name="Windows 10 Pro",
        version=(10, 0),
        current_version="6.3",
        build="19045",
        current_build="19045",
        display_version="22H2",
        edition_id="Professional",
        installation_type="Client",
        arch="x86_64",
        hostname="win10-vmw",
        firmware="bios",
        disk_format="qcow2",
        osinfo="win10",
        hiberboot_enabled=0,
        services=(
            *_WIN10_DRIVERS,
            _drv("LSI_SAS", "SCSI miniport"),
            _drv("iaStorAC", "SCSI miniport", present=False),
            Service("pvscsi", 0, 1, "SCSI miniport", "\\SystemRoot\\System32\\drivers\\pvscsi.sys"),
            *_VMWARE,
        ),
        apps=(
            _vmware_tools("12.3.5.22544099"),
            App("Notepad++", "Notepad++ (32-bit x86)", "8.6.2", "Notepad++ Team", wow64=True),
        ),
        foreign=("vmware",),
    ),
    WindowsGuest(
        name="win2022",
        product_name="Windows Server 2022 Standard",
        version=(10, 0),
        current_version="6.3",
        build="20348",
        current_build="20348",
        display_version="21H2",
        edition_id="ServerStandard",
        installation_type="Server",
        arch="x86_64",
        hostname="w2022-vmw",
        firmware="bios",
        disk_format="qcow2",
        osinfo="win2k22",
        hiberboot_enabled=0,
        services=(
            *_WIN10_DRIVERS,
            _drv("LSI_SAS", "SCSI miniport"),
            _drv("pvscsi", "SCSI miniport"),
            _drv("iaStorAVC", "SCSI miniport", present=False),
            *_VMWARE,
        ),
        apps=(_vmware_tools("12.3.5.22544099"),),
        foreign=("vmware",),
    ),
    WindowsGuest(
        name="win11",
        product_name="Windows 10 Pro",
        version=(10, 0),
        current_version="6.3",
        build="22631",
        current_build="22631",
        display_version="23H2",
        edition_id="Professional",
        installation_type="Client",
        arch="x86_64",
        hostname="win11-prl",
        firmware="uefi",
        disk_format="qcow2",
        osinfo="win10",
        # Fast Startup on, but the last shutdown was a full one: the header is zeroed.
        hiberboot_enabled=1,
        hiberfil_header=b"\0" * 4,
        services=(
            *_WIN10_DRIVERS,
            _drv("LSI_SAS", "SCSI miniport", present=False),
            _drv("prl_tg", "System Bus Extender", start=1),
            Service("prl_fs", 1, 2, "Network", "System32\\drivers\\prl_fs.sys"),
            Service(
                "Parallels Tools Service",
                2,
                16,
                "",
                '"C:\\Program Files\\Parallels\\Parallels Tools\\Services\\prl_tools_service.exe"',
            ),
        ),
        apps=(
            App(
                "{" + str(uuid.uuid5(_NS, "parallels-tools")).upper() + "}",
                "Parallels Tools",
                "19.1.0.54729",
                "Parallels International GmbH",
                "C:\\Program Files\\Parallels\\Parallels Tools\\",
                "prl_cc.exe",
            ),
            App(
                "Microsoft Edge",
                "Microsoft Edge",
                "120.0.2210.91",
                "Microsoft Corporation",
                wow64=True,
            ),
        ),
        foreign=("parallels",),
    ),
    WindowsGuest(
        name="win10-uefi",
        product_name="Windows 10 Enterprise",
        version=(10, 0),
        current_version="6.3",
        build="19045",
        current_build="19045",
        display_version="22H2",
        edition_id="Enterprise",
        installation_type="Client",
        arch="x86_64",
        hostname="win10-efi",
        firmware="uefi",
        disk_format="raw",
        osinfo="win10",
        hiberboot_enabled=0,
        services=(*_WIN10_DRIVERS, _drv("iaStorVD", "SCSI miniport", present=False)),
        apps=(App("Google Chrome", "Google Chrome", "120.0.6099.130", "Google LLC"),),
    ),
    WindowsGuest(
        name="win10-hibernated",
        product_name="Windows 10 Home",
        version=(10, 0),
        current_version="6.3",
        build="19044",
        current_build="19044",
        display_version="21H2",
        edition_id="Core",
        installation_type="Client",
        arch="x86_64",
        hostname="win10-hib",
        firmware="bios",
        disk_format="raw",
        osinfo="win10",
        # Hibernated with "shutdown /h" while Fast Startup was off.
        hiberboot_enabled=0,
        hiberfil_header=b"HIBR",
        services=(*_WIN10_DRIVERS, _drv("LSI_SAS", "SCSI miniport", present=False)),
    ),
)


# ---------------------------------------------------------------------------------------------
# Registry contents

Tree = dict[str, dict[str, RegValue]]


def _control_set(g: WindowsGuest, hostname: str, extra: tuple[Service, ...] = ()) -> Tree:
    tree: Tree = {
        "Control\\ComputerName\\ComputerName": {"ComputerName": hostname.upper()},
        f"Control\\Class\\{_SCSI_CLASS}": {"": "SCSI and RAID controllers", "Class": "SCSIAdapter"},
        f"Control\\Class\\{_HDC_CLASS}": {"": "IDE ATA/ATAPI controllers", "Class": "hdc"},
        f"Control\\Class\\{_NET_CLASS}": {"": "Network adapters", "Class": "Net"},
        "Control\\Session Manager\\Environment": {
            "PROCESSOR_ARCHITECTURE": "AMD64" if g.arch == "x86_64" else "x86",
            "windir": ExpandSz("%SystemRoot%"),
            "Path": ExpandSz("%SystemRoot%\\system32;%SystemRoot%"),
        },
    }
    if g.hiberboot_enabled is not None:
        tree["Control\\Session Manager\\Power"] = {"HiberbootEnabled": g.hiberboot_enabled}
    if g.pre_win8:
        # Before Windows 8 this maps boot-critical devices to their drivers; a converter adds
        # the virtio disk controller here, so the key must exist.
        cdd = "Control\\CriticalDeviceDatabase"
        tree[cdd] = {}
        tree[f"{cdd}\\primary_ide_channel"] = {"Service": "atapi", "ClassGUID": _HDC_CLASS}
        tree[f"{cdd}\\pci#ven_8086&dev_7010"] = {"Service": "intelide", "ClassGUID": _HDC_CLASS}
    for s in (*g.services, *extra):
        values: dict[str, RegValue] = {
            "Start": s.start,
            "Type": s.type,
            "ErrorControl": 1,
            "ImagePath": ExpandSz(s.image_path),
            "DisplayName": s.name,
        }
        if s.group:
            values["Group"] = s.group
        tree[f"Services\\{s.name}"] = values
    tree["Services\\Tcpip"] = {
        "Start": 1,
        "Type": 1,
        "ErrorControl": 1,
        "Group": "PNP_TDI",
        "ImagePath": ExpandSz("System32\\drivers\\tcpip.sys"),
    }
    tree["Services\\Tcpip\\Parameters"] = {
        "Hostname": hostname,
        "NV Hostname": hostname,
        "Domain": "",
    }
    return tree


def system_tree(g: WindowsGuest) -> Tree:
    current = g.control_set
    # A stale set the guest no longer boots from: an inspector that reads ControlSet001
    # instead of following Select\Current reports the old hostname and a driver that is gone.
    stale = {1: 2, 2: 1}[current]
    tree: Tree = {
        "Select": {"Current": current, "Default": current, "Failed": 0, "LastKnownGood": stale},
    }
    sets = {current: _control_set(g, g.hostname)}
    if current != 1:
        sets[stale] = _control_set(
            g, f"{g.hostname}-old", extra=(_drv("amdide", "System Bus Extender"),)
        )
    for n, cs in sorted(sets.items()):
        for path, values in cs.items():
            tree[f"ControlSet{n:03d}\\{path}"] = values

    volume = "\\??\\Volume{" + str(g.guid("volume")) + "}"
    if g.firmware == "uefi":
        blob = b"DMIO:ID:" + g.guid("root").bytes_le
    else:
        blob = struct.pack("<IQ", g.disk_signature, _root_offset(g))
    tree["MountedDevices"] = {"\\DosDevices\\C:": blob, volume: blob}
    if not g.pre_win8:
        for key in ("DriverInfFiles", "DeviceIds", "DriverPackages"):
            tree[f"DriverDatabase\\{key}"] = {}
    tree["Setup"] = {"SystemSetupInProgress": 0, "SetupType": 0}
    return tree


def software_tree(g: WindowsGuest) -> Tree:
    drive_root = "C:" + g.systemroot.replace("/", "\\")
    nt: dict[str, RegValue] = {
        "ProductName": g.product_name,
        "CurrentVersion": g.current_version,
        "CurrentBuild": g.current_build,
        "CurrentBuildNumber": g.build,
        "CurrentType": "Multiprocessor Free",
        "SystemRoot": drive_root,
        "PathName": drive_root,
        "RegisteredOwner": "Test",
        "InstallDate": 1_700_000_000,
    }
    if g.version >= (10, 0):
        nt["CurrentMajorVersionNumber"] = g.version[0]
        nt["CurrentMinorVersionNumber"] = g.version[1]
        nt["UBR"] = 1000
    optional = {
        "EditionID": g.edition_id,
        "InstallationType": g.installation_type,
        "CSDVersion": g.csd_version,
        "DisplayVersion": g.display_version,
    }
    nt.update({k: v for k, v in optional.items() if v is not None})

    cv: dict[str, RegValue] = {
        "DevicePath": ExpandSz("%SystemRoot%\\inf"),
        "ProgramFilesDir": "C:\\Program Files",
        "CommonFilesDir": "C:\\Program Files\\Common Files",
    }
    if g.arch == "x86_64":
        cv["ProgramFilesDir (x86)"] = "C:\\Program Files (x86)"
        cv["ProgramW6432Dir"] = "C:\\Program Files"

    tree: Tree = {
        "Microsoft\\Windows NT\\CurrentVersion": nt,
        "Microsoft\\Windows NT\\CurrentVersion\\Winlogon": {
            "Shell": "explorer.exe",
            "Userinit": f"{drive_root}\\system32\\userinit.exe,",
        },
        "Microsoft\\Windows\\CurrentVersion": cv,
        "Microsoft\\Windows\\CurrentVersion\\Run": {},
        "Microsoft\\Windows\\CurrentVersion\\RunOnce": {},
        "Microsoft\\Windows\\CurrentVersion\\Uninstall": {},
    }
    for app in g.apps:
        prefix = "WOW6432Node\\" if app.wow64 else ""
        values: dict[str, RegValue] = {
            "DisplayName": app.display_name,
            "DisplayVersion": app.version,
            "Publisher": app.publisher,
            "UninstallString": f"MsiExec.exe /X{app.key}",
        }
        if app.install_dir:
            values["InstallLocation"] = app.install_dir
        tree[f"{prefix}Microsoft\\Windows\\CurrentVersion\\Uninstall\\{app.key}"] = values
    if "vmware" in g.foreign:
        tools = '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe" -n vmusr'
        tree["Microsoft\\Windows\\CurrentVersion\\Run"] = {"VMware User Process": tools}
    return tree


# ---------------------------------------------------------------------------------------------
# Files

_MACHINE = {"i386": 0x014C, "x86_64": 0x8664}
SUBSYSTEM_NATIVE, SUBSYSTEM_GUI, SUBSYSTEM_CONSOLE, SUBSYSTEM_EFI_APP = 1, 2, 3, 10


def pe_image(arch: str, subsystem: int) -> bytes:
    """A 1 KiB PE image with one section holding `ret`: enough for file(1) to name its type.

    libguestfs decides a Windows guest's architecture by running file(1) on cmd.exe: "PE32
    executable" means i386 and "PE32+ executable" means x86_64.
    """
    plus = arch == "x86_64"
    dos = bytearray(0x80)
    # The values a linker writes for the standard DOS stub; e_lfanew (0x3C) locates "PE\0\0".
    struct.pack_into("<2sHHHHHHHH", dos, 0, b"MZ", 0x90, 3, 0, 4, 0, 0xFFFF, 0, 0xB8)
    struct.pack_into("<H", dos, 0x18, 0x40)
    struct.pack_into("<I", dos, 0x3C, len(dos))
    opt_size = 0xF0 if plus else 0xE0
    executable_image, large_address_aware, machine_32bit = 0x0002, 0x0020, 0x0100
    characteristics = executable_image | (large_address_aware if plus else machine_32bit)
    coff = b"PE\0\0" + struct.pack(
        "<HHIIIHH", _MACHINE[arch], 1, 0, 0, 0, opt_size, characteristics
    )
    code_rva, align_file = 0x1000, 0x200
    # Magic, linker version, code/data sizes, entry point, base of code (and of data in PE32),
    # image base: the fields whose widths differ between PE32 and PE32+.
    if plus:
        opt = struct.pack(
            "<HBBIIIIIQ", 0x20B, 14, 0, align_file, 0, 0, code_rva, code_rva, 0x140000000
        )
    else:
        opt = struct.pack(
            "<HBBIIIIIII", 0x10B, 14, 0, align_file, 0, 0, code_rva, code_rva, 0, 0x400000
        )
    opt += struct.pack(
        "<IIHHHHHHIIIIHH",
        0x1000, align_file,  # section and file alignment
        6, 0, 6, 0, 6, 0,  # OS, image and subsystem versions: Vista's 6.0
        0, 0x2000, align_file, 0,  # Win32VersionValue, image size, headers size, checksum
        subsystem,
        0x8140,  # DllCharacteristics: dynamic base, NX compatible, terminal server aware
    )  # fmt: skip
    word = "Q" if plus else "I"
    # Stack and heap reserve/commit, loader flags, number of data directories.
    opt += struct.pack(f"<{word * 4}II", 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    opt += bytes(16 * 8)  # empty data directories
    assert len(opt) == opt_size
    text = struct.pack(
        "<8sIIIIIIHHI", b".text", 1, code_rva, align_file, align_file, 0, 0, 0, 0, 0x60000020
    )
    headers = (bytes(dos) + coff + opt + text).ljust(align_file, b"\0")
    return headers + b"\xc3".ljust(align_file, b"\0")


def service_file(g: WindowsGuest, image_path: str) -> str | None:
    """Where a service's ImagePath points on the volume, or None if it is not on C:."""
    if image_path.startswith('"'):
        path = image_path.split('"', 2)[1]
    else:
        path = image_path.split(" ", 1)[0]
    path = path.replace("\\", "/")
    lowered = path.lower()
    for prefix in ("%systemroot%/", "/systemroot/"):
        if lowered.startswith(prefix):
            return f"{g.systemroot}/{path[len(prefix) :]}"
    if lowered.startswith("c:/"):
        return path[2:]
    if lowered.startswith("system32/"):
        return f"{g.systemroot}/{path}"
    return None


Files = dict[str, bytes | None]  # path -> contents; None makes a directory


def root_files(g: WindowsGuest, hives: dict[str, bytes]) -> Files:
    sr = g.systemroot
    sys32 = f"{sr}/system32" if g.version[0] < 6 else f"{sr}/System32"
    config = f"{sys32}/config"
    files: Files = {
        "/System Volume Information": None,
        "/Program Files/Common Files": None,
        f"{sr}/Temp": None,
        f"{sr}/inf": None,
        f"{sys32}/drivers/etc": None,
        f"{sr}/explorer.exe": pe_image(g.arch, SUBSYSTEM_GUI),
        f"{sys32}/cmd.exe": pe_image(g.arch, SUBSYSTEM_CONSOLE),
        f"{sys32}/ntoskrnl.exe": pe_image(g.arch, SUBSYSTEM_NATIVE),
        f"{sys32}/hal.dll": pe_image(g.arch, SUBSYSTEM_NATIVE),
    }
    # XP names its hives in lower case; inspection must find them regardless.
    for name, data in hives.items():
        files[f"{config}/{name.lower() if g.version[0] < 6 else name}"] = data
    if g.arch == "x86_64":
        files["/Program Files (x86)"] = None
        files[f"{sr}/SysWOW64/cmd.exe"] = pe_image("i386", SUBSYSTEM_CONSOLE)
    if g.version[0] < 6:
        files["/Documents and Settings/All Users"] = None
        arc = "multi(0)disk(0)rdisk(0)partition(1)\\WINDOWS"
        files["/boot.ini"] = (
            f"[boot loader]\r\ntimeout=30\r\ndefault={arc}\r\n[operating systems]\r\n"
            f'{arc}="Microsoft Windows XP Professional" /noexecute=optin /fastdetect\r\n'
        ).encode()
        files["/ntldr"] = b"NTLDR stub"
        files["/NTDETECT.COM"] = b"NTDETECT stub"
    else:
        files["/Users/Public"] = None
        files["/ProgramData"] = None
        if g.firmware == "bios" and not g.system_reserved:
            files.update(_bios_boot_files())
    for s in g.services:
        target = service_file(g, s.image_path)
        if target and s.file_present:
            subsystem = SUBSYSTEM_CONSOLE if s.type == 16 else SUBSYSTEM_NATIVE
            files[target] = pe_image(g.arch, subsystem)
    for app in g.apps:
        if app.install_dir and app.exe:
            folder = app.install_dir.rstrip("\\")[2:].replace("\\", "/")
            files[f"{folder}/{app.exe}"] = pe_image(g.arch, SUBSYSTEM_GUI)
    if g.hiberfil_header is not None:
        # ntfs-3g reads a 4 KiB header: a shorter file makes it mount the volume read-only.
        files["/hiberfil.sys"] = g.hiberfil_header.ljust(64 * 1024, b"\0")
    return _fold_case(files)


def _fold_case(files: Files) -> Files:
    """Spell every directory as it was first spelled: Windows paths ignore case but ntfs-3g
    does not, and XP's ImagePath says "system32\\DRIVERS" for the folder named "drivers"."""
    seen: dict[str, str] = {}
    folded: Files = {}
    for path, data in files.items():
        parts = path.strip("/").split("/")
        for i in range(len(parts) if data is None else len(parts) - 1):
            prefix = "/".join(parts[: i + 1]).casefold()
            parts[i] = seen.setdefault(prefix, "/".join(parts[: i + 1])).rsplit("/", 1)[-1]
        folded["/" + "/".join(parts)] = data
    return folded


def _bios_boot_files() -> Files:
    return {"/bootmgr": b"BOOTMGR stub", "/Boot/BCD": hive.empty_hive("NewStoreRoot")}


def _esp_files() -> Files:
    efi = pe_image("x86_64", SUBSYSTEM_EFI_APP)
    return {
        "/EFI/Microsoft/Boot/bootmgfw.efi": efi,
        "/EFI/Microsoft/Boot/BCD": hive.empty_hive("NewStoreRoot"),
        "/EFI/Boot/bootx64.efi": efi,
    }


# ---------------------------------------------------------------------------------------------
# Building


def build_all() -> dict[str, BuiltGuest]:
    """Every guest of `GUESTS`, built once (one appliance launch for all) and cached."""
    # Inspection finds C: by disk ID or partition GUID across every disk on the handle, so
    # guests inspected together must not share them.
    if len({g.disk_signature for g in GUESTS}) != len(GUESTS):
        raise RuntimeError("two Windows test guests share an MBR disk ID; rename one")
    version = source_version(__file__, hive.__file__, regvalue.__file__)
    root = cached_dir("windows-guests", version, _build_images)
    return {g.name: _built(g, root / g.disk_file) for g in GUESTS}


def _built(g: WindowsGuest, disk: Path) -> BuiltGuest:
    expected = ExpectedOS(
        type="windows",
        distro="windows",
        product_name=g.product_name,
        major_version=g.version[0],
        minor_version=g.version[1],
        arch=g.arch,
        hostname=g.hostname,
        package_format="unknown",
        package_manager="unknown",
        firmware=g.firmware,
        mountpoints={"/": "ntfs"},
        applications=tuple(a.display_name for a in g.apps),
        foreign_software=g.foreign,
        windows=ExpectedWindows(
            systemroot=g.systemroot,
            build=g.build,
            current_control_set=f"ControlSet{g.control_set:03d}",
            boot_drivers=g.boot_drivers,
            hibernated=g.hibernated,
            fast_startup=g.fast_startup,
        ),
    )
    return BuiltGuest(name=g.name, disks=(disk,), oses=(expected,))


def _build_images(outdir: Path) -> None:
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    # /dev/kvm can exist and still fail to run the appliance (nested virtualisation); TCG
    # always works. A machine with working KVM sets LIBGUESTFS_BACKEND_SETTINGS itself.
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    h = guestfs.GuestFS(python_return_dict=True)
    try:
        for g in GUESTS:
            path = str(outdir / g.disk_file)
            h.disk_create(path, g.disk_format, DISK_SIZE)
            h.add_drive_opts(path, format=g.disk_format)
        h.launch()
        with tempfile.TemporaryDirectory() as tmp:
            for g, device in zip(GUESTS, h.list_devices(), strict=True):
                _install(h, device, g, Path(tmp) / g.name)
        h.shutdown()
    finally:
        h.close()


def _install(h: guestfs.GuestFS, device: str, g: WindowsGuest, workdir: Path) -> None:
    parts = _layout(g)
    for offset, table in partition_table(g):
        h.pwrite_device(device, table, offset)
    h.blockdev_rereadpt(device)
    hives = _hives(g, workdir)
    for n, p in enumerate(parts, start=1):
        if p.fs is None:
            continue
        partition = f"{device}{n}"
        if p.label:
            h.mkfs(p.fs, partition, label=p.label)
        else:
            h.mkfs(p.fs, partition)
        files = {"esp": _esp_files, "boot": _bios_boot_files}.get(p.role)
        content = files() if files else root_files(g, hives)
        h.mount(partition, "/")
        for path, data in content.items():
            if data is None:
                h.mkdir_p(path)
            else:
                h.mkdir_p(path.rsplit("/", 1)[0] or "/")
                h.write(path, data)
        h.umount_all()


def _hives(g: WindowsGuest, workdir: Path) -> dict[str, bytes]:
    """The SYSTEM and SOFTWARE hive files, made on the host: hivex writes only to local files."""
    workdir.mkdir(parents=True)
    hives: dict[str, bytes] = {}
    for name, tree in (("SYSTEM", system_tree(g)), ("SOFTWARE", software_tree(g))):
        path = workdir / name
        hive.build_hive(path, tree)
        hives[name] = path.read_bytes()
    return hives
