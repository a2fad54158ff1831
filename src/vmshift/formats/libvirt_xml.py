"""libvirt domain XML: emit the converted guest's definition, and parse a source guest's.

Both directions live here so that whatever vmshift writes it can read back (the tests
round-trip). The emitter builds the machine from GuestCaps, never from the source's devices:
a VMware guest's pvscsi disk becomes whatever bus the converted guest can boot from. Only the
things a user recognises survive from the source: name, memory, CPUs, MAC addresses, networks.

The parser reads untrusted XML (a file someone hands us, or a libvirt daemon's answer): no
entities, no DTD, no network, and a document type declaration is refused outright because
libvirt never writes one.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from vmshift.errors import SourceError, TargetError
from vmshift.model.caps import GuestCaps
from vmshift.model.vm import (
    Controller,
    CpuTopology,
    DiskEndpoint,
    Firmware,
    Nic,
    Removable,
    SourceDisk,
    SourceVM,
)
from vmshift.targets.base import NetworkMap

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"

# GuestCaps.block_bus -> libvirt's <target bus>.
_TARGET_BUS = {"virtio-blk": "virtio", "virtio-scsi": "scsi", "sata": "sata", "ide": "ide"}
# <target bus> -> the device name prefix users and guests expect for it.
_DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd", "fdc": "fd"}


def drive_letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa: the suffix Linux gives the index-th disk of a kind."""
    letters = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return letters


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    elem = etree.SubElement(parent, tag, attrs)
    if text is not None:
        elem.text = text
    return elem


