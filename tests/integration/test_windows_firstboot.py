"""Windows conversions of the first-boot, foreign-service, refusal and UEFI variants
(tests/guests/windows_variants.py), read back from the output disks with libguestfs.

Each guest is converted once (module fixture); the tests only read the results.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import vmshift
from tests.guests import hive
from tests.guests.hive import ExpandSz
from tests.guests.windows_variants import (
    DISK_CLASS,
    HDC_CLASS,
    MOUSE_CLASS,
    SCSI_CLASS,
    SYSTEM_CLASS,
    XEN_PRODUCT,
    BuiltVariant,
    build_variants,
)

pytestmark = pytest.mark.slow

guestfs = pytest.importorskip("guestfs")

MAC = "52:54:00:4a:1b:2c"
FB_DIR = "/Program Files/vmshift/firstboot"
FB_WIN = r"C:\Program Files\vmshift\firstboot"
VMWARE_TOOLS = "{D331847B-FB29-5372-9E43-12670306B431}"  # tests/guests/windows.py's product


@dataclass
class Converted:
    proc: subprocess.CompletedProcess[str]
    report: dict[str, object]
    system: hive.HiveHandle
    software: hive.HiveHandle
    files: dict[str, bytes | None]  # guest path -> content (None: absent)
    scripts: dict[str, str]  # file name -> text, in the first-boot scripts folder
    esp_files: dict[str, bytes | None]
    ccs: str

    def value(self, key: str, name: str) -> object:
        node = hive.find_key(self.system, key)
        return None if node is None else hive.get_value(self.system, node, name)

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.report["warnings"]]  # type: ignore[attr-defined]


def _domain_xml(v: BuiltVariant, tmp: Path) -> Path:
    disks = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='{_fmt(d)}'/>"
        f"<source file='{d}'/><target dev='sd{chr(97 + i)}' bus='sata'/></disk>"
        for i, d in enumerate(v.disks)
    )
    xml = tmp / f"{v.name}.xml"
    xml.write_text(
        f"<domain type='kvm'><name>{v.name}</name><memory unit='MiB'>2048</memory>"
        "<vcpu>2</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
        f"<devices>{disks}<interface type='network'><mac address='{MAC}'/>"
        "<source network='default'/><model type='vmxnet3'/></interface></devices></domain>"
    )
    return xml


def _fmt(path: Path) -> str:
    return "qcow2" if path.suffix == ".qcow2" else "raw"


def _read_output(out: Path, name: str, root_part: int, work: Path) -> dict[str, object]:
    disks = sorted(out.glob(f"{name}-sd*"))
    assert disks, f"no output disks in {out}"
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        for d in disks:
            g.add_drive_opts(str(d), format="raw", readonly=True)
        g.launch()
        dev = g.list_devices()[0]
        g.mount_ro(f"{dev}{root_part}", "/")

        def read(path: str) -> bytes | None:
            try:
                real = g.case_sensitive_path(path)
                return bytes(g.read_file(real)) if g.is_file(real) else None
            except RuntimeError:
                return None

        hives = {}
        for h in ("SYSTEM", "SOFTWARE"):
            local = work / h
            g.download(g.case_sensitive_path(f"/Windows/System32/config/{h}"), str(local))
            hives[h] = hive.open_hive(local)
        files = {p: read(p) for p in (f"{FB_DIR}/rhsrvany.exe", f"{FB_DIR}/firstboot.bat")}
        scripts_dir = g.case_sensitive_path(f"{FB_DIR}/scripts")
        scripts = {}
        if g.is_dir(scripts_dir):
            for n in sorted(g.ls(scripts_dir)):
                scripts[n] = bytes(g.read_file(f"{scripts_dir}/{n}")).decode("ascii")
        g.umount_all()
        esp_files: dict[str, bytes | None] = {}
        if root_part == 3:  # UEFI layout: the ESP is partition 1
            g.mount_ro(f"{dev}1", "/")
            esp_files = {
                p: read(p) for p in ("/EFI/BOOT/BOOTX64.EFI", "/EFI/Microsoft/Boot/bootmgfw.efi")
            }
            esp_files["ls /EFI"] = "\n".join(sorted(g.ls("/EFI"))).encode()
        return {"hives": hives, "files": files, "scripts": scripts, "esp": esp_files}
    finally:
        g.close()


def _convert(v: BuiltVariant, tmp: Path, tool: Path, *, xml: bool) -> Converted:
    out = tmp / f"out-{v.name}"
    out.mkdir()
    report = tmp / f"{v.name}.json"
    source: list[str | Path] = (
        ["-i", "libvirtxml", _domain_xml(v, tmp)] if xml else ["-i", "disk", *v.disks]
    )
    name = [] if xml else ["--name", v.name]
    args: list[str | Path] = ["convert", *source, *name, "-o", "local", "-os", out]
    args += ["--firstboot-tool", tool, "--report", report]
    proc = vmshift(args)
    assert proc.returncode == 0, proc.stderr
    work = tmp / f"read-{v.name}"
    work.mkdir()
    seen = _read_output(out, v.name, v.base.root_partition, work)
    hives: dict[str, hive.HiveHandle] = seen["hives"]  # type: ignore[assignment]
    return Converted(
        proc=proc,
        report=json.loads(report.read_text()),
        system=hives["SYSTEM"],
        software=hives["SOFTWARE"],
        files=seen["files"],  # type: ignore[arg-type]
        scripts=seen["scripts"],  # type: ignore[arg-type]
        esp_files=seen["esp"],  # type: ignore[arg-type]
        ccs=f"ControlSet{v.base.control_set:03d}",
    )


@pytest.fixture(scope="module")
def tool(firstboot_tool: Path) -> Path:
    """The stand-in wrapper, given explicitly with --firstboot-tool."""
    return firstboot_tool


@pytest.fixture(scope="module")
def variants() -> dict[str, BuiltVariant]:
    return build_variants()


@pytest.fixture(scope="module")
def vmw(variants: dict[str, BuiltVariant], tool: Path) -> Converted:
    with tempfile.TemporaryDirectory(prefix="vmshift-fb-") as tmp:
        return _convert(variants["win10-vmw-static"], Path(tmp), tool, xml=True)


@pytest.fixture(scope="module")
def xen(variants: dict[str, BuiltVariant], tool: Path) -> Converted:
    with tempfile.TemporaryDirectory(prefix="vmshift-fb-") as tmp:
        return _convert(variants["win10-uefi-xen"], Path(tmp), tool, xml=False)


# ---------------------------------------------------------------------------------------------
# The VMware guest with a static address


def test_firstboot_service_is_registered(vmw: Converted) -> None:
    key = rf"{vmw.ccs}\Services\rhsrvany"
    assert vmw.value(key, "Type") == 0x10
    assert vmw.value(key, "Start") == 2
    assert vmw.value(key, "ErrorControl") == 1
    assert vmw.value(key, "ImagePath") == ExpandSz(f'"{FB_WIN}\\rhsrvany.exe"')
    assert vmw.value(key, "ObjectName") == "LocalSystem"
    assert vmw.value(key, "DisplayName") == "vmshift first boot"
    params = rf"{key}\Parameters"
    assert vmw.value(params, "CommandLine") == f'cmd.exe /c "{FB_WIN}\\firstboot.bat"'
    assert vmw.value(params, "PWD") == FB_WIN


def test_wrapper_and_dispatcher_are_in_the_guest(vmw: Converted, tool: Path) -> None:
    assert vmw.files[f"{FB_DIR}/rhsrvany.exe"] == tool.read_bytes()
    bat = vmw.files[f"{FB_DIR}/firstboot.bat"]
    assert bat is not None
    text = bat.decode("ascii")
    assert f'set "here={FB_WIN}"' in text and "\r\n" in text
    assert "sc config rhsrvany start= disabled" in text and "shutdown /r" in text


def test_scripts_uninstall_tools_then_restore_the_address(vmw: Converted) -> None:
    names = list(vmw.scripts)
    assert names == sorted(names)
    uninstall = [n for n in names if "uninstall-vmware-tools" in n]
    restore = [n for n in names if "restore-ip" in n]
    assert len(uninstall) == 1 and len(restore) == 1
    assert names.index(uninstall[0]) < names.index(restore[0])
    assert f"msiexec.exe /x {VMWARE_TOOLS} /qn /norestart" in vmw.scripts[uninstall[0]]
    nic = vmw.scripts[restore[0]]
    assert 'set "mac=52-54-00-4A-1B-2C"' in nic
    assert "static 192.168.50.20 255.255.255.0 192.168.50.1 1" in nic
    assert 'add address "!nic!" 10.20.0.5 255.255.0.0' in nic
    assert 'set dns "!nic!" static 192.168.50.2' in nic
    assert 'add dns "!nic!" 192.168.50.3 index=2' in nic


def test_vmware_drivers_disabled_and_filters_removed(vmw: Converted) -> None:
    services = rf"{vmw.ccs}\Services"
    for name in ("vmStorFl", "vsepflt", "vmmouse", "vmci", "vmhgfs", "VMTools"):
        assert vmw.value(rf"{services}\{name}", "Start") == 4, name
    # Device-bound drivers stay: they never load without their VMware device.
    assert vmw.value(rf"{services}\pvscsi", "Start") == 0
    assert vmw.value(rf"{services}\vm3dmp", "Start") == 3
    # The service keys and files are still there: disabled, not deleted.
    assert vmw.value(rf"{services}\vmStorFl", "ImagePath") is not None
    classes = rf"{vmw.ccs}\Control\Class"
    assert vmw.value(rf"{classes}\{DISK_CLASS}", "UpperFilters") is None
    assert vmw.value(rf"{classes}\{MOUSE_CLASS}", "UpperFilters") == ["mouclass"]
    order = rf"{vmw.ccs}\Control\NetworkProvider\Order"
    assert vmw.value(order, "ProviderOrder") == "RDPNP,LanmanWorkstation,webclient"
    steps = {c["step"] for c in vmw.report["changes"]}  # type: ignore[attr-defined]
    assert {"services", "firstboot"} <= steps


def test_warnings_for_policy_security_bitlocker_and_ldm(vmw: Converted) -> None:
    text = "\n".join(vmw.warnings)
    assert "Group Policy restricts device installation" in text
    assert "Symantec Endpoint Protection" in text
    assert "BitLocker" in text and "/dev/sdb1" in text
    assert "dynamic-disk (LDM)" in text and "/dev/sdb2" in text


# ---------------------------------------------------------------------------------------------
# The UEFI guest with Xen PV drivers


def test_uefi_fallback_loader_is_added(xen: Converted) -> None:
    loader = xen.esp_files["/EFI/Microsoft/Boot/bootmgfw.efi"]
    assert loader is not None
    assert xen.esp_files["/EFI/BOOT/BOOTX64.EFI"] == loader
    changes = [c for c in xen.report["changes"] if c["step"] == "uefi"]  # type: ignore[attr-defined]
    assert len(changes) == 1


def test_xen_filters_removed_and_drivers_disabled(xen: Converted) -> None:
    services = rf"{xen.ccs}\Services"
    for name in ("xenfilt", "xenbus", "xenvbd", "xeniface"):
        assert xen.value(rf"{services}\{name}", "Start") == 4, name
    classes = rf"{xen.ccs}\Control\Class"
    assert xen.value(rf"{classes}\{HDC_CLASS}", "UpperFilters") is None
    assert xen.value(rf"{classes}\{SYSTEM_CLASS}", "UpperFilters") is None
    assert xen.value(rf"{classes}\{SCSI_CLASS}", "LowerFilters") == ["iaStorF"]


def test_xen_tools_uninstalled_at_first_boot(xen: Converted) -> None:
    scripts = [t for n, t in xen.scripts.items() if "uninstall-citrix-xenserver" in n]
    assert len(scripts) == 1
    assert f"msiexec.exe /x {XEN_PRODUCT} /qn /norestart" in scripts[0]
    # -i disk gives no MAC and the guest has no static address: nothing to restore.
    assert not [n for n in xen.scripts if "restore-ip" in n]


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(
    ("guest", "words"),
    [("win10-hibernated", "is hibernated"), ("win11-faststartup", "Fast Startup on")],
)
def test_hibernated_guests_are_refused_and_leave_nothing(
    guest: str,
    words: str,
    variants: dict[str, BuiltVariant],
    windows_guests: dict[str, object],
    tmp_path: Path,
) -> None:
    disks = variants[guest].disks if guest in variants else windows_guests[guest].disks  # type: ignore[attr-defined]
    out = tmp_path / "out"
    out.mkdir()
    proc = vmshift(["convert", "-i", "disk", *disks, "-o", "local", "-os", out])
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1 and words in errors[0], proc.stderr
    assert "shutdown /s /t 0" in proc.stderr
    assert list(out.iterdir()) == []
