"""The throwaway domain a boot check runs: the target's own XML, made safe to start here.

What changes, and why, from the XML the target wrote:
- every disk is a fresh qcow2 overlay whose backing file is the output disk, so the boot
  writes nothing the user keeps;
- every NIC keeps its model and MAC but is wired to a UDP socket pair on 127.0.0.1 (qemu's
  socket netdev): the guest reaches no network, and the check can talk ARP to it;
- the name is a private one, the uuid is dropped, the NVRAM and channel sockets (the guest
  agent's) live in the check's directory, graphics are dropped (nothing listens);
- only where this host cannot run KVM: the domain type becomes qemu (TCG), a host-model CPU
  becomes "maximum", and the Hyper-V enlightenments, which need KVM, are dropped. The XML the
  target keeps is not touched: it describes the target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from vmshift.errors import TargetError
from vmshift.formats.safexml import untrusted_parser


@dataclass(frozen=True)
class DiskImage:
    path: str  # a file or a block device
    format: str


@dataclass(frozen=True)
class NicLink:
    """One NIC's wiring: qemu sends the guest's frames to host_port, where the check listens,
    and takes frames for the guest on guest_port."""

    mac: str | None
    host_port: int
    guest_port: int


def _parse(xml: str) -> etree._Element:
    try:
        return etree.fromstring(xml.encode(), untrusted_parser())
    except etree.XMLSyntaxError as exc:
        raise TargetError(f"the target's domain XML cannot be read: {exc}") from exc


def disk_images(xml: str) -> list[DiskImage]:
    """The target's disks, in the order the XML lists them."""
    images = []
    for disk in _parse(xml).iterfind("devices/disk[@device='disk']"):
        source = disk.find("source")
        path = None if source is None else source.get("file") or source.get("dev")
        if path is None:
            raise TargetError("the target's domain XML has a disk without a source")
        driver = disk.find("driver")
        images.append(DiskImage(path, "raw" if driver is None else driver.get("type", "raw")))
    return images


def nic_macs(xml: str) -> list[str | None]:
    macs = []
    for iface in _parse(xml).iterfind("devices/interface"):
        mac = iface.find("mac")
        macs.append(None if mac is None else mac.get("address"))
    return macs


def verification_xml(
    xml: str,
    overlays: Sequence[Path],
    links: Sequence[NicLink],
    *,
    name: str,
    private_dir: Path,
    tcg: bool,
) -> str:
    """The target's XML with overlays for its disks and private NICs (see the module doc)."""
    root = _parse(xml)
    _set_text(root, "name", name)
    _drop(root, "uuid")
    os_elem = root.find("os")
    if os_elem is not None:
        _drop(os_elem, "nvram")
        if _uefi(os_elem):
            etree.SubElement(os_elem, "nvram").text = str(private_dir / "VARS.fd")

    disks = root.findall("devices/disk[@device='disk']")
    if len(disks) != len(overlays):
        raise ValueError(f"{len(disks)} disks, {len(overlays)} overlays")
    for disk, overlay in zip(disks, overlays, strict=True):
        disk.set("type", "file")
        _drop(disk, "source")
        _drop(disk, "driver")
        disk.insert(0, etree.Element("source", file=str(overlay)))
        disk.insert(0, etree.Element("driver", name="qemu", type="qcow2"))

    devices = root.find("devices")
    assert devices is not None  # every disk sits under it
    ifaces = devices.findall("interface")
    if len(ifaces) != len(links):
        raise ValueError(f"{len(ifaces)} NICs, {len(links)} links")
    for iface, link in zip(ifaces, links, strict=True):
        model = iface.find("model")
        replacement = etree.Element("interface", type="udp")
        if link.mac:
            etree.SubElement(replacement, "mac", address=link.mac)
        source = etree.SubElement(
            replacement, "source", address="127.0.0.1", port=str(link.host_port)
        )
        etree.SubElement(source, "local", address="127.0.0.1", port=str(link.guest_port))
        if model is not None:
            replacement.append(model)
        devices.replace(iface, replacement)
    _drop(devices, "graphics")
    # Sockets of channels (the guest agent's) in the check's directory: libvirt's own place
    # can be too deep for a socket's 107-byte path.
    for i, channel in enumerate(devices.findall("channel[@type='unix']")):
        _drop(channel, "source")
        channel.insert(0, etree.Element("source", mode="bind", path=str(private_dir / f"ch{i}")))

    if tcg:
        _for_tcg(root)
    return etree.tostring(root, encoding="unicode")


def _uefi(os_elem: etree._Element) -> bool:
    return os_elem.get("firmware") == "efi" or os_elem.find("loader") is not None


def _drop(parent: etree._Element, path: str) -> None:
    """Remove every element path finds under parent (path may reach below its children)."""
    for elem in parent.findall(path):
        owner = elem.getparent()
        if owner is not None:
            owner.remove(elem)


def _set_text(root: etree._Element, tag: str, text: str) -> None:
    elem = root.find(tag)
    if elem is None:
        elem = etree.SubElement(root, tag)
    elem.text = text


def _for_tcg(root: etree._Element) -> None:
    root.set("type", "qemu")
    cpu = root.find("cpu")
    if cpu is not None and cpu.get("mode") in ("host-model", "host-passthrough"):
        cpu.set("mode", "maximum")
        _drop(cpu, "model")
    _drop(root, "features/hyperv")
    _drop(root, "clock/timer[@name='hypervclock']")
