"""The real Debian 12 "VMware" guest: it boots on VMware's devices and not on virtio.

These are the before-pictures for conversion tests: a converted copy must boot on virtio-blk,
which the source provably cannot. Booting is under TCG here (about a minute each, see
tests/guests/boot.py); the first run also debootstraps and builds the guest (about 3-4 minutes).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import sha256
from tests.guests.boot import boot_to_login
from tests.guests.debian_real import MAC, ROOT_PASSWORD
from tests.guests.manifest import BuiltGuest
from vmshift.verify.console import BootOutcome

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realguest,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("debootstrap"),
        reason="building the guest needs root and debootstrap",
    ),
    pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="needs qemu-system-x86_64"),
]

_VMX_LINE = re.compile(r'^(?P<key>[A-Za-z0-9_.:]+) = "(?P<value>[^"]*)"$')


def _parse_vmx(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _VMX_LINE.match(line)
        assert m is not None, f"not a VMX line: {line!r}"
        entries[m["key"].lower()] = m["value"]
    return entries


def test_vmx_describes_a_vmware_vm_with_the_vmdk(real_debian: BuiltGuest) -> None:
    vmx_path = real_debian.extra["vmx"]
    vmx = _parse_vmx(vmx_path)
    (disk,) = real_debian.disks
    assert vmx_path.parent / vmx["scsi0:0.filename"] == disk
    assert disk.suffix == ".vmdk" and disk.exists()
    assert vmx["scsi0.virtualdev"] == "pvscsi"
    assert vmx["scsi0:0.devicetype"] == "scsi-hardDisk"
    assert vmx["ethernet0.virtualdev"] == "vmxnet3"
    assert vmx["ethernet0.address"] == MAC
    assert vmx["firmware"] == "bios"
    assert vmx["guestos"] == "debian12-64"


def test_boots_to_login_on_pvscsi_and_vmxnet3(real_debian: BuiltGuest, tmp_path: Path) -> None:
    (disk,) = real_debian.disks
    before = sha256(disk)
    result = boot_to_login(
        disk,
        disk_bus="pvscsi",
        nic_model="vmxnet3",
        mac=MAC,
        command="cat /proc/cmdline; ip -br link",
        password=ROOT_PASSWORD,
        log_path=tmp_path / "serial.log",
    )
    assert result.outcome is BootOutcome.LOGIN, result.tail()
    assert result.command_status == 0, result.command_error or result.tail()
    assert result.command_output is not None
    assert "root=/dev/sda1" in result.command_output
    # The NIC is there (vmxnet3 driver loaded), just not under the name ifupdown expects.
    assert re.search(r"^ens\d+ ", result.command_output, re.MULTILINE), result.command_output
    assert sha256(disk) == before, "booting wrote to the source image"


def test_does_not_boot_on_virtio_blk(real_debian: BuiltGuest, tmp_path: Path) -> None:
    (disk,) = real_debian.disks
    before = sha256(disk)
    result = boot_to_login(
        disk,
        disk_bus="virtio-blk",
        nic_model="virtio-net-pci",
        log_path=tmp_path / "serial.log",
    )
    assert result.outcome is BootOutcome.NO_ROOT, result.tail()
    # The outcome is known as soon as the message starts: the rest of the line may not be read.
    assert "Gave up waiting for root" in result.serial_log
    assert sha256(disk) == before, "booting wrote to the source image"
