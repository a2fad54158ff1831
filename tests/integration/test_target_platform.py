"""Generation id, secure boot and the CPU model through the real tools: the libvirt sources
read them, -o local writes XML libvirt's schema accepts, a private libvirtd defines (and
starts) what -o libvirt writes, the qemu that -o qemu's script runs accepts its options, and
-o rhv's OVF carries what oVirt reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.export_domain import make_export_domain
from tests.integration.libvirt_fixture import PrivateLibvirtd, dir_pool, private_libvirtd
from tests.integration.test_targets import MIB, NETWORKS, fake_copy, make_vm, validates
from tests.os_samples import LINUX
from vmshift.formats.libvirt_domain import parse_domain
from vmshift.formats.libvirt_xml import domain_xml
from vmshift.model.caps import GuestCaps
from vmshift.model.vm import CpuFeature, CpuModel, Firmware, SourceVM
from vmshift.sources.base import SourceOptions
from vmshift.sources.libvirt import LibvirtSource
from vmshift.sources.libvirtxml import LibvirtXmlSource
from vmshift.targets import qemu
from vmshift.targets.base import TargetOptions, TargetResult
from vmshift.targets.libvirt import LibvirtTarget
from vmshift.targets.local import LocalTarget
from vmshift.targets.qemu import QemuTarget
from vmshift.targets.qemu_host import find_uefi_firmware
from vmshift.targets.rhv import RhvTarget

GENID = "44332211-6655-8877-99aa-bbccddeeff00"
SECURE_CAPS = GuestCaps("sata", "e1000", "vga", "q35", Firmware.UEFI, "x86_64", secure_boot=True)
# Every x86 qemu and libvirt knows these, and TCG runs them.
QEMU64 = CpuModel(model="qemu64", features=(CpuFeature("x2apic"), CpuFeature("svm", "disable")))


def run_target(target: Any, vm: SourceVM, caps: GuestCaps) -> TargetResult:
    """A target's whole run on one 1 MiB disk, the copy faked: check, setup, finalize."""
    target.check(vm)
    outs = target.setup(vm, [MIB])
    fake_copy(outs[0])
    result: TargetResult = target.finalize(vm, LINUX, caps, outs)
    return result


def platform_vm(name: str, cpu: CpuModel | None = QEMU64, disks: int = 1) -> SourceVM:
    return replace(
        make_vm(name, disks=disks),
        memory=64 * MIB,
        firmware=Firmware.UEFI,
        genid=GENID,
        secure_boot=True,
        cpu=cpu,
    )


# ---- sources -------------------------------------------------------------------------------

