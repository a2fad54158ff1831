"""The pure parts of the Windows first-boot, service and check steps, on real hive files made by
tests/guests/hive.py and read back with vmshift's own reader: no appliance."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.guests import hive
from tests.guests.hive import ExpandSz, RegValue
from tests.guests.windows import SUBSYSTEM_CONSOLE, pe_image
from vmshift.convert.windows import checks, firstboot, netconfig, services, uefi, uninstall
from vmshift.errors import ConversionError
from vmshift.guest.registry import Hive, HiveEditor
from vmshift.model.inspection import ForeignKind
from vmshift.model.vm import Nic

CCS = "ControlSet001"
NET = rf"{CCS}\Control\Class\{netconfig.NET_CLASS}"
IFACES = rf"{CCS}\Services\Tcpip\Parameters\Interfaces"
A = "{11111111-2222-3333-4444-555555555555}"
B = "{AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE}"
WAN = "{99999999-2222-3333-4444-555555555555}"


def make_hive(tmp_path: Path, tree: dict[str, dict[str, RegValue]], name: str = "H") -> Hive:
    path = tmp_path / name
    hive.build_hive(path, tree)
    return Hive(path)


def nic(mac: str | None) -> Nic:
    return Nic(mac, "vmxnet3", "VM Network")


def adapter(guid: str, desc: str, **extra: RegValue) -> dict[str, RegValue]:
    values: dict[str, RegValue] = {
        "NetCfgInstanceId": guid.lower(),  # Windows stores it in either case
        "DriverDesc": desc,
        "ComponentId": "pci\\ven_15ad&dev_07b0",
        "Characteristics": 0x84,
    }
    values.update(extra)
    return values


STATIC: dict[str, RegValue] = {
    "EnableDHCP": 0,
    "IPAddress": ["192.168.1.10", "10.1.0.2"],
    "SubnetMask": ["255.255.255.0", "255.255.0.0"],
    "DefaultGateway": ["192.168.1.1"],
    "NameServer": "192.168.1.2, 192.168.1.3",
}


# ---------------------------------------------------------------------------------------------
# netconfig


def test_static_configs_and_adapters(tmp_path: Path) -> None:
    system = make_hive(
        tmp_path,
        {
            rf"{NET}\0000": adapter(A, "vmxnet3 Ethernet Adapter"),
            rf"{NET}\0001": adapter(
                WAN, "WAN Miniport (IP)", ComponentId="ms_ndiswanip", Characteristics=0x29
            ),
            rf"{NET}\0002": adapter(B, "Intel(R) PRO/1000 MT", NetworkAddress="00-50-56-AB-CD-EF"),
            rf"{NET}\Properties": {"x": 1},
            rf"{IFACES}\{A}": STATIC,
            rf"{IFACES}\{B}": {"EnableDHCP": 1, "DhcpIPAddress": "10.0.0.9"},
            rf"{IFACES}\{WAN}": {
                "EnableDHCP": 0,
                "IPAddress": ["0.0.0.0"],
                "SubnetMask": ["0.0.0.0"],
            },
        },
    )
    found = netconfig.adapters(system, CCS)
    assert [a.instance_id for a in found] == [A, B]  # the WAN miniport is not hardware
    assert found[1].mac == "00:50:56:ab:cd:ef"
    configs = netconfig.static_configs(system, CCS)
    assert len(configs) == 1
    cfg = configs[0]
    assert cfg.instance_id == A
    assert cfg.addresses == (("192.168.1.10", "255.255.255.0"), ("10.1.0.2", "255.255.0.0"))
    assert cfg.gateway == "192.168.1.1"
    assert cfg.dns == ("192.168.1.2", "192.168.1.3")


def _cfg(guid: str) -> netconfig.StaticConfig:
    return netconfig.StaticConfig(guid, (("192.168.1.10", "255.255.255.0"),), None, ())


def test_plan_one_adapter_one_nic_is_certain() -> None:
    found = [netconfig.Adapter(A, "vmxnet3", None)]
    restores, warnings = netconfig.plan([_cfg(A)], found, [nic("00:50:56:00:00:01")])
    assert [r.mac for r in restores] == ["00:50:56:00:00:01"]
    assert warnings == []


def test_plan_override_wins_and_order_pairing_warns() -> None:
    found = [
        netconfig.Adapter(A, "vmxnet3 #1", None),
        netconfig.Adapter(B, "vmxnet3 #2", "00:50:56:aa:aa:aa"),
    ]
    nics = [nic("00:50:56:00:00:01"), nic("00:50:56:00:00:02")]
    restores, warnings = netconfig.plan([_cfg(A), _cfg(B)], found, nics)
    assert [r.mac for r in restores] == ["00:50:56:00:00:01", "00:50:56:aa:aa:aa"]
    assert len(warnings) == 1 and "matched by order" in warnings[0]


def test_plan_count_mismatch_is_a_warning_not_a_guess() -> None:
    found = [netconfig.Adapter(A, "vmxnet3", None), netconfig.Adapter(B, "e1000", None)]
    restores, warnings = netconfig.plan([_cfg(A)], found, [nic("00:50:56:00:00:01")])
    assert restores == []
    assert "cannot be restored" in warnings[0] and "192.168.1.10" in warnings[0]


def test_plan_ignores_configs_of_adapters_gone_long_ago() -> None:
    restores, warnings = netconfig.plan([_cfg(B)], [netconfig.Adapter(A, "x", None)], [nic(None)])
    assert restores == [] and warnings == []


def test_restore_script_by_mac() -> None:
    cfg = netconfig.StaticConfig(
        A, (("192.168.1.10", "255.255.255.0"), ("10.1.0.2", "255.255.0.0")), "192.168.1.1",
        ("192.168.1.2", "192.168.1.3"),
    )  # fmt: skip
    text = netconfig.restore_script(netconfig.NicRestore("52:54:00:ab:cd:ef", cfg, "vmxnet3"))
    lines = text.split("\r\n")
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert 'set "mac=52-54-00-AB-CD-EF"' in lines
    assert any("getmac /v /fo csv /nh" in line for line in lines)
    assert (
        'netsh interface ip set address "!nic!" static 192.168.1.10 255.255.255.0 192.168.1.1 1'
        in lines
    )
    assert 'netsh interface ip add address "!nic!" 10.1.0.2 255.255.0.0' in lines
    assert 'netsh interface ip set dns "!nic!" static 192.168.1.2' in lines
    assert 'netsh interface ip add dns "!nic!" 192.168.1.3 index=2' in lines


def test_restore_script_without_mac_takes_the_virtio_adapter() -> None:
    text = netconfig.restore_script(netconfig.NicRestore(None, _cfg(A), "vmxnet3"))
    assert 'find /i "VirtIO"' in text
    assert "192.168.1.10 255.255.255.0\r\n" in text  # no gateway given, none set


def test_normalise_mac() -> None:
    assert netconfig.normalise_mac("005056ABCDEF") == "00:50:56:ab:cd:ef"
    assert netconfig.normalise_mac("00-50-56-AB-CD-EF") == "00:50:56:ab:cd:ef"
    assert netconfig.normalise_mac("nonsense") is None


# ---------------------------------------------------------------------------------------------
# uninstall

UNINSTALL = r"Microsoft\Windows\CurrentVersion\Uninstall"
VMW = "{D331847B-FB29-5372-9E43-12670306B431}"


def test_find_uninstallers(tmp_path: Path) -> None:
    software = make_hive(
        tmp_path,
        {
            rf"{UNINSTALL}\{VMW}": {
                "DisplayName": "VMware Tools",
                "UninstallString": f"MsiExec.exe /I{VMW}",
            },
            rf"WOW6432Node\{UNINSTALL}\{VMW}": {
                "DisplayName": "VMware Tools",
                "UninstallString": f"MsiExec.exe /X{VMW}",
            },
            rf"{UNINSTALL}\XenTools": {
                "DisplayName": "Citrix XenServer Tools",
                "UninstallString": r'"C:\Program Files\Citrix\XenTools\uninstaller.exe"',
                "QuietUninstallString": r'"C:\Program Files\Citrix\XenTools\uninstaller.exe" /S',
            },
            rf"{UNINSTALL}\Parallels": {
                "DisplayName": "Parallels Tools",
                "UninstallString": r"C:\Program Files\Parallels\uninst.exe",
            },
            rf"{UNINSTALL}\HyperV": {"DisplayName": "Hyper-V Integration Services"},
            rf"{UNINSTALL}\Firefox": {"DisplayName": "Mozilla Firefox", "UninstallString": "x"},
        },
    )
    found = {u.name: u for u in uninstall.find(software)}
    assert set(found) == {"VMware Tools", "Citrix XenServer Tools", "Parallels Tools"}
    vmw = found["VMware Tools"]
    assert vmw.kind is ForeignKind.VMWARE and vmw.product_code == VMW
    assert found["Citrix XenServer Tools"].command.endswith("/S")  # type: ignore[union-attr]
    assert not found["Parallels Tools"].usable

    text = uninstall.script(vmw)
    assert f'start "" /wait msiexec.exe /x {VMW} /qn /norestart' in text
    assert "if %rc%==3010 exit /b 0" in text
    assert uninstall.script_name(vmw) == "uninstall-vmware-tools"
    xen = uninstall.script(found["Citrix XenServer Tools"])
    assert 'start "" /wait "C:\\Program Files\\Citrix\\XenTools\\uninstaller.exe" /S' in xen
    with pytest.raises(ValueError):
        uninstall.script(found["Parallels Tools"])


def test_percent_signs_from_the_guest_stay_literal() -> None:
    u = uninstall.Uninstaller("X 100% Tools", ForeignKind.XEN, None, r"C:\x%y%\u.exe /S")
    assert r"C:\x%%y%%\u.exe /S" in uninstall.script(u)


# ---------------------------------------------------------------------------------------------
# services


@pytest.mark.parametrize(
    ("name", "disabled"),
    [
        ("vmStorFl", True), ("VSEPFLT", True), ("vmci", True), ("vsock", True),
        ("VMTools", True), ("vmmouse", True), ("xenfilt", True), ("xenbus", True),
        ("xenvbd", True), ("prl_strg", True), ("Parallels Tools Service", True),
        ("VBoxMouse", True), ("pvscsi", False), ("vmxnet3ndis6", False), ("vm3dmp", False),
        ("atapi", False), ("storahci", False), ("vmicheartbeat", False), ("xenstore", False),
    ],
)  # fmt: skip
def test_which_services_go(name: str, disabled: bool) -> None:
    assert (services.reason(name) is not None) is disabled


def test_filter_and_provider_lists() -> None:
    assert services.without(["EhStorClass", "VMSTORFL"], {"vmstorfl"}) == ["EhStorClass"]
    order = "RDPNP,LanmanWorkstation,webclient,vmhgfs"
    assert services.provider_order(order, {"vmhgfs"}) == "RDPNP,LanmanWorkstation,webclient"


# ---------------------------------------------------------------------------------------------
# firstboot


def test_find_tool_order_and_errors(tmp_path: Path) -> None:
    exe = tmp_path / "given.exe"
    exe.write_bytes(pe_image("i386", SUBSYSTEM_CONSOLE))
    tools = tmp_path / "virt-tools"
    tools.mkdir()
    (tools / "pvvxsvc.exe").write_bytes(pe_image("i386", SUBSYSTEM_CONSOLE))

    assert firstboot.find_tool(str(exe), None, {}) == exe
    assert firstboot.find_tool(None, None, {firstboot.TOOL_ENV: str(exe)}) == exe
    env = {"VIRT_TOOLS_DATA_DIR": str(tools)}
    assert firstboot.find_tool(None, None, env) == tools / "pvvxsvc.exe"
    # The virtio-win tree given with --virtio-win is searched too.
    assert firstboot.find_tool(None, str(tools), {}) == tools / "pvvxsvc.exe"

    with pytest.raises(ConversionError, match="no such file"):
        firstboot.find_tool(str(tmp_path / "missing.exe"), None, {})
    text = tmp_path / "text.exe"
    text.write_text("not a program")
    with pytest.raises(ConversionError, match="not a Windows executable"):
        firstboot.find_tool(str(text), None, {})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError) as err:
        firstboot.find_tool(None, None, {"VIRT_TOOLS_DATA_DIR": str(empty)})
    assert "rhsrvany.exe or pvvxsvc.exe" in err.value.message
    assert str(empty) in err.value.message and "/usr/share/virt-tools" in err.value.message
    assert err.value.hint and "--firstboot-tool" in err.value.hint


def test_dispatcher_runs_each_script_once_then_reboots() -> None:
    text = firstboot.dispatcher(r"C:\Program Files\vmshift\firstboot", "rhsrvany")
    lines = text.split("\r\n")
    assert r'set "here=C:\Program Files\vmshift\firstboot"' in lines
    assert 'call :run >> "%log%" 2>&1' in lines
    body = "\n".join(lines)
    # Scripts move to done\ before they run, and the listing is sorted by name.
    assert body.index("move /y") < body.index('cmd /c ""%here%\\done\\%%s""')
    assert "dir /b /on" in body
    assert "sc config rhsrvany start= disabled" in lines
    assert body.index("sc config") < body.index("shutdown /r")


def test_script_names_and_encoding() -> None:
    assert (
        firstboot.script_file_name(3, "Uninstall VMware Tools!")
        == "0003-uninstall-vmware-tools.bat"
    )
    assert firstboot.to_batch("a\nb\r\nc") == b"a\r\nb\r\nc"
    assert firstboot.to_batch("caf\u00e9") == b"caf?"


# ---------------------------------------------------------------------------------------------
# checks and uefi, against a scripted handle


class PartsG:
    """Just the partition calls checks and uefi make."""

    def __init__(self, parts: dict[str, tuple[str, str | int, str]], probes: bool) -> None:
        self.parts = parts  # device -> (table type, gpt type or mbr id, vfs type)
        self.probes = probes  # whether blkid reads the entry, or it takes parted and sfdisk

    def list_partitions(self) -> list[str]:
        return list(self.parts)

    def blkid(self, part: str) -> dict[str, str]:
        table, kind, fstype = self.parts[part]
        if not self.probes:
            raise RuntimeError("blkid: ambivalent result")
        tags = {"DEVNAME": part, "PART_ENTRY_SCHEME": "gpt" if table == "gpt" else "dos"}
        tags["PART_ENTRY_TYPE"] = kind.lower() if isinstance(kind, str) else f"{kind:#x}"
        return {**tags, "TYPE": fstype} if fstype else tags

    def part_to_dev(self, part: str) -> str:
        return part.rstrip("0123456789")

    def part_to_partnum(self, part: str) -> int:
        return int(part[len(self.part_to_dev(part)) :])

    def part_get_parttype(self, disk: str) -> str:
        return next(t for p, (t, _, _) in self.parts.items() if p.startswith(disk))

    def part_get_gpt_type(self, disk: str, n: int) -> str:
        return str(self.parts[f"{disk}{n}"][1])

    def part_get_mbr_id(self, disk: str, n: int) -> int:
        kind = self.parts[f"{disk}{n}"][1]
        assert isinstance(kind, int)
        return kind

    def vfs_type(self, part: str) -> str:
        if not self.parts[part][2]:
            raise RuntimeError("unknown filesystem")
        return self.parts[part][2]


@pytest.mark.parametrize("probes", [True, False])
def test_partition_kinds_and_esps(probes: bool) -> None:
    g = PartsG(
        {
            "/dev/sda1": ("gpt", uefi.ESP_GPT_TYPE.lower(), "vfat"),
            "/dev/sda2": ("gpt", "E3C9E316-0B5C-4DB8-817D-F92DF00215AE", ""),
            "/dev/sda3": ("gpt", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "ntfs"),
            "/dev/sdb1": ("msdos", 0x07, "BitLocker"),
            "/dev/sdb2": ("msdos", 0x42, ""),
            "/dev/sdc1": ("gpt", "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3", ""),
            "/dev/sdd1": ("msdos", 0xEF, "vfat"),
        },
        probes,
    )
    assert checks.partition_kinds(g) == {
        "/dev/sdb1": "bitlocker",
        "/dev/sdb2": "ldm",
        "/dev/sdc1": "ldm",
    }
    assert uefi.esp_candidates(g) == ["/dev/sda1", "/dev/sdd1"]


def test_security_products() -> None:
    found = checks.security_products(
        {"SepMasterService": 2, "SRTSP": 1, "McShield": 4, "CSAgent": 1, "Spooler": 2}
    )
    assert found == ["Symantec Endpoint Protection", "CrowdStrike Falcon"]


def test_expand_sz_round_trip_for_service_paths(tmp_path: Path) -> None:
    # The service's ImagePath is REG_EXPAND_SZ, as the SCM writes it.
    h = make_hive(tmp_path, {"S": {"ImagePath": ExpandSz('"C:\\x y\\rhsrvany.exe"')}})
    assert h.get_str("S", "ImagePath") == '"C:\\x y\\rhsrvany.exe"'


# ---------------------------------------------------------------------------------------------
# services.disable_foreign on a real hive file


class HiveGuest:
    """What disable_foreign uses of WindowsGuest: a control set, notes, and an editable hive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ccs = CCS
        self.notes: list[tuple[str, str, str | None]] = []
        self.warnings: list[str] = []

    def note(self, step: str, what: str, path: str | None = None) -> None:
        self.notes.append((step, what, path))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    @contextmanager
    def edit_hive(self, name: str) -> Iterator[HiveEditor]:
        editor = HiveEditor(self.path)
        yield editor
        editor.commit()


