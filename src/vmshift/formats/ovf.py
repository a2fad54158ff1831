"""OVF descriptors (DMTF DSP0243, 1.x and 2.x) as VMware and VirtualBox write them, and the
manifests (.mf) that travel with them.

Pure: bytes in, frozen dataclasses out. Whether the package really holds the files named here,
and whether their checksums match, is the ova source's business.

Items are matched by local name, whatever their namespace: OVF 1.x puts everything in `rasd:`
Items, OVF 2.x may use `StorageItem` (sasd:) and `EthernetPortItem` (epasd:) with the same
child names, and hand-written descriptors mix prefixes freely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod

from lxml import etree

from vmshift.errors import SourceError
from vmshift.model.vm import Controller, CpuTopology, Firmware, Nic, Removable

OVF1_NS = "http://schemas.dmtf.org/ovf/envelope/1"
OVF2_NS = "http://schemas.dmtf.org/ovf/envelope/2"
VMW_NS = "http://www.vmware.com/schema/ovf"
VBOX_NS = "http://www.virtualbox.org/ovf/machine"

# Real descriptors are tens of kilobytes; anything this big is not one.
MAX_OVF_BYTES = 16 << 20
MAX_MANIFEST_BYTES = 1 << 20

VMDK_URL = "http://www.vmware.com/interfaces/specifications/vmdk.html"
_FORMAT_URLS = {
    VMDK_URL: "vmdk",
    "http://www.gnome.org/~markmc/qcow-image-format.html": "qcow2",
    "http://en.wikipedia.org/wiki/Byte": "raw",
}


class OvfError(SourceError):
    """An OVF descriptor or manifest that cannot be parsed, or lacks a part vmshift needs."""

    def __init__(self, path: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class OvfFile:
    """A References/File: one file of the package."""

    file_id: str
    href: str
    size: int | None = None
    compression: str | None = None  # "gzip" when the stored file must be inflated
    chunk_size: int | None = None  # stored as href.000000000, href.000000001 ... when set


@dataclass(frozen=True)
class OvfDisk:
    """A DiskSection/Disk; file is None for an empty disk the importer is to create."""

    disk_id: str
    capacity: int  # bytes
    file: OvfFile | None
    format_url: str | None = None
    populated_size: int | None = None

    @property
    def format(self) -> str | None:
        """The qemu driver the format URL names (vmdk, qcow2, raw), or None if unknown."""
        if not self.format_url:
            return None
        return _FORMAT_URLS.get(self.format_url.split("#", 1)[0])

    @property
    def subformat(self) -> str | None:
        """The URL's fragment: streamOptimized, monolithicSparse ..."""
        if not self.format_url or "#" not in self.format_url:
            return None
        return self.format_url.split("#", 1)[1]


@dataclass(frozen=True)
class OvfController:
    instance_id: str
    kind: Controller
    model: str | None  # lsilogic, pvscsi, lsisas1068, buslogic, piix4, ahci ...
    bus: int  # rasd:Address, else the count of earlier controllers of this kind


@dataclass(frozen=True)
class OvfDiskAttachment:
    """A disk Item (ResourceType 17) with what it refers to resolved."""

    disk: OvfDisk
    controller: OvfController | None  # None: the Item names no (known) Parent
    unit: int
    label: str = ""  # the Item's ElementName, e.g. "Hard disk 1"


