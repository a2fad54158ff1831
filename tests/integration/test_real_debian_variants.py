"""The real Debian 12 "VMware" variants: LVM root (BIOS) and GPT + UEFI. Each boots on a VMware
disk controller, does not boot on virtio-blk, and inspects as its builder recorded.

The UEFI variant's VMX puts its disk on pvscsi, as VMware does, but it is booted here on SATA
(AHCI, which its initramfs also carries): Debian 12's OVMF (edk2 2022.11) is built without the
PVSCSI and LSI MPT drivers (upstream turned them off by default), so with the disk on pvscsi the
firmware finds nothing to boot ("map: No mapping found", then the UEFI shell).

Like test_real_debian.py these are the before-pictures for the conversion tests. Under TCG each
boot takes one to three minutes; the first run also debootstraps each variant's tree (two to
three minutes) and builds its image (three to five minutes). UEFI boots use Debian's OVMF.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.boot import DEFAULT_OVMF_CODE, DEFAULT_OVMF_VARS, boot_to_login
from tests.guests.compare import compare_report
from tests.guests.debian_real import (
    LVM,
    MAC,
    ROOT_PASSWORD,
    UEFI,
    Variant,
    build_real_debian_lvm,
    build_real_debian_uefi,
)
from tests.guests.manifest import BuiltGuest
from vmshift.verify.console import BootOutcome

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realguest,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("debootstrap"),
        reason="building the guests needs root and debootstrap",
    ),
    pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="needs qemu-system-x86_64"),
]

_BUILDERS: dict[str, tuple[Variant, Callable[[], BuiltGuest]]] = {
    "lvm": (LVM, build_real_debian_lvm),
    "uefi": (UEFI, build_real_debian_uefi),
}
_VMX_LINE = re.compile(r'^(?P<key>[A-Za-z0-9_.:]+) = "(?P<value>[^"]*)"$')
# Shows what the guest booted from: the command line, the root device and the firmware.
_PROBE = (
    "cat /proc/cmdline; findmnt -n -o SOURCE /; "
    "if [ -d /sys/firmware/efi ]; then echo firmware=uefi; else echo firmware=bios; fi"
)


@pytest.fixture(scope="module", params=sorted(_BUILDERS))
def variant(request: pytest.FixtureRequest) -> tuple[Variant, BuiltGuest]:
    spec, build = _BUILDERS[request.param]
    guest = build()
    facts = json.loads(guest.extra["facts"].read_text())
    print(f"\n{guest.name}: image built in {facts['build_seconds']} s (cached after)")
    return spec, guest


def _parse_vmx(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = _VMX_LINE.match(line)
        assert m is not None, f"not a VMX line: {line!r}"
        entries[m["key"].lower()] = m["value"]
    return entries


def _firmware_args(spec: Variant) -> dict[str, Any]:
    if spec.firmware != "uefi":
        return {"firmware": "bios"}
    if not (DEFAULT_OVMF_CODE.exists() and DEFAULT_OVMF_VARS.exists()):
        pytest.skip("needs Debian's ovmf package")
    return {"firmware": "uefi"}


def test_vmx_describes_a_vmware_vm_with_the_vmdk(variant: tuple[Variant, BuiltGuest]) -> None:
    spec, guest = variant
    vmx_path = guest.extra["vmx"]
    vmx = _parse_vmx(vmx_path)
    (disk,) = guest.disks
    assert vmx_path.parent / vmx["scsi0:0.filename"] == disk
    assert disk.suffix == ".vmdk" and disk.exists()
    assert vmx["scsi0.virtualdev"] == "pvscsi"
    assert vmx["ethernet0.virtualdev"] == "vmxnet3"
    assert vmx["ethernet0.address"] == MAC
    assert vmx["firmware"] == ("efi" if spec.firmware == "uefi" else "bios")
    assert vmx["displayname"] == spec.name


def test_inspection_matches_manifest(variant: tuple[Variant, BuiltGuest]) -> None:
    _, guest = variant
    (disk,) = guest.disks
    before = sha256(disk)
    proc = vmshift(["inspect", "--json", disk])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert compare_report(report, guest) == []
    assert sha256(disk) == before, "inspection wrote to the image"


def _vmware_bus(spec: Variant) -> str:
    """The VMware-like controller the source is booted on: see the module docstring."""
    return "sata" if spec.firmware == "uefi" else "pvscsi"


def test_boots_to_login_on_a_vmware_bus(
    variant: tuple[Variant, BuiltGuest], tmp_path: Path
) -> None:
    spec, guest = variant
    (disk,) = guest.disks
    before = sha256(disk)
    result = boot_to_login(
        disk,
        disk_bus=_vmware_bus(spec),
        nic_model="vmxnet3",
        mac=MAC,
        command=_PROBE,
        password=ROOT_PASSWORD,
        log_path=tmp_path / "serial.log",
        **_firmware_args(spec),
    )
    print(f"\n{guest.name}: login on {_vmware_bus(spec)} after {result.seconds:.0f} s")
    assert result.outcome is BootOutcome.LOGIN, result.tail()
    assert result.command_status == 0, result.command_error or result.tail()
    out = result.command_output or ""
    assert f"root={spec.root_device} " in out
    assert re.search(rf"^{re.escape(spec.root_device)}$", out, re.MULTILINE), out
    assert f"firmware={spec.firmware}" in out
    assert sha256(disk) == before, "booting wrote to the source image"


def test_does_not_boot_on_virtio_blk(variant: tuple[Variant, BuiltGuest], tmp_path: Path) -> None:
    spec, guest = variant
    (disk,) = guest.disks
    result = boot_to_login(
        disk,
        disk_bus="virtio-blk",
        nic_model="virtio-net-pci",
        log_path=tmp_path / "serial.log",
        **_firmware_args(spec),
    )
    print(f"\n{guest.name}: {result.outcome} on virtio-blk after {result.seconds:.0f} s")
    assert result.outcome is BootOutcome.NO_ROOT, result.tail()
    # boot_to_login stops reading at its first match, so the log may end mid-sentence
    assert "Gave up waiting for root" in result.serial_log
