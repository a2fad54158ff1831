"""Generation id, secure boot and CPU model in the libvirt XML that -o libvirt and -o local
write: the emitter's output, the domain capabilities it is decided from, and the decisions
with their warnings (a fake libvirt connection stands in for the target)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.unit.test_libvirt_xml import (
    FALLBACK_CAPS,
    NETWORKS,
    OUT_DISKS,
    VIRTIO_CAPS,
    bios_virtio,
    source_vm,
    uefi_fallback,
    validate,
)
from vmshift.errors import TargetError
from vmshift.formats.libvirt_domain import parse_domain
from vmshift.formats.libvirt_domcaps import parse_domain_capabilities
from vmshift.formats.libvirt_xml import domain_xml
from vmshift.model.caps import GuestCaps
from vmshift.model.vm import CpuFeature, CpuModel, Firmware, SourceVM
from vmshift.targets import platform
from vmshift.targets.base import TargetOptions
from vmshift.targets.libvirt import LibvirtTarget
from vmshift.targets.local import local_platform
from vmshift.targets.platform import cpu_model_decision, secure_boot_decision

GENID = "44332211-6655-8877-99aa-bbccddeeff00"
WESTMERE = CpuModel(
    vendor="Intel",
    model="Westmere",
    features=(
        CpuFeature("x2apic"),
        CpuFeature("vmx", "disable"),
        CpuFeature("pcid", "optional"),
        CpuFeature("not a name"),  # never reaches the XML
        CpuFeature("aes", "sometimes"),
    ),
)
SECURE_CAPS = replace(FALLBACK_CAPS, secure_boot=True)


def uefi_vm(**changes: Any) -> SourceVM:
    return replace(source_vm(Firmware.UEFI), **changes)


def emit(
    vm: SourceVM,
    caps: GuestCaps,
    domain_type: str = "kvm",
    *,
    cpu_model: bool = False,
    secure_boot: bool = False,
) -> str:
    return domain_xml(
        vm,
        caps,
        OUT_DISKS,
        name="w",
        networks=NETWORKS,
        domain_type=domain_type,
        cpu_model=cpu_model,
        secure_boot=secure_boot,
    )


def element(xml: str, path: str) -> str:
    """One element of xml, serialised compactly: what the assertions compare."""
    found = etree.fromstring(xml.encode()).find(path)
    assert found is not None, path
    text = etree.tostring(found, encoding="unicode")
    return re.sub(r">\s+<", "><", text).strip()


# ---- the emitter ---------------------------------------------------------------------------


def test_genid_is_written_as_the_source_had_it(tmp_path: Path) -> None:
    xml = emit(uefi_vm(genid=GENID), FALLBACK_CAPS)
    assert f"  <genid>{GENID}</genid>\n" in xml
    assert xml.index("<uuid>") < xml.index("<genid>") < xml.index("<memory")
    assert parse_domain(xml).genid == GENID
    validate(xml, tmp_path)
    # Not one: nothing (the target then makes one up at every start).
    assert "<genid" not in emit(uefi_vm(genid="bogus"), FALLBACK_CAPS)


def test_secure_boot_xml(tmp_path: Path) -> None:
    xml = emit(uefi_vm(), SECURE_CAPS, secure_boot=True)
    assert element(xml, "os") == (
        '<os firmware="efi"><type arch="x86_64" machine="q35">hvm</type>'
        '<firmware><feature enabled="yes" name="enrolled-keys"/>'
        '<feature enabled="yes" name="secure-boot"/></firmware><boot dev="hd"/></os>'
    )
    assert element(xml, "features") == '<features><acpi/><apic/><smm state="on"/></features>'
    dom = parse_domain(xml)
    assert (dom.firmware, dom.secure_boot, dom.machine) == (Firmware.UEFI, True, "q35")
    validate(xml, tmp_path)


def test_without_secure_boot_both_features_stay_off() -> None:
    # GuestCaps asking for it is not enough: the target decides and passes the flag.
    xml = emit(uefi_vm(), SECURE_CAPS)
    assert element(xml, "os/firmware") == (
        '<firmware><feature enabled="no" name="enrolled-keys"/>'
        '<feature enabled="no" name="secure-boot"/></firmware>'
    )
    assert "<smm" not in xml
    assert parse_domain(xml).secure_boot is False


@pytest.mark.parametrize(
    "caps",
    [VIRTIO_CAPS, replace(FALLBACK_CAPS, machine="pc")],
    ids=["bios", "uefi-on-pc"],
)
def test_secure_boot_is_refused_where_it_cannot_be(caps: GuestCaps) -> None:
    with pytest.raises(TargetError, match="UEFI firmware and machine type q35"):
        emit(uefi_vm(), caps, secure_boot=True)


def test_cpu_model_xml(tmp_path: Path) -> None:
    xml = emit(uefi_vm(cpu=WESTMERE), FALLBACK_CAPS, cpu_model=True)
    assert element(xml, "cpu") == (
        '<cpu mode="custom" match="minimum" check="none">'
        '<model fallback="allow">Westmere</model><vendor>Intel</vendor>'
        '<topology sockets="2" dies="1" cores="2" threads="1"/>'
        '<feature policy="require" name="x2apic"/><feature policy="disable" name="vmx"/>'
        '<feature policy="optional" name="pcid"/></cpu>'
    )
    validate(xml, tmp_path)
    assert parse_domain(xml).cpu == replace(WESTMERE, features=WESTMERE.features[:3])


def test_cpu_model_without_vendor_or_features() -> None:
    vm = uefi_vm(cpu=CpuModel(model="EPYC-Rome"), topology=None)
    xml = emit(vm, FALLBACK_CAPS, "qemu", cpu_model=True)
    assert element(xml, "cpu") == (
        '<cpu mode="custom" match="minimum" check="none">'
        '<model fallback="allow">EPYC-Rome</model></cpu>'
    )


@pytest.mark.parametrize(
    "cpu",
    [None, CpuModel(vendor="Intel", features=(CpuFeature("vmx"),)), CpuModel(model="a,b")],
    ids=["none", "no-model", "bad-model"],
)
def test_no_usable_model_keeps_todays_cpu(cpu: CpuModel | None) -> None:
    for domain_type, mode in (("kvm", "host-model"), ("qemu", "maximum")):
        xml = emit(uefi_vm(cpu=cpu), FALLBACK_CAPS, domain_type, cpu_model=True)
        assert element(xml, "cpu") == (
            f'<cpu mode="{mode}" check="none">'
            '<topology sockets="2" dies="1" cores="2" threads="1"/></cpu>'
        )


def test_the_new_fields_do_not_change_the_golden_output_unless_asked() -> None:
    plain_bios, plain_uefi = bios_virtio(), uefi_fallback()
    mask = re.compile(r"<uuid>[^<]*</uuid>")
    vm = replace(source_vm(), cpu=WESTMERE, secure_boot=True, features=("acpi", "hpet"))
    xml = domain_xml(
        vm, VIRTIO_CAPS, OUT_DISKS, name="web01", networks=NETWORKS, domain_type="kvm",
        os_type="linux",
    )  # fmt: skip
    assert mask.sub("", xml) == mask.sub("", plain_bios)
    assert "<genid" not in plain_uefi


# ---- domain capabilities -------------------------------------------------------------------

DOMCAPS = """<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path><domain>kvm</domain><machine>pc-q35-8.2</machine>
  <arch>x86_64</arch>
  <os supported='yes'>
    <enum name='firmware'><value>efi</value></enum>
    <loader supported='yes'>
      <value>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</value>
      <enum name='type'><value>rom</value><value>pflash</value></enum>
      <enum name='readonly'><value>yes</value><value>no</value></enum>
      <enum name='secure'>{secure}</enum>
    </loader>
  </os>
  <cpu>
    <mode name='host-passthrough' supported='yes'/>
    <mode name='host-model' supported='yes'><model fallback='forbid'>EPYC</model></mode>
    <mode name='custom' supported='yes'>
      <model usable='yes' vendor='Intel'>Westmere</model>
      <model usable='no' vendor='Intel'>Skylake-Client</model>
      <model usable='yes' vendor='unknown'>qemu64</model>
    </mode>
  </cpu>
