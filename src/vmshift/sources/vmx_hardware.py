"""The hardware a .vmx file describes: device slots, CPUs, firmware, generation id, NICs.

Each function reads one setting the way VMware (and virt-v2v, whose `--print-source` users
compare against) reads it: defaults are VMware's, not "unknown". Values a source can read past
are reported in `warnings` rather than refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmshift.formats.genid import genid_from_vmware
from vmshift.formats.vmx import VmxFile, parse_int
from vmshift.model.vm import Controller, CpuTopology, Firmware, Nic

DEFAULT_NIC_MODEL = "vlance"

# Disk order: by controller kind in this order, then bus, then unit.
CONTROLLERS = {
    "scsi": Controller.SCSI,
    "sata": Controller.SATA,
    "ide": Controller.IDE,
    "nvme": Controller.NVME,
}
_DEVICE_KEY = re.compile(r"^(scsi|sata|ide|nvme)(\d+):(\d+)\.present$")
_INDEXED_KEY = re.compile(r"^(ethernet|floppy)(\d+)\.present$")
_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
DISK_TYPES = frozenset({"", "disk", "scsi-harddisk", "ata-harddisk", "plaindisk", "rawdisk"})


@dataclass(frozen=True)
class Slot:
    kind: str
    bus: int
    unit: int

    @property
    def controller(self) -> Controller:
        return CONTROLLERS[self.kind]

    @property
    def label(self) -> str:
        return f"{self.kind}{self.bus}:{self.unit}"

    def sort_key(self) -> tuple[int, int, int]:
        return (list(CONTROLLERS).index(self.kind), self.bus, self.unit)


def device_slots(vmx: VmxFile) -> list[Slot]:
    """Present devices on present controllers, in disk order."""
    slots = []
    for key in vmx:
        match = _DEVICE_KEY.match(key)
        if match is None or not vmx.get_bool(key):
            continue
        kind, bus, unit = match.group(1), int(match.group(2)), int(match.group(3))
        # A device on a controller that is explicitly absent is not there for VMware either.
        if not vmx.get_bool(f"{kind}{bus}.present", True):
            continue
        slots.append(Slot(kind, bus, unit))
    return sorted(slots, key=Slot.sort_key)


def disk_slots(vmx: VmxFile) -> list[Slot]:
    return [
        s for s in device_slots(vmx) if vmx.get(f"{s.label}.devicetype", "").lower() in DISK_TYPES
    ]


def indexes(vmx: VmxFile, prefix: str) -> list[int]:
    found = []
    for key in vmx:
        match = _INDEXED_KEY.match(key)
        if match and match.group(1) == prefix and vmx.get_bool(key):
            found.append(int(match.group(2)))
    return sorted(found)


def topology(vmx: VmxFile, vcpus: int) -> CpuTopology | None:
    cores = vmx.get_int("cpuid.corespersocket")
    if cores is None or cores < 1 or vcpus % cores:
        return None
    return CpuTopology(sockets=vcpus // cores, cores=cores, threads=1)


def firmware(vmx: VmxFile, warnings: list[str]) -> Firmware:
    """VMware boots BIOS unless the VMX says `firmware = "efi"` (its only other value)."""
    value = vmx.get("firmware")
    if value is None or value.strip().lower() in ("", "bios"):
        return Firmware.BIOS
    if value.strip().lower() == "efi":
        return Firmware.UEFI
    warnings.append(f'{vmx.path}: unknown firmware = "{value}", assuming BIOS as VMware does')
    return Firmware.BIOS


def genid(vmx: VmxFile, warnings: list[str]) -> str | None:
    """vm.genid and vm.genidX, the generation id's low and high halves (both, or none)."""
    texts = {key: vmx.get(key) for key in ("vm.genid", "vm.genidX")}
    if all(text is None for text in texts.values()):
        return None
    halves = [parse_int(text) if text is not None else None for text in texts.values()]
    low, high = halves
    if low is None or high is None or not all(-(1 << 63) <= h < 1 << 64 for h in (low, high)):
        shown = ", ".join(f'{key} = "{text}"' if text is not None else f"no {key}"
                          for key, text in texts.items())  # fmt: skip
        warnings.append(f"{vmx.path}: {shown}: not a generation id; the guest will get a new one")
        return None
    return genid_from_vmware(low, high)


def nics(vmx: VmxFile) -> tuple[Nic, ...]:
    nics = []
    for n in indexes(vmx, "ethernet"):
        key = f"ethernet{n}"
        address_type = vmx.get(f"{key}.addresstype", "").lower()
        if address_type == "static":
            mac = vmx.get(f"{key}.address")
        elif address_type in ("generated", "vpx"):
            mac = vmx.get(f"{key}.generatedaddress")
        else:
            mac = vmx.get(f"{key}.address") or vmx.get(f"{key}.generatedaddress")
        connection = vmx.get(f"{key}.connectiontype", "").lower()
        # Workstation's "custom" connections name a vmnet; a NIC with no network name is
        # called by its own key, as virt-v2v does, so `--bridge ethernet0:br0` can map it.
        network = vmx.get(f"{key}.networkname") or (
            vmx.get(f"{key}.vnet") if connection == "custom" else None
        )
        model = vmx.get(f"{key}.virtualdev", DEFAULT_NIC_MODEL).lower()
        nics.append(
            Nic(
                mac=normalise_mac(mac),
                model=model,
                network=network or key,
                network_type="bridge" if connection == "bridged" else "network",
            )
        )
    return tuple(nics)


def extra(vmx: VmxFile) -> dict[str, str]:
    keys = {
        "vmware.uuid": "uuid.bios",
        "vmware.hw_version": "virtualhw.version",
    }
    return {name: value for name, key in keys.items() if (value := vmx.get(key))}


def normalise_mac(value: str | None) -> str | None:
    """Lower-case colon form, or None (let the target make one) if value is no MAC."""
    if not value:
        return None
    mac = value.strip().lower().replace("-", ":")
    return mac if _MAC.match(mac) else None
