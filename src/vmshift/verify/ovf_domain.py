"""-o rhv's guest as libvirt domain XML: the devices the OVF in the export domain names.

RHV builds the VM from the OVF on import, so --verify-boot boots what the OVF says, read back
from the domain after it was written, not what the converter meant to write:

- memory, sockets/cores/threads and CustomCpuName from the hardware items;
- each disk of the DiskSection, the boot disk first, as images/<image>/<volume> of this
  domain: qcow2 for COW, raw for RAW, on the bus of its disk-interface (VirtIO: virtio,
  VirtIO_SCSI: scsi behind a virtio-scsi controller, SATA: sata, IDE: ide on i440fx and
  sata on q35, which has no IDE, as the engine does);
- each NIC with its MAC, its model from ResourceSubType (pv: virtio, e1000, rtl8139), on the
  bridge VDSM names after the logical network;
- the machine and firmware from BiosType (i440fx_sea_bios: pc with SeaBIOS, q35_sea_bios: q35
  with SeaBIOS, q35_ovmf: q35 with UEFI, q35_secure_boot: UEFI enforcing secure boot); the
  display, RNG and balloon devices; a serial console on a pty, as on every vmshift guest.

The domain itself comes from formats/libvirt_xml.domain_xml, the builder -o local and
-o libvirt use, so the check sees the same shape of XML whatever the output. The OVF names no
architecture: RHV clusters that run converted VMware guests are x86_64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from lxml import etree

from vmshift.errors import TargetError
from vmshift.formats.libvirt_xml import domain_xml
from vmshift.formats.ovf_hardware import normalise_mac
from vmshift.formats.ovf_model import OvfError
from vmshift.formats.ovf_xml import Ctx, kid, kids, local, parse_xml, text
from vmshift.formats.ovirt_ovf import (
    OVF_NS,
    BiosType,
    DisplayType,
    NicType,
    OvfDisk,
    OvfNic,
)
from vmshift.model.caps import GuestCaps
from vmshift.model.vm import CpuModel, CpuTopology, Firmware, Nic, SourceVM
from vmshift.targets.base import NetworkMap
from vmshift.targets.export_domain import UUID_RE

MIB = 1 << 20

# ovf:disk-interface -> GuestCaps.block_bus; IDE is decided by the machine (see _block_bus).
BLOCK_BUSES = {"VirtIO": "virtio-blk", "VirtIO_SCSI": "virtio-scsi", "SATA": "sata"}
NIC_MODELS = {NicType.PV: "virtio", NicType.E1000: "e1000", NicType.RTL8139: "rtl8139"}
VOLUME_FORMATS = {"COW": "qcow2", "RAW": "raw"}
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

_Enum = TypeVar("_Enum", BiosType, DisplayType, NicType)


@dataclass(frozen=True)
class OvfMachine:
    """What an oVirt OVF says about the machine, as far as booting it goes."""

    vm_id: str | None
    name: str
    os_name: str  # the oVirt osinfo name (rhel_9x64, windows_2019x64 ...)
    bios_type: BiosType
    memory_mib: int
    topology: CpuTopology
    disks: tuple[OvfDisk, ...]  # the boot disk first
    nics: tuple[OvfNic, ...]
    display: DisplayType
    rng: bool = False
    balloon: bool = False
    custom_cpu_name: str | None = None

    @property
    def machine(self) -> str:
        return "pc" if self.bios_type is BiosType.I440FX_SEA_BIOS else "q35"

    @property
    def firmware(self) -> Firmware:
        uefi = self.bios_type in (BiosType.Q35_OVMF, BiosType.Q35_SECURE_BOOT)
        return Firmware.UEFI if uefi else Firmware.BIOS


def ovf_domain_xml(ovf_path: Path, domain_root: Path) -> str:
    """The libvirt domain (type kvm) of the devices the OVF at ovf_path names, its disks in
    the export domain whose <SD_UUID>/ directory is domain_root."""
    try:
        data = ovf_path.read_bytes()
    except OSError as exc:
        raise TargetError(f"{ovf_path}: cannot read the OVF back: {exc.strerror}") from exc
    machine = read_ovf(data, str(ovf_path))
    return machine_xml(machine, [volume_path(domain_root, d, str(ovf_path)) for d in machine.disks])


def read_ovf(data: bytes, path: str) -> OvfMachine:
    """Parse the OVF vmshift wrote (formats/ovirt_ovf.py) with the untrusted-XML parser."""
    try:
        return _read(Ctx(path, OVF_NS), parse_xml(data, path))
    except OvfError as exc:
        raise TargetError(str(exc)) from exc


def volume_path(domain_root: Path, disk: OvfDisk, where: str) -> Path:
    """images/<image>/<volume> of the domain; only UUIDs are taken as names there."""
    if not (UUID_RE.match(disk.image_id) and UUID_RE.match(disk.volume_id)):
        raise TargetError(f"{where}: disk {disk.href!r} is not <image UUID>/<volume UUID>")
    path = domain_root / "images" / disk.image_id / disk.volume_id
    if not path.is_file():
        raise TargetError(f"{where}: names disk {disk.href}, but {path} is not there")
    return path


def machine_xml(machine: OvfMachine, volumes: list[Path]) -> str:
    """The domain XML for machine, volumes[i] holding machine.disks[i]."""
    formats = [VOLUME_FORMATS[d.volume_format] for d in machine.disks]
    nic_models = [NIC_MODELS[n.nic_type] for n in machine.nics]
    vm = SourceVM(
        name=machine.name,
        memory=machine.memory_mib * MIB,
        vcpus=machine.topology.sockets * machine.topology.cores * machine.topology.threads,
        topology=machine.topology,
        firmware=machine.firmware,
        disks=(),
        # On the host VDSM wires a vNIC to the bridge named after its logical network.
        nics=tuple(
            Nic(n.mac, model, n.network or None, "bridge")
            for n, model in zip(machine.nics, nic_models, strict=True)
        ),
        cpu=CpuModel(model=machine.custom_cpu_name) if machine.custom_cpu_name else None,
    )
    caps = GuestCaps(
        block_bus=_block_bus(machine),
        net_model=nic_models[0] if nic_models else "virtio",
        video=machine.display.device,
        machine=machine.machine,
        firmware=machine.firmware,
        arch="x86_64",
        secure_boot=machine.bios_type is BiosType.Q35_SECURE_BOOT,
        virtio_rng=machine.rng,
        virtio_balloon=machine.balloon,
    )
    xml = domain_xml(
        vm,
        caps,
        list(zip(volumes, formats, strict=True)),
        name=machine.name,
        networks=NetworkMap(bridges={n.network: n.network for n in machine.nics if n.network}),
        domain_type="kvm",
        os_type="windows" if machine.os_name.startswith("windows") else "linux",
        uuid=machine.vm_id,
        cpu_model=machine.custom_cpu_name is not None,
        secure_boot=caps.secure_boot,
    )
    if len(set(nic_models)) < 2:
        return xml
    # The builder gives every NIC one model; an OVF may name one per NIC.
    root = etree.fromstring(xml.encode())
    for model, iface in zip(nic_models, root.iterfind("devices/interface/model"), strict=True):
        iface.set("type", model)
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def _block_bus(machine: OvfMachine) -> str:
    interfaces = sorted({d.interface for d in machine.disks})
    if len(interfaces) > 1:
        raise TargetError(
            f"{machine.name}: the OVF puts its disks on several interfaces "
            f"({', '.join(interfaces)}); the boot check describes one disk bus"
        )
    interface = interfaces[0] if interfaces else "VirtIO"
    if interface == "IDE":
        return "ide" if machine.machine == "pc" else "sata"
    return BLOCK_BUSES[interface]


def _read(ctx: Ctx, env: etree._Element) -> OvfMachine:
    content = kid(env, "Content")
    if content is None:
        raise OvfError(ctx.path, "has no <Content>: not an oVirt VM")
    sections = {s.get(XSI_TYPE): s for s in [*kids(env, "Section"), *kids(content, "Section")]}
    hardware = sections.get("ovf:VirtualHardwareSection_Type")
    if hardware is None:
        raise OvfError(ctx.path, "has no VirtualHardwareSection")
    items = kids(hardware, "Item")
    by_type: dict[str | None, list[etree._Element]] = {}
    for item in items:
        by_type.setdefault(text(kid(item, "ResourceType")), []).append(item)
    os_section = sections.get("ovf:OperatingSystemSection_Type")
    vm_id, os_name = None, ""
    if os_section is not None:
        vm_id, os_name = ctx.attr(os_section, "id"), text(kid(os_section, "Description")) or ""
    name = text(kid(content, "Name"))
    if name is None:
        raise OvfError(ctx.path, "<Content> has no <Name>")
    disk_section = sections.get("ovf:DiskSection_Type")
    disks = [] if disk_section is None else [_disk(ctx, d) for d in kids(disk_section, "Disk")]
    if not disks:
        raise OvfError(ctx.path, "names no disks")
    return OvfMachine(
        vm_id=vm_id if vm_id and UUID_RE.match(vm_id) else None,
        name=name,
        os_name=os_name,
        bios_type=_enum(ctx, BiosType, content, "BiosType"),
        memory_mib=_memory(ctx, _one(ctx, by_type, "4", "memory")),
        topology=_topology(ctx, _one(ctx, by_type, "3", "CPU")),
        disks=tuple(sorted(disks, key=lambda d: not d.boot)),
        nics=tuple(_nic(ctx, i) for i in by_type.get("10", [])),
        display=_enum(ctx, DisplayType, content, "DefaultDisplayType"),
        rng=any(_device(i) == ("rng", "virtio") for i in items),
        balloon=any(_device(i) == ("balloon", "memballoon") for i in items),
        custom_cpu_name=text(kid(content, "CustomCpuName")),
    )


def _one(
    ctx: Ctx, by_type: dict[str | None, list[etree._Element]], kind: str, what: str
) -> etree._Element:
    found = by_type.get(kind, [])
    if len(found) != 1:
        raise OvfError(ctx.path, f"{len(found)} {what} items (ResourceType {kind}), not one")
    return found[0]


def _number(ctx: Ctx, item: etree._Element, name: str, default: int | None = None) -> int:
    elem = kid(item, name)
    value = ctx.int(text(elem), name, item if elem is None else elem)
    if value is None:
        if default is None:
            raise OvfError(ctx.path, f"<{local(item)}> has no {name} (line {item.sourceline})")
        return default
    if value < 1:
        raise OvfError(ctx.path, f"{name} {value} is not a positive number")
    return value


def _memory(ctx: Ctx, item: etree._Element) -> int:
    units = text(kid(item, "AllocationUnits")) or "MegaBytes"
    if units.lower() not in ("megabytes", "mb"):
        raise OvfError(ctx.path, f"memory in {units!r}: oVirt writes MegaBytes")
    return _number(ctx, item, "VirtualQuantity")


def _topology(ctx: Ctx, item: etree._Element) -> CpuTopology:
    return CpuTopology(
        sockets=_number(ctx, item, "num_of_sockets", 1),
        cores=_number(ctx, item, "cpu_per_socket", 1),
        threads=_number(ctx, item, "threads_per_cpu", 1),
    )


def _enum(ctx: Ctx, kind: type[_Enum], parent: etree._Element, tag: str) -> _Enum:
    elem = kid(parent, tag)
    number = ctx.int(text(elem), tag, parent if elem is None else elem)
    if number is None:
        raise OvfError(ctx.path, f"<{local(parent)}> has no {tag}")
    try:
        return kind(number)
    except ValueError:
        raise OvfError(ctx.path, f"{tag} {number}: not one vmshift can boot") from None


def _disk(ctx: Ctx, elem: etree._Element) -> OvfDisk:
    image, sep, volume = ctx.need(elem, "fileRef").partition("/")
    if not sep:
        raise OvfError(ctx.path, f"disk {image!r}: fileRef is not IMAGE/VOLUME")
    fmt = ctx.need(elem, "volume-format")
    interface = ctx.need(elem, "disk-interface")
    if fmt not in VOLUME_FORMATS:
        raise OvfError(ctx.path, f"disk {image}/{volume}: volume-format {fmt!r} is not COW or RAW")
    if interface not in (*BLOCK_BUSES, "IDE"):
        raise OvfError(ctx.path, f"disk {image}/{volume}: disk-interface {interface!r} unknown")
    capacity = ctx.int(ctx.attr(elem, "capacity"), "capacity", elem)
    return OvfDisk(
        image_id=image,
        volume_id=volume,
        snapshot_id=ctx.attr(elem, "vm_snapshot_id") or "",
        virtual_size=capacity or 0,
        actual_size=0,  # the OVF rounds it to GiB: not worth reading back
        volume_format=fmt,
        volume_type=ctx.attr(elem, "volume-type") or "",
        interface=interface,
        boot=(ctx.attr(elem, "boot") or "").lower() == "true",
    )


def _nic(ctx: Ctx, item: etree._Element) -> OvfNic:
    given = text(kid(item, "MACAddress"))
    mac = normalise_mac(given)
    if given and mac is None:
        raise OvfError(ctx.path, f"MACAddress {given[:40]!r} is not a MAC address")
    return OvfNic(
        name=text(kid(item, "Name")) or "",
        network=text(kid(item, "Connection")) or "",
        mac=mac,
        nic_type=_enum(ctx, NicType, item, "ResourceSubType"),
    )


def _device(item: etree._Element) -> tuple[str | None, str | None]:
    return text(kid(item, "Type")), text(kid(item, "Device"))