</domainCapabilities>"""
SECURE_YES = "<value>yes</value><value>no</value>"


def test_domain_capabilities() -> None:
    caps = parse_domain_capabilities(DOMCAPS.format(secure=SECURE_YES), "t")
    assert caps.secure_boot is True
    assert caps.cpu_models == {"Westmere": True, "Skylake-Client": False, "qemu64": True}
    assert (caps.can_run("Westmere"), caps.can_run("Skylake-Client"), caps.can_run("x")) == (
        True,
        False,
        False,
    )
    insecure = parse_domain_capabilities(DOMCAPS.format(secure="<value>no</value>"), "t")
    assert insecure.secure_boot is False
    bare = parse_domain_capabilities("<domainCapabilities/>", "t")
    assert (bare.secure_boot, bare.cpu_models) == (False, {})
    for bad, words in (("<capabilities/>", "not libvirt domain"), ("<x", "unreadable")):
        with pytest.raises(TargetError, match=words):
            parse_domain_capabilities(bad, "t")


# ---- decisions -----------------------------------------------------------------------------


def test_secure_boot_decision() -> None:
    assert secure_boot_decision(FALLBACK_CAPS, False, "x") == (False, ())  # not asked
    assert secure_boot_decision(SECURE_CAPS, True, "x") == (True, ())
    assert secure_boot_decision(SECURE_CAPS, False, "no firmware") == (
        False,
        ("secure boot is off: no firmware",),
    )
    on_pc = replace(SECURE_CAPS, machine="pc")
    assert secure_boot_decision(on_pc, True, "x") == (
        False,
        ("secure boot is off: it needs machine type q35, and the guest has pc",),
    )
    bios = replace(VIRTIO_CAPS, secure_boot=True)
    assert secure_boot_decision(bios, True, "x")[0] is False


def test_cpu_model_decision() -> None:
    vm = uefi_vm(cpu=WESTMERE)
    assert cpu_model_decision(vm, True, "x", "y") == (True, ())
    assert cpu_model_decision(vm, False, "it is too new", "the default CPU") == (
        False,
        ("the source's CPU model Westmere: it is too new; using the default CPU",),
    )
    assert cpu_model_decision(uefi_vm(), False, "x", "y") == (False, ())
    assert cpu_model_decision(uefi_vm(cpu=CpuModel(vendor="AMD")), False, "x", "y") == (False, ())
    bad = uefi_vm(cpu=CpuModel(model="a b"))
    assert cpu_model_decision(bad, True, "x", "host") == (
        False,
        ("CPU model 'a b' is not a model name; using host",),
    )


class FakeLibvirtError(Exception):
    def get_error_message(self) -> str:
        return "unsupported configuration: no emulator"


class FakeConn:
    def __init__(self, domcaps: str | None) -> None:
        self.domcaps = domcaps
        self.asked: list[tuple[Any, ...]] = []

    def getDomainCapabilities(self, *args: Any) -> str:  # libvirt's name
        self.asked.append(args)
        if self.domcaps is None:
            raise FakeLibvirtError()
        return self.domcaps


def libvirt_target(domcaps: str | None) -> tuple[LibvirtTarget, FakeConn]:
    target = LibvirtTarget(TargetOptions(conn="qemu+ssh://kvm1/system"))
    conn = FakeConn(domcaps)
    target._conn = conn
    target._lv = type("lv", (), {"libvirtError": FakeLibvirtError})
    return target, conn


def test_libvirt_target_uses_what_its_libvirt_offers() -> None:
    target, conn = libvirt_target(DOMCAPS.format(secure=SECURE_YES))
    vm = uefi_vm(cpu=WESTMERE)
    assert target._platform(vm, SECURE_CAPS, "kvm") == (True, True, ())
    assert conn.asked == [(None, "x86_64", "q35", "kvm", 0)]
    # Nothing asked for: libvirt is not even asked.
    target, conn = libvirt_target(DOMCAPS.format(secure=SECURE_YES))
    assert target._platform(uefi_vm(), FALLBACK_CAPS, "qemu") == (False, False, ())
    assert conn.asked == []


def test_libvirt_target_falls_back_and_says_so() -> None:
    target, _ = libvirt_target(DOMCAPS.format(secure="<value>no</value>"))
    vm = uefi_vm(cpu=replace(WESTMERE, model="Skylake-Client"))
    assert target._platform(vm, SECURE_CAPS, "qemu") == (
        False,
        False,
        (
            "secure boot is off: libvirt on qemu+ssh://kvm1/system has no secure-boot UEFI "
            "firmware for q35 guests",
            "the source's CPU model Skylake-Client: libvirt on qemu+ssh://kvm1/system cannot "
            "run it (qemu domains); using the default CPU (mode maximum)",
        ),
    )
    unknown = uefi_vm(cpu=CpuModel(model="Imaginary"))
    assert target._platform(unknown, FALLBACK_CAPS, "kvm")[2] == (
        "the source's CPU model Imaginary: libvirt on qemu+ssh://kvm1/system does not know it; "
        "using the default CPU (mode host-model)",
    )


def test_libvirt_target_that_cannot_be_asked() -> None:
    target, _ = libvirt_target(None)
    problem = (
        "cannot ask libvirt on qemu+ssh://kvm1/system what it supports: "
        "unsupported configuration: no emulator"
    )
    assert target._platform(uefi_vm(cpu=WESTMERE), SECURE_CAPS, "kvm") == (
        False,
        False,
        (
            f"secure boot is off: {problem}",
            f"the source's CPU model Westmere: {problem}; using the default CPU (mode host-model)",
        ),
    )


def test_local_writes_secure_boot_and_known_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libvirt_cpu_models", lambda arch: frozenset({"Westmere"}))
    assert local_platform(uefi_vm(cpu=WESTMERE), SECURE_CAPS, "qemu") == (True, True, ())
    vm = uefi_vm(cpu=CpuModel(model="Imaginary"))
    assert local_platform(vm, FALLBACK_CAPS, "kvm") == (
        False,
        False,
        (
            "the source's CPU model Imaginary: libvirt here does not know that name; "
            "using the default CPU (mode host-model)",
        ),
    )
    monkeypatch.setattr(platform, "libvirt_cpu_models", lambda arch: None)
    assert local_platform(uefi_vm(cpu=WESTMERE), FALLBACK_CAPS, "qemu")[2] == (
        "the source's CPU model Westmere: without libvirt here vmshift cannot tell whether "
        "libvirt knows it; using the default CPU (mode maximum)",
    )


def test_libvirt_cpu_models_from_the_library() -> None:
    pytest.importorskip("libvirt")
    models = platform.libvirt_cpu_models("x86_64")
    assert models is not None and {"qemu64", "Westmere"} <= models