def test_disable_foreign_on_a_hive(tmp_path: Path) -> None:
    svc = rf"{CCS}\Services"
    cls = rf"{CCS}\Control\Class"
    disk, hdc, mouse = (
        "{4D36E967-E325-11CE-BFC1-08002BE10318}",
        "{4D36E96A-E325-11CE-BFC1-08002BE10318}",
        "{4D36E96F-E325-11CE-BFC1-08002BE10318}",
    )
    path = tmp_path / "SYSTEM"
    hive.build_hive(
        path,
        {
            rf"{svc}\vmStorFl": {"Start": 0, "Type": 1},
            rf"{svc}\xenfilt": {"Start": 0, "Type": 1},
            rf"{svc}\prl_strg": {"Start": 4, "Type": 1},  # already off: no note, still unlisted
            rf"{svc}\pvscsi": {"Start": 0, "Type": 1},
            rf"{svc}\vmhgfs": {"Start": 1, "Type": 2},
            rf"{svc}\xenbus\Parameters": {"x": 1},  # a stray key without Start
            rf"{cls}\{disk}": {
                "UpperFilters": ["EhStorClass", "VMSTORFL"],
                "LowerFilters": ["prl_strg"],
            },
            rf"{cls}\{hdc}": {"UpperFilters": ["xenfilt"]},
            rf"{cls}\{mouse}": {"UpperFilters": ["mouclass"]},
            rf"{CCS}\Control\NetworkProvider\Order": {"ProviderOrder": "RDPNP,vmhgfs"},
        },
    )
    guest = HiveGuest(path)
    services.disable_foreign(guest)  # type: ignore[arg-type]

    h = Hive(path)
    assert h.get_int(rf"{svc}\vmStorFl", "Start") == 4
    assert h.get_int(rf"{svc}\xenfilt", "Start") == 4
    assert h.get_int(rf"{svc}\vmhgfs", "Start") == 4
    assert h.get_int(rf"{svc}\pvscsi", "Start") == 0
    assert h.get_int(rf"{svc}\xenbus", "Start") is None
    assert h.get(rf"{cls}\{disk}", "UpperFilters") == ["EhStorClass"]
    assert h.get(rf"{cls}\{disk}", "LowerFilters") is None
    assert h.get(rf"{cls}\{hdc}", "UpperFilters") is None
    assert h.get(rf"{cls}\{mouse}", "UpperFilters") == ["mouclass"]
    assert h.get_str(rf"{CCS}\Control\NetworkProvider\Order", "ProviderOrder") == "RDPNP"
    whats = [what for step, what, _ in guest.notes if step == "services"]
    assert sum(w.startswith("disabled ") for w in whats) == 3
    assert any("prl_strg" in w and "LowerFilters" in w for w in whats)
    assert not any(w.startswith("disabled prl_strg") for w in whats)


def test_powershell_scripts_keep_their_kind() -> None:
    assert (
        firstboot.script_file_name(1, "install guest agent.ps1") == "0001-install-guest-agent.ps1"
    )
    assert firstboot.script_file_name(2, "pnputil.bat") == "0002-pnputil.bat"
    text = firstboot.dispatcher(r"C:\x", "rhsrvany")
    assert f'{firstboot.POWERSHELL} "%here%\\done\\%%s"' in text
    assert '"%%~xs"==".ps1"' in text


def test_guest_strings_cannot_break_a_script_line() -> None:
    cfg = _cfg(A)
    text = netconfig.restore_script(netconfig.NicRestore(None, cfg, "100% NIC\r\necho pwned"))
    assert "rem Restore the static IPv4 settings of 100%% NIC  echo pwned\r\n" in text
