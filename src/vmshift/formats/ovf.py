"""OVF descriptors (DMTF DSP0243, 1.x and 2.x) as VMware and VirtualBox write them: the
envelope, its References and DiskSection, and the one VirtualSystem (its hardware is read by
formats/ovf_hardware.py; the manifests that travel with a descriptor by formats/ovf_manifest.py).

Pure: bytes in, frozen dataclasses (formats/ovf_model.py) out. Whether the package really holds
the files named here, and whether their checksums match, is the ova source's business.
"""

from __future__ import annotations

from lxml import etree

from vmshift.formats import ovf_hardware as hw
from vmshift.formats.ovf_model import (
    OvfDescriptor,
    OvfDisk,
    OvfDiskAttachment,
    OvfError,
    OvfFile,
)
from vmshift.formats.ovf_xml import (
    OVF1_NS,
    OVF2_NS,
    VBOX_NS,
    VMW_NS,
    Ctx,
    kid,
    kids,
    local,
    parse_allocation_units,
    parse_xml,
    text,
)
from vmshift.model.vm import Nic, Removable


def parse_ovf(data: bytes, *, path: str) -> OvfDescriptor:
    """Parse an OVF descriptor's bytes; raise OvfError naming path for anything unusable."""
    root = parse_xml(data, path)
    qname = etree.QName(root)
    if qname.localname != "Envelope" or qname.namespace not in (OVF1_NS, OVF2_NS):
        raise OvfError(
            path,
            f"not an OVF descriptor (root element {{{qname.namespace}}}{qname.localname})",
            hint=f"an OVF 1.x or 2.x Envelope in {OVF1_NS} or {OVF2_NS} is expected",
        )
    ctx = Ctx(path, qname.namespace)

    files = _references(ctx, root)
    file_by_id = {f.file_id: f for f in files}
    disk_table = _disk_section(ctx, root, file_by_id)
    vs = _virtual_system(ctx, root)
    section = kid(vs, "VirtualHardwareSection")
    if section is None:
        raise OvfError(path, "the VirtualSystem has no VirtualHardwareSection")

    items, vmw_config = hw.hardware(ctx, root, section)
    controllers = hw.controllers(ctx, items)
    by_id = {c.instance_id: c for c in reversed(controllers)}  # the first of a duplicate wins
    vcpus, cores, memory = 1, None, None
    disks: list[OvfDiskAttachment] = []
    removables: list[Removable] = []
    nics: list[Nic] = []
    for item in items:
        rtype = item.rtype(ctx)
        if rtype == 3:
            vcpus = ctx.int(item.fields.get("VirtualQuantity"), "CPU count", item.el) or 1
            cores = ctx.int(item.fields.get("CoresPerSocket"), "CoresPerSocket", item.el)
        elif rtype == 4 and memory is None:
            memory = hw.memory(ctx, item)
        elif rtype == 17:
            disks.append(hw.disk_item(ctx, item, disk_table, by_id, disks))
        elif rtype in (14, 15, 16):
            removables.append(hw.removable(ctx, item, rtype, by_id, file_by_id))
        elif rtype == 10:
            nics.append(hw.nic(item))
    if memory is None:
        raise OvfError(path, "the VirtualHardwareSection has no memory Item (ResourceType 4)")

    machine = next(
        (c for c in vs if etree.QName(c).namespace == VBOX_NS and local(c) == "Machine"), None
    )
    os_section = kid(vs, "OperatingSystemSection")
    system = kid(section, "System")
    vs_type = (text(kid(system, "VirtualSystemType")) if system is not None else None) or ""
    firmware, secure_boot = hw.firmware(vmw_config, machine)
    genid, warnings = hw.vmware_genid(vmw_config, path)
    os_id = os_type = os_description = None
    if os_section is not None:
        os_id = ctx.int(ctx.attr(os_section, "id"), "OperatingSystemSection ovf:id", os_section)
        os_type = os_section.get(f"{{{VMW_NS}}}osType") or text(kid(os_section, "OSType"))
        os_description = text(kid(os_section, "Description"))
    if os_type is None and machine is not None:
        os_type = machine.get("OSType")
    if machine is not None:
        nics = hw.vbox_nics(machine, nics)

    system_id = ctx.attr(vs, "id") or ""
    name = text(kid(vs, "Name")) or system_id
    if not name and system is not None:
        name = text(kid(system, "VirtualSystemIdentifier")) or ""
    if not name:
        raise OvfError(path, "the VirtualSystem has neither ovf:id nor a Name")
    return OvfDescriptor(
        ovf_version=1 if ctx.ns == OVF1_NS else 2,
        producer=_producer(root, machine, vs_type),
        system_id=system_id,
        name=name,
        os_id=os_id,
        os_type=os_type,
        os_description=os_description,
        vcpus=vcpus,
        cores_per_socket=cores,
        memory=memory,
        firmware=firmware,
        secure_boot=secure_boot,
        controllers=tuple(controllers),
        disks=tuple(disks),
        removables=tuple(removables),
        nics=tuple(nics),
        files=tuple(files),
        genid=genid,
        warnings=tuple(warnings),
    )


