"""libvirt domain XML: golden files for what we emit (formats/libvirt_xml.py), schema
validation, and parsing back (formats/libvirt_domain.py).

The golden files are written by hand from a checked run after an intended change, never by
the test that compares them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from vmshift.errors import SourceError, TargetError
from vmshift.formats.libvirt_domain import parse_domain
from vmshift.formats.libvirt_xml import domain_xml, effective_topology
from vmshift.model.caps import GuestCaps
from vmshift.model.devnames import drive_letters, scsi_disk_name
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

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
UUID = re.compile(r"<uuid>[0-9a-f-]{36}</uuid>")
MASKED = "<uuid>00000000-0000-0000-0000-000000000000</uuid>"

NETWORKS = NetworkMap(
    networks={"VM Network": "default"},
    bridges={"DMZ": "br-dmz"},
    macs={"00:50:56:00:00:03": ("network", "isolated")},
)


def source_vm(firmware: Firmware = Firmware.BIOS) -> SourceVM:
    def disk(path: str, unit: int) -> SourceDisk:
        ep = DiskEndpoint(uri=path, format="vmdk", virtual_size=8 << 30)
        return SourceDisk(endpoint=ep, controller=Controller.SCSI, unit=unit, name=f"sd{unit}")

    return SourceVM(
        name="web01",
        memory=4 << 30,
        vcpus=4,
        topology=CpuTopology(sockets=2, cores=2),
        firmware=firmware,
        disks=(disk("/src/web01.vmdk", 0), disk("/src/web01_1.vmdk", 1)),
        removables=(Removable(kind="cdrom", controller=Controller.IDE),),
        nics=(
            Nic(mac="00:50:56:AA:BB:01", model="vmxnet3", network="VM Network"),
            Nic(mac="00:50:56:aa:bb:02", model="e1000", network="DMZ"),
            Nic(mac="00:50:56:00:00:03", model="e1000", network="VM Network"),
            Nic(mac=None, model="vmxnet3", network="unmapped"),
        ),
        origin="vmware",
    )


VIRTIO_CAPS = GuestCaps(
    block_bus="virtio-blk",
    net_model="virtio",
    video="virtio",
    machine="q35",
    firmware=Firmware.BIOS,
    arch="x86_64",
    virtio_rng=True,
    virtio_balloon=True,
    virtio_serial=True,
)
FALLBACK_CAPS = GuestCaps(
    block_bus="sata",
    net_model="e1000",
    video="vga",
    machine="q35",
    firmware=Firmware.UEFI,
    arch="x86_64",
)
OUT_DISKS: list[tuple[str | Path, str]] = [
    ("/var/lib/libvirt/images/web01-sda", "raw"),
    ("/var/lib/libvirt/images/web01-sdb", "qcow2"),
]


def bios_virtio() -> str:
    return domain_xml(
        source_vm(),
        VIRTIO_CAPS,
        OUT_DISKS,
        name="web01",
        networks=NETWORKS,
        domain_type="kvm",
        os_type="linux",
    )


def uefi_fallback() -> str:
    return domain_xml(
        source_vm(Firmware.UEFI),
        FALLBACK_CAPS,
        OUT_DISKS,
        name="web01",
        networks=NETWORKS,
        domain_type="qemu",
        os_type="windows",
    )


def validate(xml: str, tmp_path: Path) -> None:
    if shutil.which("virt-xml-validate") is None:
        pytest.skip("virt-xml-validate is not installed (libvirt-clients)")
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    proc = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout + xml


@pytest.mark.parametrize(
    ("golden", "build"),
    [("libvirt-bios-virtio.xml", bios_virtio), ("libvirt-uefi-fallback.xml", uefi_fallback)],
)
def test_golden(golden: str, build: Callable[[], str], tmp_path: Path) -> None:
    xml = build()
    assert len(UUID.findall(xml)) == 1
    assert UUID.sub(MASKED, xml) == (GOLDEN / golden).read_text()
    validate(xml, tmp_path)


def test_uuid_is_fresh() -> None:
    assert UUID.findall(bios_virtio()) != UUID.findall(bios_virtio())


CAPS_VARIANTS = [
    VIRTIO_CAPS,
    FALLBACK_CAPS,
    GuestCaps("virtio-scsi", "virtio", "qxl", "q35", Firmware.UEFI, "x86_64", virtio_rng=True),
    GuestCaps("ide", "rtl8139", "cirrus", "pc", Firmware.BIOS, "i686"),
    GuestCaps("sata", "e1000e", "vga", "pc", Firmware.BIOS, "x86_64", virtio_serial=True),
]


@pytest.mark.parametrize("caps", CAPS_VARIANTS, ids=lambda c: f"{c.block_bus}-{c.machine}")
@pytest.mark.parametrize("domain_type", ["kvm", "qemu"])
@pytest.mark.parametrize("os_type", ["linux", "windows"])
def test_every_variant_validates(
    caps: GuestCaps, domain_type: str, os_type: str, tmp_path: Path
) -> None:
    vm = source_vm()
    vm = replace(vm, removables=(*vm.removables, Removable("floppy", Controller.UNKNOWN)))
    xml = domain_xml(
        vm,
        caps,
        [*OUT_DISKS, ("/dev/vg0/lv0", "raw")],
        name="g",
        networks=NETWORKS,
        domain_type=domain_type,
        os_type=os_type,
    )
    validate(xml, tmp_path)


def test_roundtrip_of_emitted_xml() -> None:
    vm = source_vm()
    dom = parse_domain(bios_virtio(), "emitted")
    assert (dom.name, dom.memory, dom.vcpus, dom.domain_type) == ("web01", 4 << 30, 4, "kvm")
    assert dom.topology == CpuTopology(2, 2, 1)
    assert dom.firmware is Firmware.BIOS
    assert (dom.arch, dom.machine) == ("x86_64", "q35")
    hard = [d for d in dom.disks if d.device == "disk"]
    assert [(d.path, d.format, d.bus, d.dev) for d in hard] == [
        ("/var/lib/libvirt/images/web01-sda", "raw", "virtio", "vda"),
        ("/var/lib/libvirt/images/web01-sdb", "qcow2", "virtio", "vdb"),
    ]
    assert [(d.device, d.bus, d.dev, d.path) for d in dom.disks if d.device != "disk"] == [
        ("cdrom", "sata", "sda", None)
    ]
    assert [(n.mac, n.model, n.network, n.network_type) for n in dom.nics] == [
        ("00:50:56:aa:bb:01", "virtio", "default", "network"),
        ("00:50:56:aa:bb:02", "virtio", "br-dmz", "bridge"),
        ("00:50:56:00:00:03", "virtio", "isolated", "network"),
        (None, "virtio", "default", "network"),
    ]
    assert len(dom.nics) == len(vm.nics)

    eps = [DiskEndpoint(str(p), f, 1 << 30) for p, f in OUT_DISKS]
    back = dom.source_vm(eps, origin="libvirt", source_file="emitted")
    assert [(d.controller, d.unit, d.name) for d in back.disks] == [
        (Controller.VIRTIO_BLK, 0, "vda"),
        (Controller.VIRTIO_BLK, 1, "vdb"),
    ]
    assert back.removables == (Removable("cdrom", Controller.SATA, unit=0),)


def test_roundtrip_uefi_and_sata() -> None:
    dom = parse_domain(uefi_fallback())
    assert dom.firmware is Firmware.UEFI
    assert [(d.bus, d.dev) for d in dom.disks] == [("sata", f"sd{x}") for x in "abc"]
    assert {n.model for n in dom.nics} == {"e1000"}


def test_xml_special_characters_survive() -> None:
    vm = replace(source_vm(), nics=(Nic("00:11:22:33:44:55", "e1000", "a&b"),))
    nets = NetworkMap(networks={"a&b": "<net> & 'q'"})
    xml = domain_xml(
        vm,
        VIRTIO_CAPS,
        [("/d/it's & <x>.raw", "raw")],
        name="a&b<c>'\"",
        networks=nets,
        domain_type="qemu",
    )
    dom = parse_domain(xml)
    assert dom.name == "a&b<c>'\""
    assert dom.disks[0].path == "/d/it's & <x>.raw"
    assert dom.nics[0].network == "<net> & 'q'"


def test_ide_on_q35_is_refused() -> None:
    caps = GuestCaps("ide", "e1000", "vga", "q35", Firmware.BIOS, "x86_64")
    with pytest.raises(TargetError, match="IDE"):
        domain_xml(source_vm(), caps, OUT_DISKS, name="g", networks=NETWORKS, domain_type="qemu")


def test_topology_is_kept_consistent_with_vcpus() -> None:
    def vm(vcpus: int, topo: CpuTopology | None) -> SourceVM:
        return replace(source_vm(), vcpus=vcpus, topology=topo)

    assert effective_topology(vm(4, CpuTopology(2, 2))) == CpuTopology(2, 2)
    assert effective_topology(vm(8, CpuTopology(1, 4))) == CpuTopology(2, 4)
    assert effective_topology(vm(6, CpuTopology(1, 4))) is None
    assert effective_topology(vm(4, None)) is None
    xml = domain_xml(
        vm(6, CpuTopology(1, 4)),
        VIRTIO_CAPS,
        OUT_DISKS,
        name="g",
        networks=NETWORKS,
        domain_type="qemu",
    )
    assert "<topology" not in xml


def test_drive_letters() -> None:
    """Like the kernel counts disks: past sdz comes sdaa (the appliance's 27th disk too)."""
    assert [drive_letters(i) for i in (0, 1, 25, 26, 27, 51, 52, 701, 702)] == [
        "a", "b", "z", "aa", "ab", "az", "ba", "zz", "aaa",
    ]  # fmt: skip
    assert scsi_disk_name(26) == "sdaa"


HANDWRITTEN = """<?xml version="1.0"?>
<!-- as virsh dumpxml writes it, trimmed -->
<domain type='kvm' id='3'>
  <name>legacy-db</name>
  <uuid>0c8a6d2e-4a62-4f0e-9a8e-4d1b1b1b1b1b</uuid>
  <memory unit='GiB'>3</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static' current='2'>8</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/legacy-db_VARS.fd</nvram>
  </os>
  <cpu mode='host-passthrough'>
    <topology sockets='1' dies='2' cores='2' threads='2'/>
  </cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/libvirt/images/legacy-db.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/data'/>
      <target dev='sdb' bus='scsi'/>
    </disk>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw'/>
      <source pool='default' volume='logs.img'/>
      <target dev='sdc' bus='sata'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='x'><host name='127.0.0.1' port='10809'/></source>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/install.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type='file' device='floppy'>
      <target dev='fda' bus='fdc'/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='prod'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:AB:CD:EF'/>
      <source bridge='br0'/>
      <model type='e1000e'/>
    </interface>
    <interface type='direct'>
      <source dev='eth0' mode='vepa'/>
    </interface>
    <interface type='user'/>
  </devices>
</domain>
"""


def test_parse_handwritten() -> None:
    dom = parse_domain(HANDWRITTEN, "legacy-db.xml")
    assert dom.name == "legacy-db"
    assert dom.uuid == "0c8a6d2e-4a62-4f0e-9a8e-4d1b1b1b1b1b"
    assert dom.memory == 3 << 30
    assert dom.vcpus == 8
    assert dom.topology == CpuTopology(sockets=2, cores=2, threads=2)  # dies fold into sockets
    assert dom.firmware is Firmware.UEFI
    assert dom.scsi_model == "virtio-scsi"
    assert [(d.device, d.source_type, d.path, d.format, d.bus, d.dev) for d in dom.disks] == [
        ("disk", "file", "/var/lib/libvirt/images/legacy-db.qcow2", "qcow2", "virtio", "vda"),
        ("disk", "block", "/dev/vg0/data", "raw", "scsi", "sdb"),
        ("disk", "volume", None, "raw", "sata", "sdc"),
        ("disk", "network", None, "raw", "virtio", "vdb"),
        ("cdrom", "file", "/iso/install.iso", None, "sata", "sda"),
        ("floppy", "file", None, None, "fdc", "fda"),
    ]
    assert (dom.disks[2].pool, dom.disks[2].volume) == ("default", "logs.img")
    assert [(n.mac, n.model, n.network, n.network_type) for n in dom.nics] == [
        ("52:54:00:12:34:56", "virtio", "prod", "network"),
        ("52:54:00:ab:cd:ef", "e1000e", "br0", "bridge"),
        (None, "", None, "network"),
        (None, "", None, "network"),
    ]
    eps = [DiskEndpoint(f"/x/{i}", "raw", 1 << 20) for i in range(4)]
    vm = dom.source_vm(eps, origin="libvirt", source_file="legacy-db.xml")
    assert [d.controller for d in vm.disks] == [
        Controller.VIRTIO_BLK,
        Controller.VIRTIO_SCSI,
        Controller.SATA,
        Controller.VIRTIO_BLK,
    ]
    assert [d.unit for d in vm.disks] == [0, 1, 2, 1]
    assert vm.removables == (
        Removable("cdrom", Controller.SATA, unit=0, source_path="/iso/install.iso"),
        Removable("floppy", Controller.UNKNOWN, unit=0),
    )


@pytest.mark.parametrize(
    ("xml", "words"),
    [
        ("<domain><name>x</name", "not well-formed"),
        ("<network><name>x</name></network>", "not a libvirt domain"),
        ("<domain><memory>1</memory></domain>", "no <name>"),
        ("<domain><name>x</name></domain>", "no <memory>"),
        ("<domain><name>x</name><memory unit='parsec'>1</memory></domain>", "memory unit"),
        ("<domain><name>x</name><memory>1</memory><vcpu>two</vcpu></domain>", "not a number"),
        (
            '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            "<domain><name>&b;</name><memory>1</memory></domain>",
            "document type",
        ),
        (
            '<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<domain><name>&x;</name><memory>1</memory></domain>",
            "document type",
        ),
    ],
)
def test_parse_errors(xml: str, words: str) -> None:
    with pytest.raises(SourceError, match=re.escape(words)) as info:
        parse_domain(xml, "bad.xml")
    assert str(info.value).startswith("bad.xml: ")


def test_parse_defaults() -> None:
    dom = parse_domain("<domain type='qemu'><name>m</name><memory>1024</memory></domain>")
    assert (dom.memory, dom.vcpus, dom.topology, dom.firmware) == (1 << 20, 1, None, Firmware.BIOS)
    assert (
        parse_domain(
            "<domain><name>m</name><memory unit='MiB'>1</memory><os firmware='efi'/></domain>"
        ).firmware
        is Firmware.UEFI
    )


def test_each_kind_of_source_connection_takes_its_own_default() -> None:
    """`--network lan --bridge br0`: NICs on source networks go to the network, NICs on source
    bridges (a VMX "bridged" connection) to the bridge."""
    vm = replace(
        source_vm(),
        nics=(
            Nic(mac="00:50:56:aa:bb:01", model="vmxnet3", network="VM Network"),
            Nic(mac=None, model="e1000", network="ethernet1", network_type="bridge"),
        ),
    )
    networks = NetworkMap(default_network="lan", default_bridge="br0")
    xml = domain_xml(vm, VIRTIO_CAPS, OUT_DISKS, name="web01", networks=networks, domain_type="kvm")
    root = etree.fromstring(xml.encode())
    interfaces: list[tuple[str | None, dict[str, str]]] = []
    for iface in root.iterfind("devices/interface"):
        source = iface.find("source")
        assert source is not None
        interfaces.append((iface.get("type"), {str(k): str(v) for k, v in source.attrib.items()}))
    assert interfaces == [("network", {"network": "lan"}), ("bridge", {"bridge": "br0"})]