SOURCE_XML = f"""<domain type='kvm'>
  <name>sb-src</name>
  <genid>{GENID}</genid>
  <memory unit='MiB'>64</memory>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <firmware><feature enabled='yes' name='secure-boot'/></firmware>
  </os>
  <features><acpi/><apic/><smm state='on'/></features>
  <cpu mode='custom' match='exact'>
    <model fallback='forbid'>Westmere</model><vendor>Intel</vendor>
    <feature policy='require' name='x2apic'/>
  </cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='disk.img'/><target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def test_libvirtxml_source_reads_genid_cpu_features_secure_boot(tmp_path: Path) -> None:
    with (tmp_path / "disk.img").open("wb") as f:
        f.truncate(MIB)
    xml = tmp_path / "guest.xml"
    xml.write_text(SOURCE_XML)
    vm = LibvirtXmlSource(SourceOptions(args=(str(xml),))).open(tmp_path / "work")
    assert (vm.genid, vm.secure_boot, vm.features) == (GENID, True, ("acpi", "apic", "smm"))
    assert vm.cpu == CpuModel("Intel", "Westmere", (CpuFeature("x2apic", "require"),))


# ---- -o local ------------------------------------------------------------------------------


def test_local_writes_genid_secure_boot_and_cpu(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")  # it says whether libvirt knows the model's name
    target = LocalTarget(TargetOptions(storage=str(tmp_path), networks=NETWORKS))
    vm = platform_vm("local-sb")
    result = run_target(target, vm, SECURE_CAPS)
    assert result.warnings == ()
    xml_path = tmp_path / "local-sb.xml"
    assert validates(xml_path)
    text = xml_path.read_text()
    dom = parse_domain(text)
    assert (dom.genid, dom.secure_boot, dom.machine) == (GENID, True, "q35")
    assert dom.cpu == CpuModel(None, "qemu64", QEMU64.features)
    assert "smm" in dom.features
    assert '<cpu mode="custom" match="minimum" check="none">' in text


def test_local_xml_describes_a_kvm_target_whatever_this_host_has(tmp_path: Path) -> None:
    """This host may lack KVM (CI's does): the XML is for the target, so kvm, host-model and
    Windows' Hyper-V enlightenments all the same; --domain-type qemu asks for TCG."""
    caps = replace(SECURE_CAPS, secure_boot=False)
    windows = replace(LINUX, type="windows")
    vm = platform_vm("local-kvm", cpu=None)
    target = LocalTarget(TargetOptions(storage=str(tmp_path), networks=NETWORKS))
    target.check(vm)
    outs = target.setup(vm, [MIB])
    fake_copy(outs[0])
    target.finalize(vm, windows, caps, outs)
    root = etree.parse(str(tmp_path / "local-kvm.xml")).getroot()
    assert root.get("type") == "kvm"
    assert root.xpath("string(cpu/@mode)") == "host-model"
    assert root.find("features/hyperv/relaxed") is not None

    opts = TargetOptions(storage=str(tmp_path), networks=NETWORKS, domain_type="qemu")
    vm = platform_vm("local-tcg", cpu=None)
    run_target(LocalTarget(opts), vm, caps)
    root = etree.parse(str(tmp_path / "local-tcg.xml")).getroot()
    assert root.get("type") == "qemu"
    assert root.xpath("string(cpu/@mode)") == "maximum"


def test_local_unknown_cpu_model_is_a_warning(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    target = LocalTarget(TargetOptions(storage=str(tmp_path)))
    vm = platform_vm("local-cpu", cpu=CpuModel(model="Imaginary-9000"))
    result = run_target(target, vm, replace(SECURE_CAPS, secure_boot=False))
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("the source's CPU model Imaginary-9000: libvirt here")
    assert parse_domain((tmp_path / "local-cpu.xml").read_text()).cpu is None


# ---- -o libvirt ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


@pytest.fixture
def pool(libvirtd: PrivateLibvirtd, request: pytest.FixtureRequest) -> Iterator[Any]:
    with dir_pool(libvirtd, f"pool-{request.node.name}") as (lv_pool, _path):
        yield lv_pool


def test_libvirt_target_defines_and_starts_a_secure_boot_guest(
    libvirtd: PrivateLibvirtd, pool: Any
) -> None:
    conn = libvirtd.connect()
    domcaps = conn.getDomainCapabilities(None, "x86_64", "q35", "qemu", 0)
    if "<enum name='secure'>\n        <value>yes</value>" not in domcaps:
        pytest.skip("no secure-boot OVMF on this host")
    target = LibvirtTarget(TargetOptions(storage=pool.name(), conn=libvirtd.uri, name="sb1"))
    vm = replace(platform_vm("sb1"), nics=())  # the private daemon has no networks
    result = run_target(target, vm, SECURE_CAPS)
    assert result.warnings == ()
    try:
        dom = conn.lookupByName("sb1")
        parsed = parse_domain(dom.XMLDesc(0))
        assert (parsed.genid, parsed.secure_boot) == (GENID, True)
        assert parsed.cpu is not None and parsed.cpu.model == "qemu64"
        assert "smm" in parsed.features
        # libvirt picked a secure-boot build, and qemu (TCG) starts with it.
        libvirtd.give(result.files[0])
        dom.create()
        assert dom.isActive()
        dom.destroy()
    finally:
        with contextlib.suppress(Exception):
            conn.lookupByName("sb1").undefineFlags(4)  # VIR_DOMAIN_UNDEFINE_NVRAM
        conn.close()


def test_libvirt_target_cpu_it_does_not_know(libvirtd: PrivateLibvirtd, pool: Any) -> None:
    target = LibvirtTarget(TargetOptions(storage=pool.name(), conn=libvirtd.uri, name="cpu1"))
    vm = platform_vm("cpu1", cpu=CpuModel(model="Imaginary-9000"))
    result = run_target(target, vm, replace(SECURE_CAPS, secure_boot=False))
    assert len(result.warnings) == 1
    assert "Imaginary-9000" in result.warnings[0] and "does not know it" in result.warnings[0]
    conn = libvirtd.connect()
    try:
        dom = conn.lookupByName("cpu1")
        assert parse_domain(dom.XMLDesc(0)).cpu is None
        dom.undefineFlags(4)
    finally:
        conn.close()


def test_libvirt_source_reads_genid_and_cpu(libvirtd: PrivateLibvirtd) -> None:
    disk = libvirtd.root / "src-genid.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    vm = replace(platform_vm("src-genid"), nics=(), firmware=Firmware.BIOS)
    caps = replace(SECURE_CAPS, firmware=Firmware.BIOS, secure_boot=False)
    xml = domain_xml(
        vm, caps, [(disk, "qcow2")], name="src-genid", networks=NETWORKS,
        domain_type="qemu", cpu_model=True,
    )  # fmt: skip
    conn = libvirtd.connect()
    dom = conn.defineXML(xml)
    source = LibvirtSource(SourceOptions(args=("src-genid",), conn=libvirtd.uri))
    try:
        read = source.open(Path("/nonexistent"))
        assert (read.genid, read.secure_boot) == (GENID, False)
        assert read.cpu is not None and read.cpu.model == "qemu64"
        assert {"x2apic", "svm"} <= {f.name for f in read.cpu.features}
    finally:
        source.close()
        dom.undefine()
        conn.close()


# ---- -o qemu -------------------------------------------------------------------------------


def test_qemu_script_boots_with_genid_secure_boot_and_cpu(tmp_path: Path) -> None:
    if find_uefi_firmware("q35", secure=True) is None:
        pytest.skip("no secure-boot OVMF descriptor on this host")
    target = QemuTarget(TargetOptions(storage=str(tmp_path), name="sbq"))
    vm = replace(platform_vm("sbq"), nics=())
    result = run_target(target, vm, SECURE_CAPS)
    assert result.warnings == ()
    text = (tmp_path / "sbq.sh").read_text()
    assert "-machine q35,smm=on,accel=" in text
    assert "-cpu qemu64,+x2apic,-svm" in text
    assert f"-device vmgenid,guid={GENID},id=vmgenid0" in text
    assert "-global driver=cfi.pflash01,property=secure,value=on" in text
    # qemu itself accepts every option (started paused, then stopped).
    subprocess.run([str(tmp_path / "sbq.sh"), "--daemonize", "-S"], check=True, timeout=120)
    pid = int((tmp_path / "sbq.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)


def test_qemu_without_secure_firmware_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if find_uefi_firmware("q35") is None:
        pytest.skip("no OVMF installed")

    def no_secure(machine: str, secure: bool = False) -> tuple[Path, Path] | None:
        return None if secure else find_uefi_firmware(machine)

    monkeypatch.setattr(qemu, "find_uefi_firmware", no_secure)
    target = QemuTarget(TargetOptions(storage=str(tmp_path)))
    vm = platform_vm("nosb", cpu=None)
    result = run_target(target, vm, SECURE_CAPS)
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("secure boot is off: no OVMF firmware descriptor")
    text = (tmp_path / "nosb.sh").read_text()
    assert "smm=on" not in text and "property=secure" not in text and "if=pflash" in text


# ---- -o rhv --------------------------------------------------------------------------------


def test_rhv_writes_secure_boot_bios_type_and_cpu_name(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    domain = make_export_domain(tmp_path, owner=(os.geteuid(), os.getegid()))
    target = RhvTarget(TargetOptions(storage=str(tmp_path)))
    vm = platform_vm("rhv-sb")
    result = run_target(target, vm, SECURE_CAPS)
    assert result.warnings == ()
    (vm_dir,) = domain.vm_dirs()
    content = etree.parse(str(vm_dir / f"{vm_dir.name}.ovf")).getroot().find("Content")
    assert content is not None
    assert content.findtext("BiosType") == "3"
    assert content.findtext("CustomCpuName") == "qemu64"
    text = (vm_dir / f"{vm_dir.name}.ovf").read_text()
    assert GENID not in text  # oVirt's OVF reader has no field for it
