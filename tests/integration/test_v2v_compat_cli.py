"""virt-v2v's inputs and options through the real `vmshift convert` command line: what
`--print-source` shows for VMX files shaped like virt-v2v's own test inputs, and the per-mode
options (-io/-oo/-ip/-op) refused with one line naming them before anything is read."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import print_source_row as row
from tests.conftest import vmshift
from tests.integration.test_convert_bad_input import Vm, make_vm, refused

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

# A Windows Server 2019 VMX as ESXi writes it, trimmed: UEFI with secure boot, a generation id,
# a pvscsi and a SATA disk (the shape of virt-v2v's tests/test-i-vmx-7.vmx).
WIN2019 = """\
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "14"
displayName = "win2019"
guestOS = "windows2019srv-64"
firmware = "efi"
uefi.secureBoot.enabled = "TRUE"
memSize = "4096"
numvcpus = "2"
vm.genid = "-802103094701856339"
vm.genidX = "-5104727847056752683"
scsi0.present = "TRUE"
scsi0.virtualDev = "lsisas1068"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "win2019.vmdk"
sata0.present = "TRUE"
sata0:0.present = "TRUE"
sata0:0.fileName = "win2019_1.vmdk"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:0c:29:46:9b:0b"
"""

# A Workstation VM of the old kind: no firmware key (BIOS) and a bridged NIC with no name.
WORKSTATION = """\
.encoding = "UTF-8"
displayName = "ws-old"
memSize = "512"
ide0:0.present = "TRUE"
ide0:0.fileName = "ws-old.vmdk"
ethernet0.present = "TRUE"
ethernet0.connectionType = "bridged"
ethernet0.virtualDev = "e1000"
ethernet0.addressType = "generated"
ethernet0.generatedAddress = "00:0c:29:aa:bb:cc"
"""


def write_vm(folder: Path, text: str, disks: list[str]) -> Path:
    folder.mkdir()
    for disk in disks:
        subprocess.run(
            ["qemu-img", "create", "-f", "vmdk", str(folder / disk), "16M"],
            check=True,
            capture_output=True,
        )
    vmx = folder / "guest.vmx"
    vmx.write_text(text)
    return vmx


def print_source(vmx: Path) -> subprocess.CompletedProcess[str]:
    proc = vmshift(["convert", "-i", "vmx", vmx, "--print-source"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_print_source_of_a_secure_boot_guest_with_a_genid(tmp_path: Path) -> None:
    vmx = write_vm(tmp_path / "vm", WIN2019, ["win2019.vmdk", "win2019_1.vmdk"])
    out = print_source(vmx).stdout
    # The values virt-v2v's own --print-source shows for this VMX (its .expected file).
    assert row(out, "VM genid") == "2f0de9ad-5b7c-f4de-d53f-23b1115d28b9"
    assert row(out, "firmware") == "uefi"
    assert row(out, "UEFI secure boot") == "yes"
    assert row(out, "memory") == "4.0 GiB"
    assert row(out, "vCPUs") == "2"
    assert "network VM Network" in out and "00:0c:29:46:9b:0b" in out


def test_print_source_of_a_vmx_without_firmware_and_a_nameless_bridge(tmp_path: Path) -> None:
    vmx = write_vm(tmp_path / "vm", WORKSTATION, ["ws-old.vmdk"])
    proc = print_source(vmx)
    assert row(proc.stdout, "firmware") == "bios"
    assert row(proc.stdout, "UEFI secure boot") == "no"
    assert row(proc.stdout, "VM genid") == "-"
    assert "bridge ethernet0" in proc.stdout
    assert proc.stderr == ""


def test_print_source_warns_about_what_it_read_past(tmp_path: Path) -> None:
    text = WORKSTATION + 'firmware = "csm"\nvm.genid = "12"\n'
    vmx = write_vm(tmp_path / "vm", text, ["ws-old.vmdk"])
    proc = print_source(vmx)
    assert row(proc.stdout, "firmware") == "bios"
    assert proc.stderr.splitlines() == [
        f'vmshift: warning: {vmx}: unknown firmware = "csm", assuming BIOS as VMware does',
        f'vmshift: warning: {vmx}: vm.genid = "12", no vm.genidX: not a generation id; '
        "the guest will get a new one",
    ]


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    return make_vm(tmp_path / "vm")


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["-o", "rhv", "-os", "nfs:/x", "-oo", "compressed"], ["-oo compressed", "-o rhv"]),
        (["-o", "local", "-oo", "compressed"], ["-oo compressed", "-of qcow2"]),
        (["-o", "local", "-oo", "nope"], ["-oo nope", "-o local"]),
        (["-o", "local", "-op", "/etc/hostname"], ["-op", "-o local"]),
        (["-o", "local", "-ip", "/etc/hostname"], ["-ip", "-i vmx"]),
        (["-o", "local", "-io", "vddk-libdir=/x"], ["-io vddk-libdir=/x", "-i vmx"]),
    ],
)
def test_mode_options_a_mode_does_not_use(
    vm: Vm, tmp_path: Path, extra: list[str], names: list[str]
) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    if "-os" not in extra:
        extra = [*extra, "-os", str(outdir)]
    refused(["-i", "vmx", vm.vmx, *extra], sources=vm.files, outdir=outdir, names=names)


def test_oo_listing(vm: Vm) -> None:
    proc = vmshift(["convert", "-i", "vmx", vm.vmx, "-o", "qemu", "-oo", "?"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "Output options (-oo) of -o qemu:"
    assert "qemu-boot" in proc.stdout