@dataclass(frozen=True)
class OvfDescriptor:
    ovf_version: int  # 1 or 2: the envelope namespace's version
    producer: str  # vmware, virtualbox or unknown
    system_id: str  # VirtualSystem ovf:id
    name: str
    os_id: int | None  # the CIM operating system number in OperatingSystemSection
    os_type: str | None  # vmw:osType (e.g. "debian11_64Guest") or vbox:OSType ("Debian_64")
    os_description: str | None
    vcpus: int
    cores_per_socket: int | None
    memory: int  # bytes
    firmware: Firmware
    secure_boot: bool | None
    controllers: tuple[OvfController, ...]
    disks: tuple[OvfDiskAttachment, ...]
    removables: tuple[Removable, ...]
    nics: tuple[Nic, ...]
    files: tuple[OvfFile, ...]  # every File of References, in order

    @property
    def topology(self) -> CpuTopology | None:
        cores = self.cores_per_socket
        if not cores or cores < 1 or self.vcpus % cores:
            return None
        return CpuTopology(sockets=self.vcpus // cores, cores=cores)


@dataclass(frozen=True)
class ManifestEntry:
    algorithm: str  # hashlib name: sha1, sha256, sha512
    filename: str  # as written, relative to the manifest
    digest: str  # lower-case hex


# --- units -------------------------------------------------------------------------------------

_NAMED_UNITS = {
    "byte": 1, "bytes": 1,
    "kilobytes": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "megabytes": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "gigabytes": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "terabytes": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}  # fmt: skip
_UNIT_EXPR = re.compile(r"bytes?((?:\s*\*\s*\d+(?:\s*\^\s*\d+)?)*)")
_UNIT_FACTOR = re.compile(r"\*\s*(\d+)(?:\s*\^\s*(\d+))?")


def parse_allocation_units(text: str) -> int:
    """Bytes per unit of a DSP0004 programmatic unit ("byte * 2^20", "byte*1024*1024") or of the
    older names VirtualBox writes ("MegaBytes"). Raise ValueError for anything else."""
    unit = " ".join(text.split()).lower()
    if unit in _NAMED_UNITS:
        return _NAMED_UNITS[unit]
    match = _UNIT_EXPR.fullmatch(unit)
    if match is None:
        raise ValueError(f'unknown unit "{text}"')
    factors = []
    for base, exp in _UNIT_FACTOR.findall(match.group(1)):
        # A cap keeps a hostile "byte * 10^999999999" from taking minutes to evaluate.
        if int(exp or 1) > 64 or int(base) > 1 << 40:
            raise ValueError(f'unit "{text}" is too large')
        factors.append(int(base) ** int(exp or 1))
    return prod(factors)


# --- XML helpers -------------------------------------------------------------------------------


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def _kids(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and _local(c) == name]


def _kid(el: etree._Element, name: str) -> etree._Element | None:
    found = _kids(el, name)
    return found[0] if found else None


def _text(el: etree._Element | None) -> str | None:
    if el is None or el.text is None or not el.text.strip():
        return None
    return el.text.strip()


@dataclass
class _Ctx:
    path: str
    ns: str

    def attr(self, el: etree._Element, name: str) -> str | None:
        value = el.get(f"{{{self.ns}}}{name}")
        return value if value is not None else el.get(name)

    def need(self, el: etree._Element, name: str) -> str:
        value = self.attr(el, name)
        if not value:
            raise OvfError(self.path, f"<{_local(el)}> has no ovf:{name} (line {el.sourceline})")
        return value

    def int(self, value: str | None, what: str, el: etree._Element) -> int | None:
        if value is None:
            return None
        try:
            return int(value.strip())
        except ValueError:
            raise OvfError(
                self.path, f'{what} "{value}" is not a whole number (line {el.sourceline})'
            ) from None


@dataclass
class _Item:
    el: etree._Element
    fields: dict[str, str]
    config: dict[str, str]  # vmw:Config key -> value inside the Item

    @staticmethod
    def of(el: etree._Element) -> _Item:
        fields: dict[str, str] = {}
        config: dict[str, str] = {}
        for child in el:
            if not isinstance(child.tag, str):
                continue
            if _local(child) == "Config" and etree.QName(child).namespace == VMW_NS:
                config[child.get(f"{{{VMW_NS}}}key", "")] = child.get(f"{{{VMW_NS}}}value", "")
            elif (value := _text(child)) is not None:
                fields.setdefault(_local(child), value)
        return _Item(el, fields, config)


# --- the descriptor ----------------------------------------------------------------------------


def parse_ovf(data: bytes, *, path: str) -> OvfDescriptor:
    """Parse an OVF descriptor's bytes; raise OvfError naming path for anything unusable."""
    if len(data) > MAX_OVF_BYTES:
        raise OvfError(path, f"{len(data)} bytes is far too large for an OVF descriptor")
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise OvfError(path, f"not well-formed XML: {getattr(exc, 'msg', None) or exc}") from exc
    if root.getroottree().docinfo.internalDTD is not None:
        raise OvfError(path, "has a DOCTYPE; OVF descriptors have none and vmshift reads no DTDs")
    qname = etree.QName(root)
    if qname.localname != "Envelope" or qname.namespace not in (OVF1_NS, OVF2_NS):
        raise OvfError(
            path,
            f"not an OVF descriptor (root element {{{qname.namespace}}}{qname.localname})",
            hint=f"an OVF 1.x or 2.x Envelope in {OVF1_NS} or {OVF2_NS} is expected",
        )
    ctx = _Ctx(path, qname.namespace)

    files = _references(ctx, root)
    disk_table = _disk_section(ctx, root, {f.file_id: f for f in files})
    vs = _virtual_system(ctx, root)
    hw = _kid(vs, "VirtualHardwareSection")
    if hw is None:
        raise OvfError(path, "the VirtualSystem has no VirtualHardwareSection")

    items, vmw_config = _hardware(ctx, root, hw)
    controllers = _controllers(ctx, items)
    by_id = {c.instance_id: c for c in reversed(controllers)}  # the first of a duplicate wins
    vcpus, cores, memory = 1, None, None
    disks: list[OvfDiskAttachment] = []
    removables: list[Removable] = []
    nics: list[Nic] = []
    file_by_id = {f.file_id: f for f in files}
    for item in items:
        rtype = ctx.int(item.fields.get("ResourceType"), "ResourceType", item.el)
        if rtype == 3:
            vcpus = ctx.int(item.fields.get("VirtualQuantity"), "CPU count", item.el) or 1
            cores = ctx.int(item.fields.get("CoresPerSocket"), "CoresPerSocket", item.el)
        elif rtype == 4 and memory is None:
            memory = _memory(ctx, item)
        elif rtype == 17:
            disks.append(_disk_item(ctx, item, disk_table, by_id, disks))
        elif rtype in (14, 15, 16):
            removables.append(_removable(ctx, item, rtype, by_id, file_by_id))
        elif rtype == 10:
            nics.append(_nic(item))
    if memory is None:
        raise OvfError(path, "the VirtualHardwareSection has no memory Item (ResourceType 4)")

    machine = next(
        (c for c in vs if etree.QName(c).namespace == VBOX_NS and _local(c) == "Machine"), None
    )
    os_section = _kid(vs, "OperatingSystemSection")
    system = _kid(hw, "System")
    vs_type = (_text(_kid(system, "VirtualSystemType")) if system is not None else None) or ""
    firmware, secure_boot = _firmware(vmw_config, machine)
    os_id = os_type = os_description = None
    if os_section is not None:
        os_id = ctx.int(ctx.attr(os_section, "id"), "OperatingSystemSection ovf:id", os_section)
        os_type = os_section.get(f"{{{VMW_NS}}}osType") or _text(_kid(os_section, "OSType"))
        os_description = _text(_kid(os_section, "Description"))
    if os_type is None and machine is not None:
        os_type = machine.get("OSType")
    if machine is not None:
        nics = _vbox_nics(machine, nics)

    system_id = ctx.attr(vs, "id") or ""
    name = _text(_kid(vs, "Name")) or system_id
    if not name and system is not None:
        name = _text(_kid(system, "VirtualSystemIdentifier")) or ""
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
    )


