"""VirtIO drivers in converted Windows guests: the files, the registry, the first-boot queue
and the output XML, read back from the output disks.

Each phony Windows guest is converted once (module fixture) with a fake virtio-win tree, some
from the directory and some from an ISO of it; one appliance then reads every output.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.conftest import vmshift
from tests.guests import hive
from tests.guests.hive import ExpandSz
from tests.guests.manifest import BuiltGuest
from tests.guests.virtio_win import build_iso, build_tree, stand_in
from tests.guests.windows import GUESTS, SUBSYSTEM_CONSOLE, pe_image
from vmshift.guest.accel import detect_accelerator

pytestmark = pytest.mark.slow

guestfs = pytest.importorskip("guestfs")

SCSI_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
FB_SCRIPTS = "/Program Files/vmshift/firstboot/scripts"
VIRTIO_DIR = "Drivers/VirtIO"
BY_NAME = {g.name: g for g in GUESTS}


@dataclass(frozen=True)
class Case:
    guest: str
    tree: str  # dir, iso, or wrong (a tree with nothing for this guest)
    block: str  # --block-driver
    release: str  # the folder the guest's drivers must come from
    arch: str


CASES = {
    c.guest: c
    for c in (
        Case("win-xp", "iso", "virtio-blk", "xp", "x86"),
        Case("win7", "dir", "virtio-blk", "w7", "amd64"),
        Case("win2008r2", "dir", "virtio-scsi", "2k8R2", "amd64"),
        Case("win10", "dir", "virtio-blk", "w10", "amd64"),
        Case("win2022", "iso", "virtio-scsi", "2k22", "amd64"),
        Case("win11", "dir", "virtio-blk", "w11", "amd64"),  # UEFI
        Case("win10-uefi", "wrong", "virtio-blk", "", "amd64"),
    )
}
VIRTIO = [name for name, c in CASES.items() if c.tree != "wrong"]
PRE_WIN8 = ["win-xp", "win7", "win2008r2"]
WIN8_PLUS = ["win10", "win2022", "win11"]


@dataclass
class Converted:
    case: Case
    proc: subprocess.CompletedProcess[str]
    report: dict[str, object]
    xml: etree._Element
    system: hive.HiveHandle
    software: hive.HiveHandle
    virtio_files: dict[str, bytes]  # lower-case name -> content; {} when the folder is absent
    boot_sys: bytes | None  # System32/drivers/<viostor|vioscsi>.sys
    scripts: dict[str, str]
    ccs: str

    @property
    def driver(self) -> str:
        return "vioscsi" if self.case.block == "virtio-scsi" else "viostor"

    def value(self, key: str, name: str) -> object:
        node = hive.find_key(self.system, key)
        return None if node is None else hive.get_value(self.system, node, name)

    @property
    def verdict(self) -> str:
        return self.proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("virtio-win")
    full = build_tree(base / "virtio-win")
    return {
        "dir": full,
        "iso": build_iso(full, base / "virtio-win.iso"),
        # Drivers only for 32-bit Windows 7: nothing for a 64-bit Windows 10.
        "wrong": build_tree(base / "virtio-win-w7-x86", releases=["w7"], archs=("x86",)),
    }


def _convert(
    g: BuiltGuest, case: Case, tree: Path, tool: Path, out: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, object]]:
    out.mkdir()
    report = out.parent / f"{case.guest}.json"
    args: list[str | Path] = ["convert", "-i", "disk", *g.disks, "--name", case.guest]
    args += ["-o", "local", "-os", out, "--virtio-win", tree, "--block-driver", case.block]
    args += ["--firstboot-tool", tool, "--report", report]
    proc = vmshift(args)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(report.read_text())


def _read_guest(gfs: Any, root: str, systemroot: str, work: Path) -> dict[str, object]:
    gfs.mount_ro(root, "/")
    try:

        def real(path: str) -> str | None:
            try:
                found: str = gfs.case_sensitive_path(path)
            except RuntimeError:
                return None
            return found if gfs.exists(found) else None

        hives = {}
        for name in ("SYSTEM", "SOFTWARE"):
            local = work / name
            path = real(f"{systemroot}/System32/config/{name}")
            assert path, name
            gfs.download(path, str(local))
            hives[name] = hive.open_hive(local)
        files: dict[str, bytes] = {}
        vdir = real(f"{systemroot}/{VIRTIO_DIR}")
        if vdir:
            files = {n.lower(): bytes(gfs.read_file(f"{vdir}/{n}")) for n in gfs.ls(vdir)}
        boot: dict[str, bytes | None] = {}
        for drv in ("viostor", "vioscsi"):
            path = real(f"{systemroot}/System32/drivers/{drv}.sys")
            boot[drv] = bytes(gfs.read_file(path)) if path else None
        scripts = {}
        sdir = real(FB_SCRIPTS)
        if sdir:
            scripts = {n: bytes(gfs.read_file(f"{sdir}/{n}")).decode() for n in gfs.ls(sdir)}
        return {"hives": hives, "files": files, "boot": boot, "scripts": scripts}
    finally:
        gfs.umount_all()


@pytest.fixture(scope="module")
def converted(
    windows_guests: dict[str, BuiltGuest],
    trees: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Converted]:
    tmp = tmp_path_factory.mktemp("win-drivers")
    tool = tmp / "rhsrvany.exe"
    tool.write_bytes(pe_image("i386", SUBSYSTEM_CONSOLE))
    runs = {}
    for name, case in CASES.items():
        runs[name] = _convert(windows_guests[name], case, trees[case.tree], tool, tmp / name)
    # One appliance reads every output.
    g = guestfs.GuestFS(python_return_dict=True)
    if not detect_accelerator().is_kvm:
        g.set_backend_settings(["force_tcg"])
    try:
        for name in CASES:
            g.add_drive_opts(str(tmp / name / f"{name}-sda"), format="raw", readonly=True)
        g.launch()
        devices = g.list_devices()
        result = {}
        for (name, case), dev in zip(CASES.items(), devices, strict=True):
            spec = BY_NAME[name]
            work = tmp / f"read-{name}"
            work.mkdir()
            seen = _read_guest(g, f"{dev}{spec.root_partition}", spec.systemroot, work)
            proc, report = runs[name]
            hives: dict[str, hive.HiveHandle] = seen["hives"]  # type: ignore[assignment]
            boot: dict[str, bytes | None] = seen["boot"]  # type: ignore[assignment]
            result[name] = Converted(
                case=case,
                proc=proc,
                report=report,
                xml=etree.fromstring((tmp / name / f"{name}.xml").read_bytes()),
                system=hives["SYSTEM"],
                software=hives["SOFTWARE"],
                virtio_files=seen["files"],  # type: ignore[arg-type]
                boot_sys=boot["vioscsi" if case.block == "virtio-scsi" else "viostor"],
                scripts=seen["scripts"],  # type: ignore[arg-type]
                ccs=f"ControlSet{spec.control_set:03d}",
            )
        return result
    finally:
        g.close()


def _stand_in(c: Converted, driver: str, file: str, release: str | None = None) -> bytes:
    return stand_in(driver, release or c.case.release, c.case.arch, file)


# ---------------------------------------------------------------------------------------------
# Files


@pytest.mark.parametrize("name", VIRTIO)
def test_driver_files_come_from_the_guests_release(
    converted: dict[str, Converted], name: str
) -> None:
    c = converted[name]
    files = c.virtio_files
    stem = c.driver
    driver = stem
    for ext in ("sys", "inf", "cat"):
        assert files[f"{stem}.{ext}"] == _stand_in(c, driver, f"{stem}.{ext}")
    netkvm_release = "w10" if name == "win11" else None  # the tree has no NetKVM for w11
    assert files["netkvm.sys"] == _stand_in(c, "NetKVM", "netkvm.sys", netkvm_release)
    assert files["netkvmco.dll"] == _stand_in(c, "NetKVM", "netkvmco.dll", netkvm_release)
    # Only .sys .inf .cat .dll: no installers.
    assert not [f for f in files if f.endswith(".exe")]
    if name == "win-xp":
        assert sorted(files) == sorted(
            [f"{s}.{e}" for s in ("viostor", "netkvm") for e in ("sys", "inf", "cat")]
            + ["netkvmco.dll", "qemu-ga-i386.msi"]
        )
    else:
        assert files["vioser.sys"] == _stand_in(c, "vioserial", "vioser.sys")
        assert files["balloon.sys"] == _stand_in(c, "Balloon", "balloon.sys")
        assert "qemu-ga-x86_64.msi" in files
    if name in WIN8_PLUS:
        assert files["qxldod.sys"] == _stand_in(c, "qxldod", "qxldod.sys")
        assert "fwcfg.inf" in files
        assert not [f for f in files if f.startswith("qemufwcfg")]  # conflicts with fwcfg


@pytest.mark.parametrize("name", VIRTIO)
def test_boot_driver_is_in_system32_drivers(converted: dict[str, Converted], name: str) -> None:
    c = converted[name]
    assert c.boot_sys == _stand_in(c, c.driver, f"{c.driver}.sys")


# ---------------------------------------------------------------------------------------------
# Registry


@pytest.mark.parametrize("name", VIRTIO)
def test_boot_driver_service(converted: dict[str, Converted], name: str) -> None:
    c = converted[name]
    key = rf"{c.ccs}\Services\{c.driver}"
    assert c.value(key, "Type") == 1
    assert c.value(key, "Start") == 0
    assert c.value(key, "ErrorControl") == 1
    assert c.value(key, "Group") == "SCSI miniport"
    assert c.value(key, "ImagePath") == ExpandSz(rf"System32\drivers\{c.driver}.sys")
    assert c.value(rf"{key}\Parameters\PnpInterface", "5") == 1
    if name == "win2008r2":  # runs from ControlSet002: the stale set is left alone
        assert hive.find_key(c.system, rf"ControlSet001\Services\{c.driver}") is None


def _hwids(driver: str) -> list[str]:
    dev = {"viostor": ("1001", "00021AF4", "1042"), "vioscsi": ("1004", "00081AF4", "1048")}
    legacy, subsys, modern = dev[driver]
    return [
        f"VEN_1AF4&DEV_{legacy}&SUBSYS_{subsys}&REV_00",
        f"VEN_1AF4&DEV_{legacy}&REV_00",
        f"VEN_1AF4&DEV_{modern}&SUBSYS_11001AF4&REV_01",
        f"VEN_1AF4&DEV_{modern}&REV_01",
    ]


@pytest.mark.parametrize("name", PRE_WIN8)
def test_pre_win8_critical_device_database(converted: dict[str, Converted], name: str) -> None:
    c = converted[name]
    for hwid in _hwids(c.driver):
        key = rf"{c.ccs}\Control\CriticalDeviceDatabase\pci#{hwid.lower()}"
        assert c.value(key, "Service") == c.driver, key
        assert c.value(key, "ClassGUID") == SCSI_CLASS
    # The guest's own entries are kept.
    assert c.value(rf"{c.ccs}\Control\CriticalDeviceDatabase\primary_ide_channel", "Service")
    assert hive.find_key(c.system, "DriverDatabase") is None


@pytest.mark.parametrize("name", WIN8_PLUS)
def test_win8_plus_driver_database(converted: dict[str, Converted], name: str) -> None:
    c = converted[name]
    inf = f"{c.driver}.inf"
    inf_key = rf"DriverDatabase\DriverInfFiles\{inf}"
    packages = c.value(inf_key, "")
    assert isinstance(packages, list) and len(packages) == 1
    package = packages[0]
    assert package.startswith(f"{inf}_amd64_")
    assert c.value(inf_key, "Active") == package
    configs = c.value(inf_key, "Configurations")
    assert isinstance(configs, list) and len(configs) == 1
    pkg_key = rf"DriverDatabase\DriverPackages\{package}"
    version = c.value(pkg_key, "Version")
    assert isinstance(version, bytes) and len(version) == 48
    assert "{" + str(uuid.UUID(bytes_le=version[8:24])).upper() + "}" == SCSI_CLASS
    config_key = rf"{pkg_key}\Configurations\{configs[0]}"
    assert c.value(config_key, "Service") == c.driver
    assert c.value(config_key, "ConfigFlags") == 0
    for hwid in _hwids(c.driver):
        assert c.value(rf"DriverDatabase\DeviceIds\PCI\{hwid}", inf) == b"\x01\xff\x00\x00"
        descriptor = rf"{pkg_key}\Descriptors\PCI\{hwid}"
        assert c.value(descriptor, "Configuration") == configs[0]
    assert hive.find_key(c.system, rf"{c.ccs}\Control\CriticalDeviceDatabase") is None


@pytest.mark.parametrize("name", VIRTIO)
def test_device_path_names_the_driver_folder(converted: dict[str, Converted], name: str) -> None:
    c = converted[name]
    node = hive.find_key(c.software, r"Microsoft\Windows\CurrentVersion")
    assert node is not None
    assert hive.get_value(c.software, node, "DevicePath") == ExpandSz(
        r"%SystemRoot%\inf;%SystemRoot%\Drivers\VirtIO"
    )


# ---------------------------------------------------------------------------------------------
# First boot


def _script(c: Converted, slug: str) -> str | None:
    found = [text for n, text in c.scripts.items() if slug in n]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.mark.parametrize("name", VIRTIO)
def test_first_boot_installs_drivers_and_agent(converted: dict[str, Converted], name: str) -> None:
    c = converted[name]
    drivers = _script(c, "install-virtio-drivers")
    agent = _script(c, "install-qemu-guest-agent")
    if name == "win-xp":
        assert drivers is None  # no pnputil: XP finds them through DevicePath
    elif name in WIN8_PLUS:
        assert (
            drivers
            and r'pnputil /add-driver "%SystemRoot%\Drivers\VirtIO\*.inf" /install' in drivers
        )
    else:
        assert drivers and r'pnputil -i -a "%SystemRoot%\Drivers\VirtIO\*.inf"' in drivers
    msi = "qemu-ga-i386.msi" if name == "win-xp" else "qemu-ga-x86_64.msi"
    assert agent and rf'msiexec /i "%SystemRoot%\Drivers\VirtIO\{msi}" /qn' in agent
    assert c.virtio_files[msi].startswith(b"MSI stand-in")
    names = sorted(c.scripts)
    if drivers:  # drivers first: the agent needs the vioserial driver
        assert names.index(next(n for n in names if "virtio-drivers" in n)) < names.index(
            next(n for n in names if "guest-agent" in n)
        )


# ---------------------------------------------------------------------------------------------
# What the output runs on


@pytest.mark.parametrize("name", VIRTIO)
def test_virtio_guests_get_virtio_devices(converted: dict[str, Converted], name: str) -> None:
    c = converted[name]
    buses = {t.get("bus") for t in c.xml.findall("devices/disk/target")}
    if c.case.block == "virtio-scsi":
        assert buses == {"scsi"}
        assert c.xml.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"  # type: ignore[union-attr]
    else:
        assert buses == {"virtio"}
    assert [m.get("type") for m in c.xml.findall("devices/interface/model")] == ["virtio"]
    installed = c.report["drivers_installed"]
    assert isinstance(installed, list)
    assert c.driver in installed and "NetKVM" in installed
    assert "configured with virtio drivers (" in c.verdict
    assert c.driver in c.verdict and "NetKVM" in c.verdict
    if name == "win-xp":
        assert c.xml.find("os/type").get("machine") == "pc"  # type: ignore[union-attr]


def test_no_drivers_for_the_guest_keeps_emulated_devices(converted: dict[str, Converted]) -> None:
    c = converted["win10-uefi"]
    assert {t.get("bus") for t in c.xml.findall("devices/disk/target")} == {"sata"}
    assert [m.get("type") for m in c.xml.findall("devices/interface/model")] == ["e1000"]
    assert c.report["drivers_installed"] == []
    assert "NOT configured with virtio drivers" in c.verdict
    assert "no VirtIO drivers for w10/amd64" in c.verdict
    assert "sata disks and a e1000 network card" in c.verdict
    # Nothing half-done: no files, no service, DevicePath as it was.
    assert c.virtio_files == {} and c.boot_sys is None
    assert hive.find_key(c.system, rf"{c.ccs}\Services\viostor") is None
    node = hive.find_key(c.software, r"Microsoft\Windows\CurrentVersion")
    assert node is not None
    assert hive.get_value(c.software, node, "DevicePath") == ExpandSz(r"%SystemRoot%\inf")
