"""libvirt domain XML in: parse a source guest's <domain> (-i libvirtxml, -i libvirt).

The counterpart of libvirt_xml.py (the emitter): whatever vmshift writes it can read back, and
the tests round-trip through both.

The XML is untrusted (a file someone hands us, or a libvirt daemon's answer): no entities, no
DTD, no network, and a document type declaration is refused outright because libvirt never
writes one. Values that only describe the guest (the CPU model, feature names) are checked
for shape here, so no target has to wonder whether one could break the XML or a qemu option
list it is copied into.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from vmshift.errors import SourceError
from vmshift.formats.genid import normalise_genid
from vmshift.formats.safexml import untrusted_parser
from vmshift.model.vm import (
    Controller,
    CpuFeature,
    CpuModel,
    CpuTopology,
    DiskEndpoint,
    Firmware,
    Nic,
    Removable,
    SourceDisk,
    SourceVM,
)

# libvirt's <feature policy> values; a feature without one is "require".
CPU_FEATURE_POLICIES = ("force", "require", "optional", "disable", "forbid")
# What a CPU model, vendor or feature name looks like (Skylake-Client-IBRS, sse4.2, avx512_bf16).
CPU_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# <cpu mode> values that name no model of their own: the host's CPU, or qemu's maximum.
_HOST_CPU_MODES = ("host-model", "host-passthrough", "maximum")


@dataclass(frozen=True)
class DomainDisk:
    """One <disk> as the XML states it; sources decide how to reach it."""

    device: str  # disk, cdrom, floppy, lun
    source_type: str  # file, block, volume, network, ...
    path: str | None  # <source file> or <source dev>; None for empty drives and volumes
    format: str | None  # <driver type>, None when the XML does not say
    bus: str  # <target bus>
    dev: str  # <target dev>
    pool: str | None = None  # for source_type "volume"
    volume: str | None = None


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str | None
    domain_type: str
    memory: int  # bytes
    vcpus: int
    topology: CpuTopology | None
    firmware: Firmware
    arch: str | None
    machine: str | None
    disks: tuple[DomainDisk, ...]
    nics: tuple[Nic, ...]
    scsi_model: str | None  # the first scsi controller's model (virtio-scsi, lsilogic ...)
    genid: str | None = None  # libvirt's form; None also for <genid/> (libvirt makes one up)
    cpu: CpuModel | None = None  # a custom-mode <cpu> that names something
    features: tuple[str, ...] = ()  # the <features> children: acpi, apic, pae, hyperv ...
    secure_boot: bool = False  # UEFI with secure boot enforced
    warnings: tuple[str, ...] = ()  # what the parser read past

    def source_vm(
        self, endpoints: Sequence[DiskEndpoint], *, origin: str, source_file: str | None
    ) -> SourceVM:
        """The SourceVM, given one endpoint per hard disk (device 'disk'), in XML order."""
        hard = [d for d in self.disks if d.device == "disk"]
        if len(hard) != len(endpoints):
            raise ValueError("one endpoint per hard disk is needed")
        disks = tuple(
            SourceDisk(
                endpoint=ep,
                controller=self._controller(d.bus),
                unit=_dev_index(d.dev),
                controller_model=self.scsi_model if d.bus == "scsi" else None,
                name=d.dev,
            )
            for d, ep in zip(hard, endpoints, strict=True)
        )
        removables = tuple(
            Removable(
                kind=d.device,
                controller=self._controller(d.bus),
                unit=_dev_index(d.dev),
                source_path=d.path,
            )
            for d in self.disks
            if d.device in ("cdrom", "floppy")
        )
        return SourceVM(
            name=self.name,
            memory=self.memory,
            vcpus=self.vcpus,
            topology=self.topology,
            firmware=self.firmware,
            disks=disks,
            removables=removables,
            nics=self.nics,
            origin=origin,
            source_file=source_file,
            genid=self.genid,
            secure_boot=self.secure_boot,
            cpu=self.cpu,
            features=self.features,
            warnings=self.warnings,
        )

    def _controller(self, bus: str) -> Controller:
        if bus == "scsi":
            return Controller.VIRTIO_SCSI if self.scsi_model == "virtio-scsi" else Controller.SCSI
        return _BUS_CONTROLLER.get(bus, Controller.UNKNOWN)


_BUS_CONTROLLER = {
    "virtio": Controller.VIRTIO_BLK,
    "sata": Controller.SATA,
    "ide": Controller.IDE,
    "nvme": Controller.NVME,
    "fdc": Controller.UNKNOWN,
}

_UNITS = {
    "b": 1, "bytes": 1,
    "kb": 1000, "k": 1024, "kib": 1024,
    "mb": 1000**2, "m": 1024**2, "mib": 1024**2,
    "gb": 1000**3, "g": 1024**3, "gib": 1024**3,
    "tb": 1000**4, "t": 1024**4, "tib": 1024**4,
}  # fmt: skip


def _dev_index(dev: str) -> int:
    """vdb -> 1, sdaa -> 26: the unit a device name implies."""
    match = re.fullmatch(r"[a-z]{2}([a-z]+)", dev)
    if match is None:
        return 0
    index = 0
    for ch in match.group(1):
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def _int(text: str | None, what: str, where: str) -> int:
    try:
        return int((text or "").strip())
    except ValueError:
        raise SourceError(f"{where}: {what} is not a number: {text!r}") from None


def _memory(root: etree._Element, where: str) -> int:
    elem = root.find("memory")
    if elem is None:
        elem = root.find("currentMemory")
    if elem is None:
        raise SourceError(f"{where}: the domain has no <memory>")
    unit = elem.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise SourceError(f"{where}: unknown memory unit {elem.get('unit')!r}")
    return _int(elem.text, "<memory>", where) * _UNITS[unit]


def _firmware(root: etree._Element) -> Firmware:
    os_elem = root.find("os")
    if os_elem is None:
        return Firmware.BIOS
    fw = os_elem.get("firmware")
    if fw == "efi":
        return Firmware.UEFI
    if fw == "bios":
        return Firmware.BIOS
    loader = os_elem.find("loader")
    if loader is not None:
        # A pflash loader is how UEFI was configured before firmware autoselection existed.
        text = (loader.text or "").lower()
        if loader.get("type") == "pflash" or any(k in text for k in ("ovmf", "edk2", "efi")):
            return Firmware.UEFI
    return Firmware.BIOS


def _secure_boot(root: etree._Element) -> bool:
    """Secure boot as libvirt spells it: a secure loader, or the autoselection feature."""
    if root.find("os/loader[@secure='yes']") is not None:
        return True
    return root.find("os/firmware/feature[@name='secure-boot'][@enabled='yes']") is not None


def _topology(root: etree._Element, where: str) -> CpuTopology | None:
    elem = root.find("cpu/topology")
    if elem is None:
        return None
    dies = _int(elem.get("dies", "1"), "dies", where)
    return CpuTopology(
        sockets=_int(elem.get("sockets"), "sockets", where) * dies,
        cores=_int(elem.get("cores"), "cores", where),
        threads=_int(elem.get("threads", "1"), "threads", where),
    )


def _cpu(root: etree._Element, warnings: list[str]) -> CpuModel | None:
    """The named CPU of a custom-mode <cpu>; None when it names nothing to carry over."""
    elem = root.find("cpu")
    if elem is None or elem.get("mode", "custom") in _HOST_CPU_MODES:
        return None

    def name(text: str | None, what: str) -> str | None:
        value = (text or "").strip()
        if not value:
            return None
        if CPU_NAME.fullmatch(value) is None:
            warnings.append(f"<cpu> {what} {value[:80]!r} is not a CPU name; left out")
            return None
        return value

    features = []
    for feat in elem.iterfind("feature"):
        fname = name(feat.get("name"), "feature")
        policy = feat.get("policy", "require")
        if fname is None:
            continue
        if policy not in CPU_FEATURE_POLICIES:
            warnings.append(f"<cpu> feature {fname}: unknown policy {policy[:40]!r}; left out")
            continue
        features.append(CpuFeature(fname, policy))
    model = name(elem.findtext("model"), "model")
    vendor = name(elem.findtext("vendor"), "vendor")
    if model is None and vendor is None and not features:
        return None
    return CpuModel(vendor=vendor, model=model, features=tuple(features))


def _genid(root: etree._Element, warnings: list[str]) -> str | None:
    text = (root.findtext("genid") or "").strip()
    if not text:
        return None  # absent, or <genid/>: libvirt generates a new one at every start
    genid = normalise_genid(text)
    if genid is None:
        warnings.append(f"<genid> {text[:80]!r} is not a generation id; left out")
    return genid


def _disk(elem: etree._Element) -> DomainDisk:
    source_type = elem.get("type", "file")
    src = elem.find("source")
    driver = elem.find("driver")
    target = elem.find("target")
    path = None
    if src is not None:
        path = src.get("file") if source_type == "file" else src.get("dev")
    return DomainDisk(
        device=elem.get("device", "disk"),
        source_type=source_type,
        path=path if source_type in ("file", "block") else None,
        format=driver.get("type") if driver is not None else None,
        bus=target.get("bus", "") if target is not None else "",
        dev=target.get("dev", "") if target is not None else "",
        pool=src.get("pool") if src is not None and source_type == "volume" else None,
        volume=src.get("volume") if src is not None and source_type == "volume" else None,
    )


def _nic(elem: etree._Element) -> Nic:
    kind = elem.get("type", "")
    mac = elem.find("mac")
    model = elem.find("model")
    src = elem.find("source")
    network: str | None = None
    if src is not None and kind == "network":
        network = src.get("network")
    elif src is not None and kind == "bridge":
        network = src.get("bridge")
    address = mac.get("address", "").lower() if mac is not None else ""
    return Nic(
        mac=address or None,
        model=model.get("type", "") if model is not None else "",
        network=network,
        network_type="bridge" if kind == "bridge" else "network",
    )


def parse_domain(xml_text: str | bytes, source_file: str | None = None) -> Domain:
    """Parse a libvirt <domain>; raise SourceError naming source_file if it is not one."""
    where = source_file or "libvirt XML"
    data = xml_text.encode() if isinstance(xml_text, str) else xml_text
    try:
        root = etree.fromstring(data, untrusted_parser())
    except etree.XMLSyntaxError as exc:
        raise SourceError(f"{where}: not well-formed XML: {exc}") from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise SourceError(f"{where}: refusing XML with a document type declaration")
    if root.tag != "domain":
        raise SourceError(f"{where}: not a libvirt domain (root element <{root.tag}>)")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise SourceError(f"{where}: the domain has no <name>")
    os_type = root.find("os/type")
    scsi = root.find("devices/controller[@type='scsi']")
    firmware = _firmware(root)
    warnings: list[str] = []
    return Domain(
        name=name,
        uuid=(root.findtext("uuid") or "").strip() or None,
        domain_type=root.get("type", ""),
        memory=_memory(root, where),
        vcpus=_int(root.findtext("vcpu") or "1", "<vcpu>", where),
        topology=_topology(root, where),
        firmware=firmware,
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        disks=tuple(_disk(d) for d in root.iterfind("devices/disk")),
        nics=tuple(_nic(n) for n in root.iterfind("devices/interface")),
        scsi_model=scsi.get("model") if scsi is not None else None,
        genid=_genid(root, warnings),
        cpu=_cpu(root, warnings),
        features=tuple(str(f.tag) for f in root.iterfind("features/*")),
        secure_boot=firmware is Firmware.UEFI and _secure_boot(root),
        warnings=tuple(f"{where}: {w}" for w in warnings),
    )