def _references(ctx: _Ctx, root: etree._Element) -> list[OvfFile]:
    refs = _kid(root, "References")
    files: list[OvfFile] = []
    for el in _kids(refs, "File") if refs is not None else []:
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


def _disk_section(ctx: _Ctx, root: etree._Element, files: dict[str, OvfFile]) -> dict[str, OvfDisk]:
    table: dict[str, OvfDisk] = {}
    for section in _kids(root, "DiskSection"):
        for el in _kids(section, "Disk"):
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


def _virtual_system(ctx: _Ctx, root: etree._Element) -> etree._Element:
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


def _hardware(
    ctx: _Ctx, root: etree._Element, hw: etree._Element
) -> tuple[list[_Item], dict[str, str]]:
    """The Items of the default deployment configuration, and the section's vmw:Config."""
    active: str | None = None
    options = _kid(root, "DeploymentOptionSection")
    if options is not None:
        configs = _kids(options, "Configuration")
        default = [c for c in configs if (ctx.attr(c, "default") or "").lower() == "true"]
        chosen = (default or configs)[:1]
        active = ctx.attr(chosen[0], "id") if chosen else None
    items: list[_Item] = []
    config: dict[str, str] = {}
    for el in hw:
        local = _local(el)
        if local in ("Item", "StorageItem", "EthernetPortItem"):
            wanted = ctx.attr(el, "configuration")
            if active is None or wanted is None or active in wanted.split():
                items.append(_Item.of(el))
        elif local in ("Config", "ExtraConfig") and etree.QName(el).namespace == VMW_NS:
            config[el.get(f"{{{VMW_NS}}}key", "")] = el.get(f"{{{VMW_NS}}}value", "")
    return items, config


_SCSI_MODELS = {
    "lsilogic": "lsilogic", "virtualscsi": "pvscsi", "pvscsi": "pvscsi",
    "lsilogicsas": "lsisas1068", "lsisas1068": "lsisas1068", "buslogic": "buslogic",
}  # fmt: skip


def _controllers(ctx: _Ctx, items: list[_Item]) -> list[OvfController]:
    found: list[OvfController] = []
    for item in items:
        rtype = ctx.int(item.fields.get("ResourceType"), "ResourceType", item.el)
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