def effective_topology(vm: SourceVM) -> CpuTopology | None:
    """The source topology if it accounts for exactly vm.vcpus, adjusted or dropped if not.

    libvirt refuses a topology whose product differs from <vcpu>; sources get this wrong
    (a VMX with numvcpus=6 and coresPerSocket=4), so keep the cores and threads per socket
    and recompute the sockets, or fall back to libvirt's default of one core per socket.
    """
    topo = vm.topology
    if topo is None or vm.vcpus < 1:
        return None
    if topo.sockets * topo.cores * topo.threads == vm.vcpus:
        return topo
    per_socket = topo.cores * topo.threads
    if per_socket > 0 and vm.vcpus % per_socket == 0:
        return CpuTopology(vm.vcpus // per_socket, topo.cores, topo.threads)
    return None


def removable_bus(kind: str, machine: str) -> str:
    """Where an empty CD-ROM or floppy goes: q35 has no IDE controller, i440fx has one."""
    if kind == "floppy":
        return "fdc"
    return "sata" if machine == "q35" else "ide"


def domain_xml(
    vm: SourceVM,
    caps: GuestCaps,
    disks: Sequence[tuple[str | Path, str]],
    *,
    name: str,
    networks: NetworkMap,
    domain_type: str,
    os_type: str | None = None,
    uuid: str | None = None,
) -> str:
    """The libvirt <domain> for the converted guest; disks are (path, format) in boot order.

    domain_type is "kvm" or "qemu" (TCG); os_type ("linux", "windows") picks the clock.
    """
    bus = _TARGET_BUS.get(caps.block_bus)
    if bus is None:
        raise TargetError(f"cannot describe disks on bus {caps.block_bus!r} in libvirt XML")
    if bus == "ide" and caps.machine == "q35":
        raise TargetError("IDE disks need machine type 'pc': q35 has no IDE controller")
    windows = os_type == "windows"
    kvm = domain_type == "kvm"

    root = etree.Element("domain", type=domain_type)
    _sub(root, "name", name)
    _sub(root, "uuid", uuid or str(uuidlib.uuid4()))
    kib = str(-(-vm.memory // 1024))
    _sub(root, "memory", kib, unit="KiB")
    _sub(root, "currentMemory", kib, unit="KiB")
    _sub(root, "vcpu", str(vm.vcpus), placement="static")

    os_attrs = {"firmware": "efi"} if caps.firmware is Firmware.UEFI else {}
    os_elem = _sub(root, "os", **os_attrs)
    _sub(os_elem, "type", "hvm", arch=caps.arch, machine=caps.machine)
    if caps.firmware is Firmware.UEFI:
        # Secure boot off: the source may have run unsigned kernels or drivers, and the keys
        # libvirt would enroll are not the ones the source firmware trusted.
        fw = _sub(os_elem, "firmware")
        _sub(fw, "feature", enabled="no", name="enrolled-keys")
        _sub(fw, "feature", enabled="no", name="secure-boot")
    _sub(os_elem, "boot", dev="hd")

    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if caps.arch == "i686":
        _sub(features, "pae")
    if windows and kvm:
        # Hyper-V enlightenments need KVM; they keep Windows from burning CPU on spinlocks.
        hv = _sub(features, "hyperv", mode="custom")
        _sub(hv, "relaxed", state="on")
        _sub(hv, "vapic", state="on")
        _sub(hv, "spinlocks", state="on", retries="8191")

    # host-model under KVM: guests built for x86-64-v2 and later (RHEL 9) do not boot on
    # libvirt's default CPU model. Under TCG "maximum" plays that role.
    cpu = _sub(root, "cpu", mode="host-model" if kvm else "maximum", check="none")
    topo = effective_topology(vm)
    if topo is not None:
        _sub(
            cpu,
            "topology",
            sockets=str(topo.sockets),
            dies="1",
            cores=str(topo.cores),
            threads=str(topo.threads),
        )

    # Windows keeps the hardware clock in local time; everything else in UTC.
    clock = _sub(root, "clock", offset="localtime" if windows else "utc")
    _sub(clock, "timer", name="rtc", tickpolicy="catchup")
    _sub(clock, "timer", name="pit", tickpolicy="delay")
    _sub(clock, "timer", name="hpet", present="no")
    if windows and kvm:
        _sub(clock, "timer", name="hypervclock", present="yes")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "restart")

    devices = _sub(root, "devices")
    used: dict[str, int] = {}

    def next_dev(target_bus: str) -> str:
        prefix = _DEV_PREFIX[target_bus]
        index = used.get(prefix, 0)
        used[prefix] = index + 1
        return prefix + drive_letters(index)

    if bus == "scsi":
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for path, fmt in disks:
        source = str(path)
        block = source.startswith("/dev/")
        disk = _sub(devices, "disk", type="block" if block else "file", device="disk")
        _sub(disk, "driver", name="qemu", type=fmt)
        _sub(disk, "source", **({"dev": source} if block else {"file": source}))
        _sub(disk, "target", dev=next_dev(bus), bus=bus)
    for removable in vm.removables:
        rbus = removable_bus(removable.kind, caps.machine)
        drive = _sub(devices, "disk", type="file", device=removable.kind)
        _sub(drive, "driver", name="qemu", type="raw")
        _sub(drive, "target", dev=next_dev(rbus), bus=rbus)
        _sub(drive, "readonly")

    for nic in vm.nics:
        kind, target = networks.map(nic.mac, nic.network)
        iface = _sub(devices, "interface", type=kind)
        if nic.mac:
            _sub(iface, "mac", address=nic.mac.lower())
        _sub(iface, "source", **{kind: target})
        _sub(iface, "model", type=caps.net_model)

    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if caps.virtio_serial:
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    _sub(devices, "input", type="tablet", bus="usb")
    graphics = _sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    _sub(graphics, "listen", type="address", address="127.0.0.1")
    video = _sub(devices, "video")
    _sub(video, "model", type=caps.video)
    if caps.virtio_rng:
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="virtio" if caps.virtio_balloon else "none")

    return etree.tostring(root, pretty_print=True, encoding="unicode")


# ---- parsing ---------------------------------------------------------------------------------


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


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


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
        root = etree.fromstring(data, _parser())
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
    return Domain(
        name=name,
        uuid=(root.findtext("uuid") or "").strip() or None,
        domain_type=root.get("type", ""),
        memory=_memory(root, where),
        vcpus=_int(root.findtext("vcpu") or "1", "<vcpu>", where),
        topology=_topology(root, where),
        firmware=_firmware(root),
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        disks=tuple(_disk(d) for d in root.iterfind("devices/disk")),
        nics=tuple(_nic(n) for n in root.iterfind("devices/interface")),
        scsi_model=scsi.get("model") if scsi is not None else None,
    )
