"""windows_inspection's reading of a Windows root the way libguestfs 1.48 reads it (system
root, cmd.exe's architecture, the SOFTWARE and SYSTEM hives, the Uninstall keys, the osinfo
table), and its refusals: every layout it does not cover goes to inspect_os, with the reason.
(tests/integration/test_inspect_fastpath.py compares it with inspect_os on real appliances.)"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from tests.guests import hive
from tests.guests.windows import SUBSYSTEM_CONSOLE, pe_image
from tests.unit.test_linux_inspection import FakeDisks, FakeFs
from vmshift.formats.pe import pe_arch
from vmshift.formats.release_files import Unsure
from vmshift.guest import windows_inspection
from vmshift.guest.registry import ExpandSz, Hive, RegData
from vmshift.guest.windows_inspection import windows_osinfo

NT = r"Microsoft\Windows NT\CurrentVersion"
UNINSTALL = r"Microsoft\Windows\CurrentVersion\Uninstall"
SERVER_2022: dict[str, RegData] = {
    "ProductName": "Windows Server 2022 Standard",
    "CurrentVersion": "6.3",  # what Windows 10 and later still write, for old programs
    "CurrentMajorVersionNumber": 10,
    "CurrentMinorVersionNumber": 0,
    "InstallationType": "Server",
}
SYSTEM: dict[str, dict[str, RegData]] = {
    "Select": {"Current": 2, "Default": 2},
    r"ControlSet002\Services\Tcpip\Parameters": {"Hostname": "w2022", "Domain": ""},
}


class WinFs(FakeFs):
    """An NTFS volume: names looked up in any case, hives as bytes, downloads to the host."""

    def __init__(self, files: dict[str, str | bytes]) -> None:
        super().__init__(dict.fromkeys(files, ""))
        self.files = {p: d if isinstance(d, bytes) else d.encode() for p, d in files.items()}

    def case_sensitive_path(self, path: str) -> str:
        real = ""
        for part in path.strip("/").split("/"):
            names = self.ls(real or "/")
            match = [n for n in names if n.lower() == part.lower()]
            real += "/" + (match[0] if match else part)
        return real or "/"

    def download(self, path: str, local: str) -> None:
        Path(local).write_bytes(self._data(path))


def hive_bytes(tmp_path: Path, tree: dict[str, dict[str, RegData]]) -> bytes:
    path = tmp_path / "new-hive"
    hive.build_hive(path, tree)
    data = path.read_bytes()
    path.unlink()
    return data


def windows_fs(
    tmp_path: Path,
    *,
    root: str = "/Windows",
    software: dict[str, dict[str, RegData]] | None = None,
    system: dict[str, dict[str, RegData]] | None = None,
    arch: str = "x86_64",
    extra: dict[str, str | bytes] | None = None,
) -> WinFs:
    software = {NT: SERVER_2022} if software is None else software
    files: dict[str, str | bytes] = {
        f"{root}/System32/cmd.exe": pe_image(arch, SUBSYSTEM_CONSOLE),
        f"{root}/System32/config/SOFTWARE": hive_bytes(tmp_path, software),
        f"{root}/System32/config/SYSTEM": hive_bytes(
            tmp_path, SYSTEM if system is None else system
        ),
        "/pagefile.sys": "",
        **(extra or {}),
    }
    return WinFs(files)


NTFS = {"TYPE": "ntfs"}


def inspect(devices: dict[str, tuple[dict[str, str], Any]], tmp_path: Path) -> Any:
    hives = tmp_path / "hives"
    hives.mkdir(exist_ok=True)
    return windows_inspection.inspect_windows(FakeDisks(devices), {}, hives)


def declined(devices: dict[str, tuple[dict[str, str], Any]], tmp_path: Path, caplog: Any) -> str:
    caplog.set_level(logging.INFO, logger="vmshift.guest.windows_inspection")
    assert inspect(devices, tmp_path) is None
    return str(caplog.text)


def test_a_server_2022_root_behind_a_system_reserved_volume(tmp_path: Path) -> None:
    reserved = WinFs({"/bootmgr": "", "/Boot/BCD": "", "/System Volume Information/x": ""})
    facts = inspect(
        {"/dev/sda1": (NTFS, reserved), "/dev/sda2": (NTFS, windows_fs(tmp_path))}, tmp_path
    )
    assert (facts.root, facts.type, facts.distro) == ("/dev/sda2", "windows", "windows")
    assert (facts.product_name, facts.product_variant) == ("Windows Server 2022 Standard", "Server")
    # CurrentMajor/MinorVersionNumber win over CurrentVersion's 6.3.
    assert (facts.major_version, facts.minor_version, facts.osinfo) == (10, 0, "win2k22")
    assert (facts.arch, facts.hostname) == ("x86_64", "w2022")
    assert (facts.package_format, facts.package_manager) == ("unknown", "unknown")
    assert facts.mountpoints == {"/": "/dev/sda2"} and facts.filesystems == ("/dev/sda2",)
    assert not facts.inspect_os
    registry = facts.windows
    assert (registry.systemroot, registry.current_control_set) == ("/Windows", "ControlSet002")
    assert registry.software_hive == "/Windows/System32/config/SOFTWARE"
    assert registry.system_hive == "/Windows/System32/config/SYSTEM"


def test_an_xp_root_in_upper_case_with_its_version_in_a_string(tmp_path: Path) -> None:
    software: dict[str, dict[str, RegData]] = {
        NT: {"ProductName": "Microsoft Windows XP", "CurrentVersion": "5.1"}
    }
    fs = windows_fs(tmp_path, root="/WINDOWS", software=software, arch="i386")
    fs.files["/boot.ini"] = b"[operating systems]\n"  # read only when no standard root is found
    facts = inspect({"/dev/sda1": (NTFS, fs)}, tmp_path)
    assert (facts.major_version, facts.minor_version, facts.osinfo) == (5, 1, "winxp")
    assert (facts.arch, facts.product_variant) == ("i386", "unknown")
    assert facts.windows.systemroot == "/WINDOWS"
    assert facts.windows.software_hive == "/WINDOWS/System32/config/SOFTWARE"


def test_without_a_version_the_variant_is_not_read(tmp_path: Path) -> None:
    software: dict[str, dict[str, RegData]] = {
        NT: {"ProductName": "Windows", "InstallationType": "Client"}
    }
    facts = inspect({"/dev/sda1": (NTFS, windows_fs(tmp_path, software=software))}, tmp_path)
    assert (facts.major_version, facts.minor_version) == (0, 0)
    assert (facts.product_variant, facts.osinfo) == ("unknown", "unknown")


def test_no_hostname_is_unknown(tmp_path: Path) -> None:
    fs = windows_fs(tmp_path, system={"Select": {"Current": 1}})
    facts = inspect({"/dev/sda1": (NTFS, fs)}, tmp_path)
    assert (facts.windows.current_control_set, facts.hostname) == ("ControlSet001", "unknown")


def test_an_esp_and_a_microsoft_reserved_partition_are_passed_over(tmp_path: Path) -> None:
    esp = WinFs({"/EFI/Microsoft/Boot/bootmgfw.efi": ""})
    facts = inspect(
        {
            "/dev/sda1": ({"TYPE": "vfat"}, esp),
            "/dev/sda2": ({"PART_ENTRY_TYPE": "e3c9e316-0b5c-4db8-817d-f92df00215ae"}, None),
            "/dev/sda3": (NTFS, windows_fs(tmp_path)),
        },
        tmp_path,
    )
    assert facts.root == "/dev/sda3"


def test_the_hives_are_left_for_the_rest_of_inspection(tmp_path: Path) -> None:
    facts = inspect({"/dev/sda1": (NTFS, windows_fs(tmp_path))}, tmp_path)
    copies = sorted(p.name for p in (tmp_path / "hives").iterdir())
    assert copies == [
        "dev_sda1_Windows_System32_config_SOFTWARE",
        "dev_sda1_Windows_System32_config_SYSTEM",
    ]
    assert facts.windows is not None


@pytest.mark.parametrize(
    ("devices", "reason"),
    [
        ({"/dev/sda1": ({"TYPE": "BitLocker"}, None)}, "/dev/sda1 holds BitLocker"),
        ({"/dev/sda1": ({"TYPE": "ext4"}, None)}, "/dev/sda1 holds ext4"),
        (
            {"/dev/sda1": ({"PART_ENTRY_TYPE": "0x42"}, None)},
            "/dev/sda1 is part of a dynamic disk (LDM)",
        ),
        ({"/dev/sda1": (NTFS, WinFs({"/etc/fstab": "", "/Windows/x": ""}))}, "/dev/sda1 has /etc"),
        ({"/dev/sda1": (NTFS, WinFs({"/boot.ini": ""}))}, "boot.ini would be read"),
        ({"/dev/sda1": (NTFS, WinFs({"/DOS/COMMAND.COM": ""}))}, "looks like a DOS root"),
        ({"/dev/sda1": (NTFS, WinFs({"/Users/x": ""}))}, "no Windows root found"),
    ],
)
def test_declines(
    devices: dict[str, tuple[dict[str, str], Any]], reason: str, tmp_path: Path, caplog: Any
) -> None:
    text = declined(devices, tmp_path, caplog)
    assert "Windows inspection declined: " in text and reason in text


def test_two_windows_roots_are_declined_and_nothing_is_left_mounted(tmp_path: Path) -> None:
    disks = FakeDisks(
        {"/dev/sda1": (NTFS, windows_fs(tmp_path)), "/dev/sdb1": (NTFS, windows_fs(tmp_path))}
    )
    with pytest.raises(Unsure, match="two Windows roots, /dev/sdb1 and /dev/sda1"):
        windows_inspection._inspect(disks, {}, tmp_path)
    assert disks.mounted is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"software": {UNINSTALL: {}}}, "no Microsoft\\Windows NT\\CurrentVersion key"),
        ({"system": {"Other": {}}}, "no Select\\Current"),
        ({"software": {NT: {"CurrentVersion": 6}}}, "CurrentVersion is not a string"),
        ({"software": {NT: {"CurrentVersion": "six"}}}, "CurrentVersion holds no version"),
    ],
)
def test_registries_it_does_not_read_as_libguestfs_does_are_declined(
    change: dict[str, Any], reason: str, tmp_path: Path, caplog: Any
) -> None:
    fs = windows_fs(tmp_path, **change)
    assert reason in declined({"/dev/sda1": (NTFS, fs)}, tmp_path, caplog)


def test_an_arm64_cmd_exe_is_declined(tmp_path: Path, caplog: Any) -> None:
    fs = windows_fs(tmp_path)
    header = bytearray(fs.files["/Windows/System32/cmd.exe"])
    header[0x84:0x86] = (0xAA64).to_bytes(2, "little")  # the machine field after "PE\0\0"
    fs.files["/Windows/System32/cmd.exe"] = bytes(header)
    assert "not an i386 or x86_64 executable" in declined(
        {"/dev/sda1": (NTFS, fs)}, tmp_path, caplog
    )


def test_pe_arch() -> None:
    assert pe_arch(pe_image("x86_64", SUBSYSTEM_CONSOLE)) == "x86_64"
    assert pe_arch(pe_image("i386", SUBSYSTEM_CONSOLE)) == "i386"
    assert pe_arch(b"\x7fELF" + bytes(60)) is None
    assert pe_arch(b"MZ" + bytes(62)) is None  # no PE header where e_lfanew points


@pytest.mark.parametrize(
    ("version", "name", "variant", "osinfo"),
    [
        ((5, 1), "Microsoft Windows XP", "unknown", "winxp"),
        ((5, 2), "Microsoft Windows XP Professional x64 Edition", "unknown", "winxp"),
        ((5, 2), "Microsoft Windows Server 2003 R2", "unknown", "win2k3r2"),
        ((5, 2), "Microsoft Windows Server 2003", "unknown", "win2k3"),
        ((6, 0), "Windows Vista (TM) Business", "Client", "winvista"),
        ((6, 1), "Windows Server 2008 R2 Standard", "Server", "win2k8r2"),
        ((6, 1), "Windows 7 Professional", "Client", "win7"),
        ((6, 3), "Windows Server 2012 R2", "Server Core", "win2k12r2"),
        ((6, 3), "Windows 8.1 Pro", "Client", "win8.1"),
        ((10, 0), "Windows 10 Pro", "Client", "win10"),
        ((10, 0), "Windows Server 2019 Datacenter", "Server", "win2k19"),
        ((10, 0), "Windows Server 2016 Standard", "Server", "win2k16"),
        ((10, 0), "Windows Server 2022 Standard", "Server", "win2k22"),
        ((6, 4), "Windows 10 Technical Preview", "Client", "unknown"),
    ],
)
def test_osinfo(version: tuple[int, int], name: str, variant: str, osinfo: str) -> None:
    assert windows_osinfo(*version, name, variant) == osinfo


def test_applications_native_and_wow64_with_a_display_name(tmp_path: Path) -> None:
    tree: dict[str, dict[str, RegData]] = {
        rf"{UNINSTALL}\{{B-GUID}}": {
            "DisplayName": "VMware Tools",
            "DisplayVersion": "12.1.5",
            "Publisher": "VMware, Inc.",
        },
        rf"{UNINSTALL}\NoName": {"UninstallString": "x.exe"},  # no DisplayName: left out
        rf"{UNINSTALL}\Empty": {"DisplayName": ""},  # listed by its key's name
        rf"{UNINSTALL}\Expand": {"DisplayName": ExpandSz("7-Zip"), "DisplayVersion": 19},
        rf"WOW6432Node\{UNINSTALL}\A32": {"DisplayName": "Old App", "Publisher": "Someone"},
    }
    path = tmp_path / "SOFTWARE"
    hive.build_hive(path, tree)
    apps = windows_inspection.applications(Hive(path))
    # In the order of the keys' names, as libguestfs sorts them.
    assert [(a.name, a.version, a.publisher) for a in apps] == [
        ("Old App", "", "Someone"),
        ("Empty", "", ""),
        ("7-Zip", "", ""),  # a DWORD DisplayVersion is not a string: left empty
        ("VMware Tools", "12.1.5", "VMware, Inc."),
    ]