def _disk_item(
    ctx: _Ctx,
    item: _Item,
    table: dict[str, OvfDisk],
    controllers: dict[str, OvfController],
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
    controller = controllers.get(item.fields.get("Parent", ""))
    unit = ctx.int(item.fields.get("AddressOnParent"), "AddressOnParent", item.el)
    if unit is None:
        unit = sum(1 for d in earlier if d.controller == controller)
    return OvfDiskAttachment(disk, controller, unit, item.fields.get("ElementName", ""))


def _removable(
    ctx: _Ctx,
    item: _Item,
    rtype: int,
    controllers: dict[str, OvfController],
    files: dict[str, OvfFile],
) -> Removable:
    controller = controllers.get(item.fields.get("Parent", ""))
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


def normalise_mac(text: str | None) -> str | None:
    """A MAC in lower-case colon form; None for anything that is not 12 hex digits."""
    if not text:
        return None
    digits = re.sub(r"[:\-.\s]", "", text)
    if not re.fullmatch(r"[0-9A-Fa-f]{12}", digits):
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).lower()


def _nic(item: _Item) -> Nic:
    sub = (item.fields.get("ResourceSubType") or "").lower()
    return Nic(
        mac=normalise_mac(item.fields.get("Address")),
        model=_NIC_MODELS.get(sub, sub or "unknown"),
        network=item.fields.get("Connection"),
    )


def _vbox_nics(machine: etree._Element, nics: list[Nic]) -> list[Nic]:
    """Fill MACs (and unnamed models) from VirtualBox's own settings: its Items carry neither.
    Its enabled adapters, in slot order, are the Items in document order."""
    adapters = [
        a
        for a in machine.iter()
        if isinstance(a.tag, str)
        and _local(a) == "Adapter"
        and (a.get("enabled") or "true").lower() == "true"
    ]
    adapters.sort(key=lambda a: int(a.get("slot", "0")) if a.get("slot", "0").isdigit() else 0)
    if len(adapters) != len(nics):
        return nics
    merged = []
    for nic, adapter in zip(nics, adapters, strict=True):
        model = nic.model
        if model == "unknown":
            model = _VBOX_NIC_TYPES.get((adapter.get("type") or "").lower(), model)
        merged.append(Nic(nic.mac or normalise_mac(adapter.get("MACAddress")), model, nic.network))
    return merged


def _memory(ctx: _Ctx, item: _Item) -> int:
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


def _firmware(
    config: dict[str, str], machine: etree._Element | None
) -> tuple[Firmware, bool | None]:
    fw = config.get("firmware", "").lower()
    firmware = {"efi": Firmware.UEFI, "bios": Firmware.BIOS}.get(fw, Firmware.UNKNOWN)
    if firmware is Firmware.UNKNOWN and machine is not None:
        found = [e for e in machine.iter() if isinstance(e.tag, str) and _local(e) == "Firmware"]
        vbox = (found[0].get("type") or "").upper() if found else ""
        if vbox.startswith("EFI"):
            firmware = Firmware.UEFI
        elif vbox == "BIOS":
            firmware = Firmware.BIOS
    secure = config.get("uefi.secureBoot.enabled") or config.get("bootOptions.efiSecureBootEnabled")
    return firmware, (secure.lower() == "true") if secure else None


def _producer(root: etree._Element, machine: etree._Element | None, vs_type: str) -> str:
    if machine is not None or vs_type.lower().startswith("virtualbox"):
        return "virtualbox"
    if VMW_NS in root.nsmap.values() or vs_type.lower().startswith("vmx"):
        return "vmware"
    return "unknown"


# --- the manifest ------------------------------------------------------------------------------

_MF_LINE = re.compile(
    r"(?P<alg>SHA1|SHA256|SHA512)\s*\((?P<name>.+)\)\s*=\s*(?P<digest>[0-9A-Fa-f]+)", re.IGNORECASE
)
_DIGEST_HEX = {"sha1": 40, "sha256": 64, "sha512": 128}


def parse_manifest(data: bytes, *, path: str) -> tuple[ManifestEntry, ...]:
    """Parse a .mf: `SHA256(name)= hex` lines (ovftool), `SHA1 (name) = hex` (others)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise OvfError(path, f"{len(data)} bytes is far too large for a manifest")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OvfError(path, f"not a text manifest (byte {exc.start})") from None
    entries: list[ManifestEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _MF_LINE.fullmatch(line.strip())
        if match is None:
            raise OvfError(path, f"line {number}: expected SHA256(file)= hex, got: {line.strip()}")
        alg = match.group("alg").lower()
        digest = match.group("digest").lower()
        if len(digest) != _DIGEST_HEX[alg]:
            raise OvfError(
                path,
                f"line {number}: a {alg.upper()} digest has {_DIGEST_HEX[alg]} hex digits, "
                f"not {len(digest)}",
            )
        entries.append(ManifestEntry(alg, match.group("name").strip(), digest))
    return tuple(entries)
