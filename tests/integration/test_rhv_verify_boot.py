"""--verify-boot for -o rhv: the libvirt domain of the devices the OVF in the export domain
names (verify/ovf_domain.py), from OVFs RhvTarget really writes into a fake export domain.

Every expected value is computed from what went in (the source VM, GuestCaps, the outputs
setup() returned), never read back from the XML under test. The real boot of such a domain
is the UEFI Debian guest in test_linux_conversion.py.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import vmshift
from tests.export_domain import FakeDomain, make_export_domain
from tests.integration.test_rhv_target import VDSM
from tests.integration.test_targets import CAPS, MIB, NETWORKS, fake_copy, make_vm
from tests.os_samples import LINUX
from vmshift.errors import TargetError
from vmshift.formats.ovirt_ovf import (
    BiosType,
    DisplayType,
    NicType,
    OvfDisk,
    OvfNic,
    OvirtVm,
    render_ovf,
)
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import CpuTopology, Firmware, SourceVM
from vmshift.pipeline import ConversionResult, _boot_plan
from vmshift.targets.base import OutputDisk, TargetOptions, TargetResult
from vmshift.targets.rhv import RhvTarget
from vmshift.verify.domain import NicLink, verification_xml
from vmshift.verify.ovf_domain import ovf_domain_xml


@pytest.fixture
def domain(tmp_path: Path) -> FakeDomain:
    return make_export_domain(tmp_path / "export", owner=VDSM)


def _convert(
    domain: FakeDomain,
    caps: GuestCaps,
    *,
    vm: SourceVM | None = None,
    os_: OperatingSystem = LINUX,
    fmt: str = "raw",
    allocation: str = "sparse",
) -> tuple[RhvTarget, SourceVM, list[OutputDisk], TargetResult]:
    vm = vm or make_vm()
    opts = TargetOptions(storage=str(domain.top), networks=NETWORKS, format=fmt,
                         allocation=allocation)  # fmt: skip
    target = RhvTarget(opts)
    target.check(vm)
    outs = target.setup(vm, [16 * MIB, 32 * MIB][: len(vm.disks)])
    for out in outs:
        fake_copy(out)
    return target, vm, outs, target.finalize(vm, os_, caps, outs)


def _root(result: TargetResult) -> etree._Element:
    assert result.domain_xml is not None
    return etree.fromstring(result.domain_xml.encode())


def _x(elem: etree._Element, path: str) -> str:
    return str(elem.xpath(f"string({path})"))


def _disks(root: etree._Element) -> list[tuple[str, str, str, str]]:
    return [
        (_x(d, "source/@file"), _x(d, "driver/@type"), _x(d, "target/@bus"),
         _x(d, "target/@dev"))
        for d in root.iterfind("devices/disk[@device='disk']")
    ]  # fmt: skip


def _nics(root: etree._Element) -> list[tuple[str, str, str, str]]:
    return [
        (i.get("type", ""), _x(i, "source/@bridge"), _x(i, "mac/@address"),
         _x(i, "model/@type"))
        for i in root.iterfind("devices/interface")
    ]  # fmt: skip


def test_a_qcow2_virtio_bios_guest(domain: FakeDomain) -> None:
    target, vm, outs, result = _convert(domain, CAPS, fmt="qcow2")
    root = _root(result)
    (ovf_path,) = domain.root.glob("master/vms/*/*.ovf")
    # Built from the OVF as it lies in the domain.
    assert result.domain_xml == ovf_domain_xml(ovf_path, domain.root)
    assert result.console_dir == domain.top  # not an image directory of the domain

    assert root.get("type") == "kvm"
    assert root.findtext("name") == vm.name
    assert root.findtext("uuid") == target.vm_id
    assert root.findtext("memory") == str(vm.memory // 1024)
    assert root.findtext("vcpu") == str(vm.vcpus)
    assert vm.topology is not None
    topo = root.find("cpu/topology")
    assert topo is not None
    assert (topo.get("sockets"), topo.get("cores"), topo.get("threads")) == (
        str(vm.topology.sockets), str(vm.topology.cores), str(vm.topology.threads),
    )  # fmt: skip
    assert root.xpath("string(os/type/@machine)") == "q35"  # BiosType q35_sea_bios
    assert root.find("os").get("firmware") is None  # type: ignore[union-attr]
    assert root.find("os/firmware") is None
    assert _disks(root) == [
        (str(out.final_path), "qcow2", "virtio", dev)
        for out, dev in zip(outs, ("vda", "vdb"), strict=True)
    ]
    # NICs on the bridges VDSM names after their logical networks, the MACs in lower case.
    networks = [NETWORKS.map(n.mac, n.network)[1] for n in vm.nics]
    assert _nics(root) == [
        ("bridge", net, (nic.mac or "").lower(), "virtio")
        for nic, net in zip(vm.nics, networks, strict=True)
    ]
    assert root.xpath("string(devices/serial/@type)") == "pty"
    assert root.xpath("string(devices/console/target/@type)") == "serial"
    assert root.xpath("string(devices/video/model/@type)") == "vga"  # CAPS.video is virtio
    assert root.find("devices/rng[@model='virtio']") is not None  # CAPS.virtio_rng
    assert root.xpath("string(devices/memballoon/@model)") == "virtio"  # CAPS.virtio_balloon
    # The OVF names no CD-ROM, whatever the source had.
    assert root.find("devices/disk[@device='cdrom']") is None
    assert vm.removables


def test_raw_uefi_on_ide_is_sata_on_q35(domain: FakeDomain) -> None:
    caps = replace(CAPS, block_bus="sata", net_model="e1000e", firmware=Firmware.UEFI,
                   video="qxl", virtio_rng=False, virtio_balloon=False)  # fmt: skip
    _, vm, outs, result = _convert(domain, caps, fmt="raw", allocation="preallocated")
    root = _root(result)
    # The OVF says IDE; q35 has no IDE controller, so the engine gives it SATA.
    assert _disks(root) == [
        (str(out.final_path), "raw", "sata", dev)
        for out, dev in zip(outs, ("sda", "sdb"), strict=True)
    ]
    # e1000e has no oVirt name: the OVF says e1000, and e1000 is what is booted.
    assert [n[3] for n in _nics(root)] == ["e1000"] * len(vm.nics)
    assert root.find("os").get("firmware") == "efi"  # type: ignore[union-attr]
    assert root.xpath("string(os/firmware/feature[@name='secure-boot']/@enabled)") == "no"
    assert root.xpath("string(devices/video/model/@type)") == "qxl"
    assert root.find("devices/rng") is None
    assert root.xpath("string(devices/memballoon/@model)") == "none"


def test_secure_boot_and_virtio_scsi(domain: FakeDomain) -> None:
    caps = replace(CAPS, block_bus="virtio-scsi", firmware=Firmware.UEFI, secure_boot=True)
    _, _, outs, result = _convert(domain, caps)
    root = _root(result)
    assert root.xpath("string(os/firmware/feature[@name='secure-boot']/@enabled)") == "yes"
    assert root.find("features/smm[@state='on']") is not None
    assert root.find("devices/controller[@type='scsi'][@model='virtio-scsi']") is not None
    assert _disks(root) == [
        (str(out.final_path), "raw", "scsi", dev)
        for out, dev in zip(outs, ("sda", "sdb"), strict=True)
    ]


def test_i440fx_ide_rtl8139_and_a_windows_clock(domain: FakeDomain) -> None:
    caps = replace(CAPS, block_bus="ide", net_model="rtl8139", machine="pc")
    windows = replace(LINUX, type="windows", distro="windows", product_name="Windows 10",
                      product_variant="Client", major_version=10, osinfo="win10")  # fmt: skip
    vm = replace(make_vm(disks=1), memory=3 * 1024 * MIB + 1, vcpus=4,
                 topology=CpuTopology(2, 2))  # fmt: skip
    _, _, (out,), result = _convert(domain, caps, vm=vm, os_=windows)
    root = _root(result)
    assert root.xpath("string(os/type/@machine)") == "pc"  # BiosType i440fx_sea_bios
    assert _disks(root) == [(str(out.final_path), "raw", "ide", "hda")]
    assert [n[3] for n in _nics(root)] == ["rtl8139", "rtl8139"]
    assert root.findtext("memory") == str(3 * 1024 * 1024 + 1024)  # the OVF's MiB, rounded up
    assert root.findtext("vcpu") == "4"
    assert root.xpath("string(cpu/topology/@sockets)") == "2"
    assert root.xpath("string(clock/@offset)") == "localtime"


def _ovirt_vm(domain: FakeDomain, disks: list[OvfDisk], nics: list[OvfNic]) -> OvirtVm:
    return OvirtVm(
        vm_id=str(uuid.uuid4()), name="handmade", description="", sd_uuid=domain.sd_uuid,
        created=datetime.now(UTC), os_name="rhel_9x64", origin=None, os_description="RHEL",
        bios_type=BiosType.Q35_SEA_BIOS, memory_mib=512, sockets=1, cores=1, threads=1,
        disks=disks, nics=nics, display=DisplayType.VGA, server=True,
        custom_cpu_name="Broadwell-noTSX",
    )  # fmt: skip


def _disk(domain: FakeDomain, boot: bool, fmt: str = "RAW", interface: str = "VirtIO") -> OvfDisk:
    image, volume = str(uuid.uuid4()), str(uuid.uuid4())
    (domain.root / "images" / image).mkdir()
    (domain.root / "images" / image / volume).write_bytes(b"")
    return OvfDisk(image, volume, str(uuid.uuid4()), MIB, MIB, fmt, "Sparse", interface, boot)


def _write(domain: FakeDomain, vm: OvirtVm) -> Path:
    path = domain.root / "master" / "vms" / vm.vm_id / f"{vm.vm_id}.ovf"
    path.parent.mkdir()
    path.write_text(render_ovf(vm))
    return path


def test_the_boot_disk_comes_first_and_each_nic_keeps_its_model(domain: FakeDomain) -> None:
    disks = [_disk(domain, False, "COW"), _disk(domain, True), _disk(domain, False)]
    nics = [OvfNic("eth0", "ovirtmgmt", "52:54:00:00:00:01", NicType.E1000),
            OvfNic("eth1", "", None, NicType.PV)]  # fmt: skip
    vm = _ovirt_vm(domain, disks, nics)
    root = etree.fromstring(ovf_domain_xml(_write(domain, vm), domain.root).encode())
    image = domain.root / "images"
    order = [disks[1], disks[0], disks[2]]
    assert _disks(root) == [
        (str(image / d.href), {"COW": "qcow2", "RAW": "raw"}[d.volume_format], "virtio", dev)
        for d, dev in zip(order, ("vda", "vdb", "vdc"), strict=True)
    ]
    # A NIC with no network gets libvirt's default one: the check rewires it anyway.
    assert _nics(root) == [("bridge", "ovirtmgmt", "52:54:00:00:00:01", "e1000"),
                           ("network", "", "", "virtio")]  # fmt: skip
    assert root.xpath("string(cpu/model)") == "Broadwell-noTSX"  # CustomCpuName
    assert root.findtext("uuid") == vm.vm_id


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (lambda t: t.replace("VirtIO", "IDE", 1), "on several interfaces (IDE, VirtIO)"),
        (lambda t: t.replace('fileRef="', 'fileRef="../../', 1), "is not <image UUID>/<volume"),
        (lambda t: t.replace("<BiosType>1<", "<BiosType>7<"), "BiosType 7: not one vmshift"),
        (lambda t: '<!DOCTYPE x [<!ENTITY e "e">]>' + t.split("?>", 1)[1], "has a DOCTYPE"),
        (lambda t: t.replace("</Content>", ""), "not well-formed XML"),
    ],
)
def test_an_ovf_that_cannot_be_booted_is_refused(
    domain: FakeDomain, edit: object, said: str
) -> None:
    vm = _ovirt_vm(domain, [_disk(domain, True), _disk(domain, False)], [])
    path = _write(domain, vm)
    assert callable(edit)
    path.write_text(edit(path.read_text()))
    with pytest.raises(TargetError) as info:
        ovf_domain_xml(path, domain.root)
    assert said in str(info.value)


def test_a_missing_volume_is_named(domain: FakeDomain) -> None:
    disk = _disk(domain, True)
    path = _write(domain, _ovirt_vm(domain, [disk], []))
    volume = domain.root / "images" / disk.href
    volume.unlink()
    with pytest.raises(TargetError) as info:
        ovf_domain_xml(path, domain.root)
    assert str(info.value) == f"{path}: names disk {disk.href}, but {volume} is not there"


def test_the_ovf_domain_goes_through_the_verification_unchanged(
    domain: FakeDomain, tmp_path: Path
) -> None:
    _, vm, outs, result = _convert(domain, CAPS)
    assert result.domain_xml is not None
    overlays = [tmp_path / f"disk{i}.qcow2" for i in range(len(outs))]
    links = [NicLink((n.mac or "").lower(), 6000 + 2 * i, 6001 + 2 * i)
             for i, n in enumerate(vm.nics)]  # fmt: skip
    text = verification_xml(result.domain_xml, overlays, links, name="v", private_dir=tmp_path,
                            tcg=True)  # fmt: skip
    root = etree.fromstring(text.encode())
    assert root.get("type") == "qemu"
    assert [d[0] for d in _disks(root)] == [str(o) for o in overlays]
    assert [(i[0], i[2], i[3]) for i in _nics(root)] == [
        ("udp", link.mac, "virtio") for link in links
    ]
    # The boot plan: the disks in the domain, the console (if saved) in the -os directory.
    plan = _boot_plan(ConversionResult(vm=vm, os=LINUX, caps=CAPS, target=result))
    assert plan.xml == result.domain_xml and plan.save_dir == domain.top


def test_verify_boot_is_taken_with_rhv(tmp_path: Path) -> None:
    """Not refused up front (test_verify_boot.py has the refusals, -o null and an NFS -os):
    the run gets as far as the missing source disk."""
    absent = tmp_path / "absent.img"
    proc = vmshift(["convert", "-i", "disk", absent, "-o", "rhv", "-os", tmp_path,
                    "--verify-boot"])  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "absent.img" in proc.stderr and "--verify-boot" not in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