def _references(ctx: Ctx, root: etree._Element) -> list[OvfFile]:
    refs = kid(root, "References")
    files: list[OvfFile] = []
    for el in kids(refs, "File") if refs is not None else []:
        files.append(
            OvfFile(
                file_id=ctx.need(el, "id"),
                href=ctx.need(el, "href"),
                size=ctx.int(ctx.attr(el, "size"), "ovf:size", el),
                compression=(ctx.attr(el, "compression") or "").lower() or None,
                chunk_size=ctx.int(ctx.attr(el, "chunkSize"), "ovf:chunkSize", el),
            )
        )
    seen = [f.file_id for f in files]
    if dup := next((i for i in seen if seen.count(i) > 1), None):
        raise OvfError(ctx.path, f'References: two files have ovf:id "{dup}"')
    return files


def _disk_section(ctx: Ctx, root: etree._Element, files: dict[str, OvfFile]) -> dict[str, OvfDisk]:
    table: dict[str, OvfDisk] = {}
    for section in kids(root, "DiskSection"):
        for el in kids(section, "Disk"):
            disk_id = ctx.need(el, "diskId")
            raw = ctx.need(el, "capacity")
            if "${" in raw:
                raise OvfError(
                    ctx.path,
                    f'disk "{disk_id}": capacity "{raw}" refers to a property; '
                    "vmshift needs a number of bytes",
                )
            units = ctx.attr(el, "capacityAllocationUnits") or "byte"
            try:
                scale = parse_allocation_units(units)
            except ValueError as exc:
                raise OvfError(ctx.path, f'disk "{disk_id}": {exc}') from None
            ref = ctx.attr(el, "fileRef")
            if ref is not None and ref not in files:
                raise OvfError(
                    ctx.path, f'disk "{disk_id}" refers to file "{ref}", which References lacks'
                )
            table[disk_id] = OvfDisk(
                disk_id=disk_id,
                capacity=(ctx.int(raw, "capacity", el) or 0) * scale,
                file=files[ref] if ref is not None else None,
                format_url=ctx.attr(el, "format"),
                populated_size=ctx.int(ctx.attr(el, "populatedSize"), "populatedSize", el),
            )
    return table


def _virtual_system(ctx: Ctx, root: etree._Element) -> etree._Element:
    systems = list(root.iter(f"{{{ctx.ns}}}VirtualSystem"))
    if not systems:
        raise OvfError(ctx.path, "no VirtualSystem in the descriptor")
    if len(systems) > 1:
        raise OvfError(
            ctx.path,
            f"holds {len(systems)} virtual systems; vmshift converts one at a time",
            hint="export each virtual machine to its own OVA",
        )
    return systems[0]


def _producer(root: etree._Element, machine: etree._Element | None, vs_type: str) -> str:
    if machine is not None or vs_type.lower().startswith("virtualbox"):
        return "virtualbox"
    if VMW_NS in root.nsmap.values() or vs_type.lower().startswith("vmx"):
        return "vmware"
    return "unknown"
