"""An OVF VirtualHardwareSection: its Items (CPUs, memory, controllers, disks, removable
drives, NICs) and the vmw:Config / vmw:ExtraConfig keys VMware puts beside them (firmware,
secure boot, the VM generation id), with what VirtualBox keeps in its own vbox:Machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from vmshift.formats.genid import genid_from_vmware
from vmshift.formats.ovf_model import (
    OvfController,
    OvfDisk,
    OvfDiskAttachment,
    OvfError,
    OvfFile,
)
from vmshift.formats.ovf_xml import (
    VMW_NS,
    Ctx,
    is_vmw,
    kid,
    kids,
    local,
    parse_allocation_units,
    text,
)
from vmshift.model.vm import Controller, Firmware, Nic, Removable


@dataclass
class Item:
    el: etree._Element
    fields: dict[str, str]
    config: dict[str, str]  # vmw:Config key -> value inside the Item

    @staticmethod
    def of(el: etree._Element) -> Item:
        fields: dict[str, str] = {}
        config: dict[str, str] = {}
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if is_vmw(child, "Config"):
                config[child.get(f"{{{VMW_NS}}}key", "")] = child.get(f"{{{VMW_NS}}}value", "")
            elif (value := text(child)) is not None:
                fields.setdefault(local(child), value)
        return Item(el, fields, config)

    def rtype(self, ctx: Ctx) -> int | None:
        return ctx.int(self.fields.get("ResourceType"), "ResourceType", self.el)


def hardware(
    ctx: Ctx, root: etree._Element, hw: etree._Element
) -> tuple[list[Item], dict[str, str]]:
    """The Items of the default deployment configuration, and the section's vmw:Config and
    vmw:ExtraConfig keys (VMX keys such as firmware or vm.genid)."""
    active: str | None = None
    options = kid(root, "DeploymentOptionSection")
    if options is not None:
        configs = kids(options, "Configuration")
        default = [c for c in configs if (ctx.attr(c, "default") or "").lower() == "true"]
        chosen = (default or configs)[:1]
        active = ctx.attr(chosen[0], "id") if chosen else None
    items: list[Item] = []
    config: dict[str, str] = {}
    for el in hw:
        if not isinstance(el.tag, str):
            continue
        if local(el) in ("Item", "StorageItem", "EthernetPortItem"):
            wanted = ctx.attr(el, "configuration")
            if active is None or wanted is None or active in wanted.split():
                items.append(Item.of(el))
        elif is_vmw(el, "Config", "ExtraConfig"):
            config[el.get(f"{{{VMW_NS}}}key", "")] = el.get(f"{{{VMW_NS}}}value", "")
    return items, config


_SCSI_MODELS = {
    "lsilogic": "lsilogic", "virtualscsi": "pvscsi", "pvscsi": "pvscsi",
    "lsilogicsas": "lsisas1068", "lsisas1068": "lsisas1068", "buslogic": "buslogic",
}  # fmt: skip


def controllers(ctx: Ctx, items: list[Item]) -> list[OvfController]:
    found: list[OvfController] = []
    for item in items:
        rtype = item.rtype(ctx)
        subtype = (item.fields.get("ResourceSubType") or "").split()
        sub = subtype[0].lower() if subtype else ""
        model: str | None = sub or None
        if rtype == 5:
            kind = Controller.IDE
        elif rtype == 6:
            kind = Controller.VIRTIO_SCSI if sub == "virtioscsi" else Controller.SCSI
            model = _SCSI_MODELS.get(sub) or item.config.get("virtualDev") or model
        elif rtype == 20:
            if "nvme" in sub:
                kind = Controller.NVME
            elif sub == "virtioscsi":
                kind = Controller.VIRTIO_SCSI
            else:
                kind = Controller.SATA
        else:
            continue
        instance = item.fields.get("InstanceID")
        if not instance:
            raise OvfError(
                ctx.path, f"controller Item without InstanceID (line {item.el.sourceline})"
            )
        bus = ctx.int(item.fields.get("Address"), "controller Address", item.el)
        if bus is None:
            bus = sum(1 for c in found if c.kind == kind)
        found.append(OvfController(instance, kind, model, bus))
    return found


_HOST_RESOURCE = re.compile(r"(?:ovf:)?/(disk|file)/(.+)")


def disk_item(
    ctx: Ctx,
    item: Item,
    table: dict[str, OvfDisk],
    by_id: dict[str, OvfController],
    earlier: list[OvfDiskAttachment],
) -> OvfDiskAttachment:
    host = item.fields.get("HostResource", "")
    match = _HOST_RESOURCE.fullmatch(host)
    where = f"(line {item.el.sourceline})"
    if match is None or match.group(1) != "disk":
        raise OvfError(
            ctx.path, f'disk Item with HostResource "{host}"; expected ovf:/disk/ID {where}'
        )
    disk = table.get(match.group(2))
    if disk is None:
        raise OvfError(
            ctx.path,
            f'disk Item refers to disk "{match.group(2)}", which DiskSection lacks {where}',
        )
    controller = by_id.get(item.fields.get("Parent", ""))
    unit = ctx.int(item.fields.get("AddressOnParent"), "AddressOnParent", item.el)
    if unit is None:
        unit = sum(1 for d in earlier if d.controller == controller)
    return OvfDiskAttachment(disk, controller, unit, item.fields.get("ElementName", ""))


def removable(
    ctx: Ctx,
    item: Item,
    rtype: int,
    by_id: dict[str, OvfController],
    files: dict[str, OvfFile],
) -> Removable:
    controller = by_id.get(item.fields.get("Parent", ""))
    match = _HOST_RESOURCE.fullmatch(item.fields.get("HostResource", ""))
    media = files.get(match.group(2)) if match and match.group(1) == "file" else None
    return Removable(
        kind="floppy" if rtype == 14 else "cdrom",
        controller=controller.kind if controller else Controller.UNKNOWN,
        bus=controller.bus if controller else 0,
        unit=ctx.int(item.fields.get("AddressOnParent"), "AddressOnParent", item.el) or 0,
        source_path=media.href if media else None,
    )


_NIC_MODELS = {
    "vmxnet3": "vmxnet3", "vmxnet2": "vmxnet2", "vmxnet": "vmxnet", "e1000": "e1000",
    "e1000e": "e1000e", "pcnet32": "pcnet32", "virtio": "virtio", "virtio-net": "virtio",
}  # fmt: skip
# VirtualBox's adapter chips, from its own <Adapter type=...> in vbox:Machine.
_VBOX_NIC_TYPES = {
    "82540em": "e1000", "82543gc": "e1000", "82545em": "e1000", "am79c970a": "pcnet32",
    "am79c973": "pcnet32", "am79c960": "pcnet32", "virtio": "virtio",
}  # fmt: skip
# An OVF Connection names a network of the exporting host: a vSphere port group, a VirtualBox
# "NAT" or host-only interface. Like virt-v2v, vmshift calls each a bridge; --network and
# --bridge mappings still match it by name (targets/base.py NetworkMap.lookup).
OVF_NETWORK_TYPE = "bridge"


def normalise_mac(text: str | None) -> str | None:
    """A MAC in lower-case colon form; None for anything that is not 12 hex digits."""
    if not text:
        return None
    digits = re.sub(r"[:\-.\s]", "", text)
    if not re.fullmatch(r"[0-9A-Fa-f]{12}", digits):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).lower()


def nic(item: Item) -> Nic:
    sub = (item.fields.get("ResourceSubType") or "").lower()
    return Nic(
        mac=normalise_mac(item.fields.get("Address")),
        model=_NIC_MODELS.get(sub, sub or "unknown"),
        network=item.fields.get("Connection"),
        network_type=OVF_NETWORK_TYPE,
    )


def vbox_nics(machine: etree._Element, nics: list[Nic]) -> list[Nic]:
    """Fill MACs (and unnamed models) from VirtualBox's own settings: its Items carry neither.
    Its enabled adapters, in slot order, are the Items in document order."""
    adapters = [
        a
        for a in machine.iter()
        if isinstance(a.tag, str)
        and local(a) == "Adapter"
        and (a.get("enabled") or "true").lower() == "true"
    ]
    adapters.sort(key=lambda a: int(a.get("slot", "0")) if a.get("slot", "0").isdigit() else 0)
    if len(adapters) != len(nics):
        return nics
    merged = []
    for each, adapter in zip(nics, adapters, strict=True):
        model = each.model
        if model == "unknown":
            model = _VBOX_NIC_TYPES.get((adapter.get("type") or "").lower(), model)
        mac = each.mac or normalise_mac(adapter.get("MACAddress"))
        merged.append(Nic(mac, model, each.network, each.network_type))
    return merged


def memory(ctx: Ctx, item: Item) -> int:
    count = ctx.int(item.fields.get("VirtualQuantity"), "memory VirtualQuantity", item.el)
    if count is None:
        raise OvfError(ctx.path, f"memory Item without VirtualQuantity (line {item.el.sourceline})")
    # VMware and VirtualBox leave megabytes implicit at times; it was the only unit in use.
    fields = item.fields
    units = fields.get("VirtualQuantityUnits") or fields.get("AllocationUnits") or "byte * 2^20"
    try:
        return count * parse_allocation_units(units)
    except ValueError as exc:
        raise OvfError(ctx.path, f"memory: {exc} (line {item.el.sourceline})") from None


def firmware(
    config: dict[str, str], machine: etree._Element | None
) -> tuple[Firmware, bool | None]:
    """The firmware, and whether UEFI secure boot was on (None: the descriptor does not say)."""
    fw = config.get("firmware", "").lower()
    found = {"efi": Firmware.UEFI, "bios": Firmware.BIOS}.get(fw, Firmware.UNKNOWN)
    if found is Firmware.UNKNOWN and machine is not None:
        els = [e for e in machine.iter() if isinstance(e.tag, str) and local(e) == "Firmware"]
        vbox = (els[0].get("type") or "").upper() if els else ""
        if vbox.startswith("EFI"):
            found = Firmware.UEFI
        elif vbox == "BIOS":
            found = Firmware.BIOS
    secure = config.get("uefi.secureBoot.enabled") or config.get("bootOptions.efiSecureBootEnabled")
    return found, (secure.lower() == "true") if secure else None


_SIGNED_DECIMAL = re.compile(r"[+-]?[0-9]{1,20}")


def vmware_genid(config: dict[str, str], path: str) -> tuple[str | None, list[str]]:
    """The VM generation id from the VMX keys vm.genid (low half) and vm.genidX (high half),
    signed 64-bit decimals as VMware writes them; None unless both halves are there and valid.
    An unparsable half is a warning: the guest converts, only without its generation id."""
    keys = {key.lower(): value for key, value in config.items()}
    halves: list[int] = []
    warnings: list[str] = []
    for key in ("vm.genid", "vm.genidX"):
        value = keys.get(key.lower())
        if value is None:
            continue
        number = int(value) if _SIGNED_DECIMAL.fullmatch(value.strip()) else None
        if number is None or not -(1 << 63) <= number < 1 << 63:
            warnings.append(
                f'{path}: {key} "{value}" is not a signed 64-bit number; the VM generation id '
                "is not carried over"
            )
        else:
            halves.append(number)
    if len(halves) != 2:
        return None, warnings
    return genid_from_vmware(halves[0], halves[1]), warnings
