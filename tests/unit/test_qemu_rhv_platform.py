"""Generation id, secure boot and CPU model for -o qemu (the script and the firmware and CPU
models the local qemu offers) and -o rhv (BiosType and CustomCpuName in oVirt's OVF)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from tests.unit.test_libvirt_platform import GENID, SECURE_CAPS, WESTMERE, uefi_vm
from tests.unit.test_libvirt_xml import FALLBACK_CAPS, VIRTIO_CAPS
from vmshift.errors import TargetError
from vmshift.formats.ovirt_ovf import BiosType, DisplayType, OvirtVm, render_ovf
from vmshift.model.caps import GuestCaps
from vmshift.model.vm import CpuModel, SourceVM
from vmshift.targets import platform, qemu, qemu_host
from vmshift.targets.base import TargetOptions
from vmshift.targets.qemu import QemuTarget, qemu_cpu, qemu_script
from vmshift.targets.qemu_host import find_uefi_firmware, parse_cpu_help
from vmshift.targets.rhv import bios_type, rhv_platform

UEFI = (Path("/fw/CODE.ms.fd"), Path("/out/g-VARS.fd"))


def script_args(
    vm: SourceVM,
    caps: GuestCaps,
    *,
    cpu_model: bool = False,
    secure_boot: bool = False,
    accel: str = "tcg",
) -> list[str]:
    """The script's qemu options, one '-option value' per item."""
    text = qemu_script(
        vm,
        caps,
        [(Path("/out/g-sda"), "raw")],
        name="g",
        accel=accel,
        directory=Path("/out"),
        uefi=UEFI if caps.firmware.value == "uefi" else None,
        cpu_model=cpu_model,
        secure_boot=secure_boot,
    )
    body = text[text.index("exec qemu-system-x86_64") :].splitlines()[1:]
    return [line.strip().removesuffix(" \\") for line in body if line.strip()]


def test_qemu_script_with_genid_secure_boot_and_cpu_model() -> None:
    vm = uefi_vm(genid=GENID, cpu=WESTMERE)
    args = script_args(vm, SECURE_CAPS, cpu_model=True, secure_boot=True)
    assert args[:7] == [
        "-no-user-config",
        "-nodefaults",
        "-name guest=g",
        "-machine q35,smm=on,accel=tcg",
        "-cpu Westmere,+x2apic,-vmx",
        "-m 4096",
        f"-device vmgenid,guid={GENID},id=vmgenid0",
    ]
    secure = args.index("-global driver=cfi.pflash01,property=secure,value=on")
    assert args[secure + 1 : secure + 3] == [
        "-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.ms.fd",
        "-drive if=pflash,format=raw,unit=1,file=/out/g-VARS.fd",
    ]


def test_qemu_script_picks_its_accelerator_where_it_runs() -> None:
    """By default the script describes no host: it chooses KVM or TCG when it runs."""
    args = script_args(uefi_vm(), FALLBACK_CAPS, accel="auto")
    assert '-machine q35,accel="$accel"' in args and '-cpu "$cpu"' in args
    assert "-cpu host" in script_args(uefi_vm(), FALLBACK_CAPS, accel="kvm")


def test_qemu_script_without_them_is_unchanged() -> None:
    plain = script_args(uefi_vm(), FALLBACK_CAPS)
    asked_nothing = script_args(uefi_vm(cpu=WESTMERE), SECURE_CAPS)
    assert plain == asked_nothing
    assert "-machine q35,accel=tcg" in plain and "-cpu max" in plain
    assert not [a for a in plain if "vmgenid" in a or "-global" in a]
    # A genid that is not one is left out rather than handed to qemu.
    assert not [a for a in script_args(uefi_vm(genid="x,y"), FALLBACK_CAPS) if "vmgenid" in a]


def test_qemu_secure_boot_needs_uefi_on_q35() -> None:
    with pytest.raises(TargetError, match="secure boot needs UEFI"):
        script_args(uefi_vm(), VIRTIO_CAPS, secure_boot=True)


def test_qemu_cpu_switches() -> None:
    # optional has no qemu spelling; malformed names and policies never reach the command.
    assert qemu_cpu(WESTMERE) == "Westmere,+x2apic,-vmx"
    assert qemu_cpu(CpuModel(model="EPYC-Rome")) == "EPYC-Rome"


CPU_HELP = """Available CPUs:
x86 486                   (alias configured by machine type)
x86 Broadwell-IBRS        (alias of Broadwell-v3)
x86 EPYC-Rome-v1          AMD EPYC-Rome Processor
x86 base                  base CPU model type with no features enabled
x86 host                  processor with all supported host features
x86           qemu64  QEMU Virtual CPU version 2.5+

Recognized CPUID flags:
  3dnow 3dnowext 3dnowprefetch abm ace2 acpi adx aes
"""


def test_parse_cpu_help() -> None:
    models = parse_cpu_help(CPU_HELP)
    assert models == {"486", "Broadwell-IBRS", "EPYC-Rome-v1", "base", "host", "qemu64"}
    assert "3dnow" not in models


