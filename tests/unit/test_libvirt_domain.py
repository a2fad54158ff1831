"""Parsing a source guest's libvirt XML (formats/libvirt_domain.py): the generation id, the
CPU model, the hypervisor features and secure boot, and their way into the SourceVM."""

from __future__ import annotations

import pytest

from vmshift.formats.libvirt_domain import Domain, parse_domain
from vmshift.model.vm import CpuFeature, CpuModel, DiskEndpoint, Firmware

GENID = "44332211-6655-8877-99aa-bbccddeeff00"


def domain(body: str) -> Domain:
    return parse_domain(
        f"<domain type='kvm'><name>g</name><memory unit='MiB'>64</memory>{body}</domain>",
        "g.xml",
    )


FULL = f"""
  <genid>{GENID}</genid>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-8.2'>hvm</type>
    <firmware>
      <feature enabled='yes' name='enrolled-keys'/>
      <feature enabled='yes' name='secure-boot'/>
    </firmware>
  </os>
  <features><acpi/><apic/><vmport state='off'/><smm state='on'/></features>
  <cpu mode='custom' match='exact' check='partial'>
    <model fallback='allow'>Skylake-Client-IBRS</model>
    <vendor>Intel</vendor>
    <topology sockets='1' cores='2' threads='1'/>
    <feature policy='require' name='md-clear'/>
    <feature name='ssbd'/>
    <feature policy='disable' name='hle'/>
  </cpu>
"""


def test_everything_the_targets_use() -> None:
    dom = domain(FULL)
    assert dom.genid == GENID
    assert dom.secure_boot is True
    assert dom.firmware is Firmware.UEFI
    assert dom.features == ("acpi", "apic", "vmport", "smm")
    assert dom.cpu == CpuModel(
        vendor="Intel",
        model="Skylake-Client-IBRS",
        features=(
            CpuFeature("md-clear", "require"),
            CpuFeature("ssbd", "require"),  # libvirt's default policy
            CpuFeature("hle", "disable"),
        ),
    )
    assert dom.warnings == ()
    vm = dom.source_vm([], origin="libvirt", source_file="g.xml")
    assert (vm.genid, vm.secure_boot, vm.cpu, vm.features) == (
        GENID,
        True,
        dom.cpu,
        ("acpi", "apic", "vmport", "smm"),
    )


@pytest.mark.parametrize(
    ("xml", "genid"),
    [
        ("", None),
        ("<genid/>", None),  # libvirt makes a new one at every start: nothing to carry
        ("<genid>  </genid>", None),
        (f"<genid>{GENID.upper()}</genid>", GENID),
        (f"<genid>{GENID.replace('-', '')}</genid>", GENID),
    ],
)
def test_genid(xml: str, genid: str | None) -> None:
    dom = domain(xml)
    assert dom.genid == genid
    assert dom.warnings == ()


def test_a_genid_that_is_not_one_is_left_out_with_a_warning() -> None:
    dom = domain("<genid>not-a-genid</genid>")
    assert dom.genid is None
    assert dom.warnings == ("g.xml: <genid> 'not-a-genid' is not a generation id; left out",)
    vm = dom.source_vm([], origin="libvirt", source_file="g.xml")
    assert vm.warnings == dom.warnings


@pytest.mark.parametrize(
    "cpu",
    [
        "",
        "<cpu mode='host-model'/>",
        "<cpu mode='host-model'><model fallback='allow'>EPYC</model></cpu>",
        "<cpu mode='host-passthrough' check='none' migratable='on'/>",
        "<cpu mode='maximum'/>",
        "<cpu><topology sockets='1' cores='1' threads='1'/></cpu>",  # custom, names nothing
        "<cpu mode='custom'><model>  </model></cpu>",
    ],
)
def test_cpus_with_no_model_to_carry(cpu: str) -> None:
    assert domain(cpu).cpu is None


def test_cpu_with_only_a_vendor_or_features() -> None:
    assert domain("<cpu><vendor>AMD</vendor></cpu>").cpu == CpuModel(vendor="AMD")
    assert domain("<cpu><feature policy='forbid' name='svm'/></cpu>").cpu == CpuModel(
        features=(CpuFeature("svm", "forbid"),)
    )


def test_cpu_values_that_are_not_names_are_left_out() -> None:
    dom = domain(
        "<cpu><model>Broadwell,+vmx</model><vendor>Intel</vendor>"
        "<feature policy='sometimes' name='aes'/><feature policy='require' name='a b'/>"
        "<feature policy='require'/><feature policy='optional' name='sse4.2'/></cpu>"
    )
    assert dom.cpu == CpuModel(vendor="Intel", features=(CpuFeature("sse4.2", "optional"),))
    assert dom.warnings == (
        "g.xml: <cpu> feature aes: unknown policy 'sometimes'; left out",
        "g.xml: <cpu> feature 'a b' is not a CPU name; left out",
        "g.xml: <cpu> model 'Broadwell,+vmx' is not a CPU name; left out",
    )


@pytest.mark.parametrize(
    ("os", "secure"),
    [
        ("<os><type>hvm</type></os>", False),
        ("<os firmware='efi'><type>hvm</type></os>", False),
        (
            "<os firmware='efi'><firmware><feature enabled='no' name='secure-boot'/>"
            "<feature enabled='yes' name='enrolled-keys'/></firmware></os>",
            False,
        ),
        (
            "<os firmware='efi'><firmware><feature enabled='yes' name='secure-boot'/>"
            "</firmware></os>",
            True,
        ),
        (
            "<os><loader readonly='yes' secure='yes' type='pflash'>"
            "/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader></os>",
            True,
        ),
        (
            "<os><loader readonly='yes' secure='no' type='pflash'>"
            "/usr/share/OVMF/OVMF_CODE_4M.fd</loader></os>",
            False,
        ),
        # Secure boot without UEFI is not a thing: a BIOS guest is never "secure".
        ("<os firmware='bios'><firmware><feature enabled='yes' name='secure-boot'/>"
         "</firmware></os>", False),
    ],
)  # fmt: skip
def test_secure_boot(os: str, secure: bool) -> None:
    assert domain(os).secure_boot is secure


def test_features_are_element_names_only() -> None:
    dom = domain("<features><acpi/><!-- note --><hyperv mode='custom'><relaxed/></hyperv>"
                 "<pae/></features>")  # fmt: skip
    assert dom.features == ("acpi", "hyperv", "pae")
    assert domain("").features == ()


def test_source_vm_defaults_when_the_xml_says_nothing() -> None:
    dom = domain("<devices><disk device='disk'><target dev='vda' bus='virtio'/></disk></devices>")
    vm = dom.source_vm([DiskEndpoint("/x", "raw", 1)], origin="libvirt", source_file=None)
    assert (vm.genid, vm.secure_boot, vm.cpu, vm.features, vm.warnings) == (
        None,
        False,
        None,
        (),
        (),
    )
