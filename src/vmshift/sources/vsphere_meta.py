"""A vSphere VirtualMachine's configuration (pyvmomi objects) as vmshift's SourceVM pieces: the
same facts, in the same order and with the same names, as the VMX source reads from the .vmx.

Only attribute reads on the objects pyvmomi fetched: no calls to the server from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vmshift.formats.vmx import VmxEntry, VmxFile
from vmshift.model.vm import Controller, CpuTopology, Firmware, Nic, Removable
from vmshift.sources import vmx_hardware as hw

# Device class name (pyvmomi's vim.vm.device.*) -> (controller, model as the VMX names it).
CONTROLLERS: dict[str, tuple[Controller, str | None]] = {
    "ParaVirtualSCSIController": (Controller.SCSI, "pvscsi"),
    "VirtualLsiLogicController": (Controller.SCSI, "lsilogic"),
    "VirtualLsiLogicSASController": (Controller.SCSI, "lsisas1068"),
    "VirtualBusLogicController": (Controller.SCSI, "buslogic"),
    "VirtualAHCIController": (Controller.SATA, None),
    "VirtualIDEController": (Controller.IDE, None),
    "VirtualNVMEController": (Controller.NVME, None),
}
# The VMX source's disk order: by controller kind, then bus, then unit.
_ORDER = [Controller.SCSI, Controller.SATA, Controller.IDE, Controller.NVME]
NIC_MODELS = {
    "VirtualVmxnet3": "vmxnet3",
    "VirtualVmxnet2": "vmxnet2",
    "VirtualVmxnet": "vmxnet",
    "VirtualE1000": "e1000",
    "VirtualE1000e": "e1000e",
    "VirtualPCNet32": "vlance",
    "VirtualSriovEthernetCard": "sriov",
}


@dataclass(frozen=True)
class VsphereDisk:
    datastore: str  # LocalDS_0
    path: str  # the descriptor's path in the datastore: guest/guest.vmdk
    capacity: int  # bytes
    controller: Controller
    controller_model: str | None
    bus: int
    unit: int

    @property
    def flat_path(self) -> str:
        """The data file beside a flat descriptor: guest/guest-flat.vmdk."""
        stem = self.path.removesuffix(".vmdk")
        return f"{stem}-flat.vmdk"


def kind(device: Any) -> str:
    """pyvmomi's class name of a device, without its vim.vm.device. prefix."""
    return type(device).__name__.rsplit(".", 1)[-1]


def datastore_path(name: str) -> tuple[str, str]:
    """'[LocalDS_0] guest/guest.vmdk' -> ('LocalDS_0', 'guest/guest.vmdk')."""
    if not name.startswith("[") or "] " not in name:
        raise ValueError(f"not a datastore path: {name!r}")
    store, _, path = name[1:].partition("] ")
    return store, path


def disks(devices: list[Any]) -> list[VsphereDisk]:
    controllers = {d.key: d for d in devices if kind(d) in CONTROLLERS}
    found = []
    for device in devices:
        if kind(device) != "VirtualDisk":
            continue
        controller = controllers.get(device.controllerKey)
        ctl, model = CONTROLLERS[kind(controller)] if controller else (Controller.UNKNOWN, None)
        store, path = datastore_path(device.backing.fileName)
        capacity = device.capacityInBytes or (device.capacityInKB or 0) * 1024
        bus = controller.busNumber if controller is not None else 0
        found.append(VsphereDisk(store, path, capacity, ctl, model, bus, device.unitNumber or 0))
    return sorted(
        found,
        key=lambda d: (_ORDER.index(d.controller) if d.controller in _ORDER else 9, d.bus, d.unit),
    )


def removables(devices: list[Any]) -> tuple[Removable, ...]:
    controllers = {d.key: d for d in devices if kind(d) in CONTROLLERS}
    found = []
    for device in devices:
        if kind(device) not in ("VirtualCdrom", "VirtualFloppy"):
            continue
        controller = controllers.get(device.controllerKey)
        ctl = CONTROLLERS[kind(controller)][0] if controller else Controller.UNKNOWN
        bus = controller.busNumber if controller is not None else 0
        image = getattr(device.backing, "fileName", None) or None
        what = "cdrom" if kind(device) == "VirtualCdrom" else "floppy"
        found.append(Removable(what, ctl, bus, device.unitNumber or 0, image))
    return tuple(found)


def nics(devices: list[Any], portgroups: dict[str, str]) -> tuple[Nic, ...]:
    """NICs in device order; portgroups maps a distributed port group's key to its name."""
    found: list[Nic] = []
    for device in devices:
        model = NIC_MODELS.get(kind(device))
        if model is None:
            continue
        backing = device.backing
        network = getattr(backing, "deviceName", None)
        port = getattr(backing, "port", None)
        if port is not None:
            network = portgroups.get(port.portgroupKey, port.portgroupKey)
        mac = hw.normalise_mac(device.macAddress)
        found.append(Nic(mac=mac, model=model, network=network or f"ethernet{len(found)}"))
    return tuple(found)


def firmware(config: Any) -> Firmware:
    return Firmware.UEFI if (config.firmware or "").lower() == "efi" else Firmware.BIOS


def secure_boot(config: Any) -> bool:
    options = config.bootOptions
    return bool(options is not None and options.efiSecureBootEnabled)


def topology(config: Any) -> CpuTopology | None:
    vcpus = config.hardware.numCPU
    cores = config.hardware.numCoresPerSocket
    if not cores or cores < 1 or vcpus % cores:
        return None
    return CpuTopology(sockets=vcpus // cores, cores=cores, threads=1)


def genid(config: Any, where: str, warnings: list[str]) -> str | None:
    """vm.genid/vm.genidX from the VM's extra configuration, read as the VMX source reads them."""
    entries = {
        option.key.lower(): VmxEntry(str(option.value), 0)
        for option in config.extraConfig or []
        if option.key.lower() in ("vm.genid", "vm.genidx")
    }
    return hw.genid(VmxFile(path=where, entries=entries), warnings)