def test_qemu_target_cpu_model_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    target = QemuTarget(TargetOptions(storage="/nonexistent"))
    monkeypatch.setattr(qemu, "qemu_cpu_models", lambda: frozenset({"Westmere"}))
    assert target._cpu_model(uefi_vm(cpu=WESTMERE), "tcg") == (True, ())
    assert target._cpu_model(uefi_vm(cpu=CpuModel(model="Imaginary")), "kvm") == (
        False,
        (
            "the source's CPU model Imaginary: qemu-system-x86_64 -cpu help does not list it; "
            "using -cpu host",
        ),
    )
    monkeypatch.setattr(qemu, "qemu_cpu_models", lambda: None)
    assert target._cpu_model(uefi_vm(cpu=WESTMERE), "tcg")[1] == (
        "the source's CPU model Westmere: qemu-system-x86_64 -cpu help did not answer; "
        "using -cpu max",
    )
    assert target._cpu_model(uefi_vm(), "tcg") == (False, ())


def descriptor(folder: Path, name: str, features: list[str], machines: str = "pc-q35-*") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    code, varstore = folder / f"{name}-CODE.fd", folder / f"{name}-VARS.fd"
    code.write_bytes(b"code")
    varstore.write_bytes(b"vars")
    desc = {
        "interface-types": ["uefi"],
        "mapping": {
            "device": "flash",
            "executable": {"filename": str(code), "format": "raw"},
            "nvram-template": {"filename": str(varstore), "format": "raw"},
        },
        "targets": [{"architecture": "x86_64", "machines": [machines]}],
        "features": features,
    }
    (folder / f"{name}.json").write_text(json.dumps(desc))


def test_secure_firmware_comes_from_descriptors_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc, usr = tmp_path / "etc", tmp_path / "usr"
    monkeypatch.setattr(qemu_host, "FIRMWARE_DESCRIPTORS", (etc, usr))
    monkeypatch.setattr(qemu_host, "KNOWN_OVMF", ())
    assert find_uefi_firmware("q35", secure=True) is None
    descriptor(usr, "30-secure-no-keys", ["secure-boot", "requires-smm"])
    descriptor(usr, "40-secure-enrolled", ["secure-boot", "enrolled-keys", "requires-smm"])
    descriptor(usr, "60-plain", ["acpi-s3"], machines="pc-*")
    assert find_uefi_firmware("q35", secure=True) == (
        usr / "40-secure-enrolled-CODE.fd",
        usr / "40-secure-enrolled-VARS.fd",
    )
    assert find_uefi_firmware("pc", secure=True) is None  # SMM secure boot is q35 only
    assert find_uefi_firmware("q35") == (usr / "60-plain-CODE.fd", usr / "60-plain-VARS.fd")
    # /etc overrides a descriptor of the same name (here: to say it has no keys after all).
    descriptor(etc, "40-secure-enrolled", ["secure-boot", "requires-smm"])
    assert find_uefi_firmware("q35", secure=True) is None


# ---- -o rhv --------------------------------------------------------------------------------


def ovf_content(bios: BiosType = BiosType.Q35_OVMF, cpu: str | None = None) -> etree._Element:
    vm = OvirtVm(
        vm_id="7e8e2f4a-8a43-4d8b-9f0e-6d1c9c1b2a3f",
        name="g",
        description="d",
        sd_uuid="5a5b5c5d-1111-2222-3333-444455556666",
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        os_name="windows_2019x64",
        origin=None,
        os_description="Windows Server 2019",
        bios_type=bios,
        memory_mib=1024,
        sockets=1,
        cores=2,
        threads=1,
        disks=[],
        nics=[],
        display=DisplayType.VGA,
        server=True,
        custom_cpu_name=cpu,
    )
    root = etree.fromstring(render_ovf(vm).encode())
    content = root.find("Content")
    assert content is not None
    return content


def test_ovf_bios_type_and_custom_cpu_name() -> None:
    plain = ovf_content()
    assert (plain.findtext("BiosType"), plain.find("CustomCpuName")) == ("2", None)
    content = ovf_content(BiosType.Q35_SECURE_BOOT, "Westmere")
    assert content.findtext("BiosType") == "3"  # the engine's Q35_SECURE_BOOT (4), minus one
    assert content.findtext("CustomCpuName") == "Westmere"
    tags = [str(e.tag) for e in content if isinstance(e.tag, str)]
    assert tags.index("CustomCpuName") == tags.index("BiosType") + 1


def test_bios_type() -> None:
    assert bios_type(VIRTIO_CAPS) is BiosType.Q35_SEA_BIOS
    assert bios_type(replace(VIRTIO_CAPS, machine="pc")) is BiosType.I440FX_SEA_BIOS
    assert bios_type(FALLBACK_CAPS) is BiosType.Q35_OVMF
    assert bios_type(SECURE_CAPS, True) is BiosType.Q35_SECURE_BOOT


def test_rhv_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "libvirt_cpu_models", lambda arch: frozenset({"Westmere"}))
    assert rhv_platform(uefi_vm(cpu=WESTMERE), SECURE_CAPS) == ("Westmere", True, ())
    assert rhv_platform(uefi_vm(), FALLBACK_CAPS) == (None, False, ())
    assert rhv_platform(uefi_vm(cpu=CpuModel(model="Imaginary")), FALLBACK_CAPS) == (
        None,
        False,
        (
            "the source's CPU model Imaginary: libvirt here does not know that name; "
            "using the cluster's CPU type",
        ),
    )
    on_pc = replace(SECURE_CAPS, machine="pc")
    assert rhv_platform(uefi_vm(), on_pc) == (
        None,
        False,
        ("secure boot is off: it needs machine type q35, and the guest has pc",),
    )
