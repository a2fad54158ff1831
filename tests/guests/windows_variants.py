"""Phony Windows guests derived from tests/guests/windows.py for the first-boot, foreign-service,
refusal and UEFI tests: each is a qcow2 overlay on a built guest, edited in one appliance launch.

- win10-vmw-static: win10 (VMware, BIOS) plus a vmxnet3 adapter with a static IPv4 setup, a
  DHCP adapter and a WAN miniport; VMware's storage, NSX and mouse filters in the class filter
  lists; vmhgfs in the network provider order; Symantec Endpoint Protection; a Group Policy that
  denies device installation; and a second disk holding a BitLocker volume and a dynamic-disk
  (LDM) partition.
- win10-uefi-xen: win10-uefi without the ESP's fallback loader, with XenServer PV drivers
  (xenfilt as a class filter of the IDE, SCSI and system device classes) and their MSI.
- win11-faststartup: win11 shut down with Fast Startup on (hiberfil.sys holds an image).
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import guestfs

from tests.guests import hive, windows
from tests.guests.cache import cached_dir, source_version
from tests.guests.hive import ExpandSz, RegValue
from tests.guests.windows import GUESTS, WindowsGuest

Tree = dict[str, dict[str, RegValue]]
_NS = uuid.UUID("1b7c2a55-3f0e-4a51-9a37-6a0f7d8e2b41")

NET_CLASS = "{4D36E972-E325-11CE-BFC1-08002BE10318}"
DISK_CLASS = "{4D36E967-E325-11CE-BFC1-08002BE10318}"
MOUSE_CLASS = "{4D36E96F-E325-11CE-BFC1-08002BE10318}"
HDC_CLASS = "{4D36E96A-E325-11CE-BFC1-08002BE10318}"
SCSI_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
SYSTEM_CLASS = "{4D36E97D-E325-11CE-BFC1-08002BE10318}"

STATIC_GUID = "{" + str(uuid.uuid5(_NS, "vmxnet3")).upper() + "}"
DHCP_GUID = "{" + str(uuid.uuid5(_NS, "e1000")).upper() + "}"
WAN_GUID = "{" + str(uuid.uuid5(_NS, "wan")).upper() + "}"
XEN_PRODUCT = "{" + str(uuid.uuid5(_NS, "xen-tools")).upper() + "}"
BUS = "Boot Bus Extender"
DATA_DISK = "data-bitlocker-ldm.img"
DATA_DISK_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True)
class Variant:
    name: str
    base: str  # a guest of windows.GUESTS
    system: Tree = field(default_factory=dict)  # keys relative to the current control set
    software: Tree = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # on the system volume
    esp_remove: tuple[str, ...] = ()
    data_disk: bool = False

    @property
    def base_guest(self) -> WindowsGuest:
        return next(g for g in GUESTS if g.name == self.base)


def _service(start: int, kind: int, image: str, group: str = "") -> dict[str, RegValue]:
    values: dict[str, RegValue] = {
        "Start": start,
        "Type": kind,
        "ErrorControl": 1,
        "ImagePath": ExpandSz(image),
    }
    if group:
        values["Group"] = group
    return values


VARIANTS: tuple[Variant, ...] = (
    Variant(
        name="win10-vmw-static",
        base="win10",
        system={
            rf"Control\Class\{NET_CLASS}\0007": {
                "NetCfgInstanceId": STATIC_GUID,
                "DriverDesc": "vmxnet3 Ethernet Adapter",
                "ComponentId": "pci\\ven_15ad&dev_07b0",
                "Characteristics": 0x84,
            },
            rf"Control\Class\{NET_CLASS}\0008": {
                "NetCfgInstanceId": WAN_GUID,
                "DriverDesc": "WAN Miniport (IP)",
                "ComponentId": "ms_ndiswanip",
                "Characteristics": 0x29,
            },
            rf"Services\Tcpip\Parameters\Interfaces\{STATIC_GUID}": {
                "EnableDHCP": 0,
                "IPAddress": ["192.168.50.20", "10.20.0.5"],
                "SubnetMask": ["255.255.255.0", "255.255.0.0"],
                "DefaultGateway": ["192.168.50.1"],
                "NameServer": "192.168.50.2,192.168.50.3",
            },
            rf"Services\Tcpip\Parameters\Interfaces\{DHCP_GUID}": {
                "EnableDHCP": 1,
                "DhcpIPAddress": "10.0.2.15",
            },
            r"Services\vmStorFl": _service(0, 1, r"System32\drivers\vmStorFl.sys", "Filter"),
            r"Services\vsepflt": _service(1, 2, r"System32\drivers\vsepflt.sys", "FSFilter"),
            r"Services\vmmouse": _service(3, 1, r"System32\drivers\vmmouse.sys"),
            r"Services\SepMasterService": _service(
                2, 16, r'"C:\Program Files\Symantec\Symantec Endpoint Protection\ccSvcHst.exe"'
            ),
            rf"Control\Class\{DISK_CLASS}": {"Class": "DiskDrive", "UpperFilters": ["vmStorFl"]},
            rf"Control\Class\{MOUSE_CLASS}": {
                "Class": "Mouse",
                "UpperFilters": ["vmmouse", "mouclass"],
            },
            r"Control\NetworkProvider\Order": {
                "ProviderOrder": "RDPNP,LanmanWorkstation,webclient,vmhgfs",
            },
        },
        software={
            r"Policies\Microsoft\Windows\DeviceInstall\Restrictions": {"DenyUnspecified": 1},
        },
        data_disk=True,
    ),
    Variant(
        name="win10-uefi-xen",
        base="win10-uefi",
        system={
            r"Services\xenfilt": _service(
                0, 1, r"System32\drivers\xenfilt.sys", "Boot Bus Extender"
            ),
            r"Services\xenbus": _service(0, 1, r"System32\drivers\xenbus.sys", "Boot Bus Extender"),
            r"Services\xenvbd": _service(0, 1, r"System32\drivers\xenvbd.sys", "SCSI miniport"),
            r"Services\xeniface": _service(3, 1, r"System32\drivers\xeniface.sys"),
            rf"Control\Class\{HDC_CLASS}": {"UpperFilters": ["xenfilt"]},
            rf"Control\Class\{SYSTEM_CLASS}": {"Class": "System", "UpperFilters": ["xenfilt"]},
            rf"Control\Class\{SCSI_CLASS}": {"LowerFilters": ["xenfilt", "iaStorF"]},
        },
        software={
            rf"Microsoft\Windows\CurrentVersion\Uninstall\{XEN_PRODUCT}": {
                "DisplayName": "Citrix XenServer Windows Management Agent",
                "DisplayVersion": "7.2.0.1555",
                "Publisher": "Citrix Systems, Inc.",
                "UninstallString": f"MsiExec.exe /X{XEN_PRODUCT}",
            },
        },
        esp_remove=("/EFI/Boot",),
    ),
    Variant(
        name="win11-faststartup",
        base="win11",
        files={"/hiberfil.sys": b"HIBR".ljust(64 * 1024, b"\0")},
    ),
)


@dataclass(frozen=True)
class BuiltVariant:
    name: str
    disks: tuple[Path, ...]  # the system disk first
    base: WindowsGuest


def build_variants() -> dict[str, BuiltVariant]:
    built = windows.build_all()
    bases = {name: b.disks[0] for name, b in built.items()}
    # The overlays name their backing files: a rebuilt base (a new cache folder) gets new
    # variants.
    base_dir = next(iter(bases.values())).parent.name
    version = f"{source_version(__file__)}-{base_dir.rsplit('-', 1)[-1]}"
    root = cached_dir("windows-variants", version, lambda d: _build(d, bases))
    return {
        v.name: BuiltVariant(
            v.name,
            (root / f"{v.name}.qcow2", *((root / DATA_DISK,) if v.data_disk else ())),
            v.base_guest,
        )
        for v in VARIANTS
    }


def data_disk_image() -> bytes:
    """An MBR disk with a BitLocker volume (as blkid knows one) and an LDM partition."""
    sector = 512
    bl_start, bl_count = 2048, 4096
    ldm_start, ldm_count = 8192, 4096
    entries = [
        windows._mbr_entry(0, 0x07, bl_start, bl_count),
        windows._mbr_entry(0, 0x42, ldm_start, ldm_count),
    ]
    image = bytearray(DATA_DISK_SIZE)
    image[:sector] = windows._mbr(0x5EC0DE42, entries)
    boot = bytearray(sector)
    boot[0:3] = b"\xeb\x58\x90"
    boot[3:11] = b"-FVE-FS-"
    struct.pack_into("<HB", boot, 11, sector, 8)
    boot[71:82] = b"NO NAME    "
    boot[160:176] = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001").bytes_le
    metadata = (0x10000, 0x20000, 0x30000)
    struct.pack_into("<QQQ", boot, 176, *metadata)
    boot[510:512] = b"\x55\xaa"
    base = bl_start * sector
    image[base : base + sector] = boot
    for offset in metadata:
        image[base + offset : base + offset + 12] = b"-FVE-FS-" + struct.pack("<HH", 0x40, 2)
    return bytes(image)


def _build(outdir: Path, bases: dict[str, Path]) -> None:
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    (outdir / DATA_DISK).write_bytes(data_disk_image())
    for v in VARIANTS:
        base = v.base_guest
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(bases[v.base]),
             "-F", base.disk_format, str(outdir / f"{v.name}.qcow2")],
            check=True,
        )  # fmt: skip
    h = guestfs.GuestFS(python_return_dict=True)
    try:
        for v in VARIANTS:
            h.add_drive_opts(str(outdir / f"{v.name}.qcow2"), format="qcow2")
        h.launch()
        with tempfile.TemporaryDirectory() as tmp:
            for v, device in zip(VARIANTS, h.list_devices(), strict=True):
                _edit(h, device, v, Path(tmp) / v.name)
        h.shutdown()
    finally:
        h.close()


def _edit(h: guestfs.GuestFS, device: str, v: Variant, work: Path) -> None:
    base = v.base_guest
    work.mkdir()
    if v.esp_remove:
        h.mount(f"{device}1", "/")
        for path in v.esp_remove:
            h.rm_rf(path)
        h.umount_all()
    h.mount(f"{device}{base.root_partition}", "/")
    config = f"{base.systemroot}/{'system32' if base.version[0] < 6 else 'System32'}/config"
    ccs = f"ControlSet{base.control_set:03d}"
    for name, tree in (("SYSTEM", {rf"{ccs}\{k}": v for k, v in v.system.items()}),
                       ("SOFTWARE", v.software)):  # fmt: skip
        if not tree:
            continue
        remote = h.case_sensitive_path(f"{config}/{name}")
        local = work / name
        h.download(remote, str(local))
        with hive.editing(local) as handle:
            hive.write_tree(handle, tree)
        h.upload(str(local), remote)
    for path, data in v.files.items():
        h.write(path, data)
    h.umount_all()
