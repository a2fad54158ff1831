"""Windows driver selection and registration without an appliance: release folders, the
virtio-win tree index (directory and ISO), registry entries on real hive files, scripts, caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import vmshift
from tests.guests import hive
from tests.guests.virtio_win import build_iso, build_tree, stand_in
from vmshift.convert.base import ConvertOptions
from vmshift.convert.windows import bootdriver, drivers
from vmshift.convert.windows.context import WindowsGuest
from vmshift.convert.windows.converter import guest_caps
from vmshift.convert.windows.osdirs import candidates, describe, guest_kind, parse_build
from vmshift.convert.windows.virtio_tree import TreeIndex, clean_member, open_tree
from vmshift.errors import ConversionError
from vmshift.guest.registry import ExpandSz, Hive, HiveEditor
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import Firmware, SourceVM

# ---------------------------------------------------------------------------------------------
# Release folders


@pytest.mark.parametrize(
    ("version", "build", "kind", "first"),
    [
        ((5, 1), "2600", "client", "xp"),
        ((5, 2), "3790", "client", "2k3"),  # XP x64 is a 2003 kernel
        ((6, 0), "6002", "client", "vista"),
        ((6, 0), "6002", "server", "2k8"),
        ((6, 1), "7601", "client", "w7"),
        ((6, 1), "7601", "server", "2k8R2"),
        ((6, 2), "9200", "server", "2k12"),
        ((6, 3), "9600", "client", "w8.1"),
        ((10, 0), "19045", "client", "w10"),
        ((10, 0), "22631", "client", "w11"),
        ((10, 0), "14393", "server", "2k16"),
        ((10, 0), "17763", "server", "2k19"),
        ((10, 0), "20348", "server", "2k22"),
        ((10, 0), "26100", "server", "2k25"),
        ((10, 0), "", "client", "w10"),  # unknown build: the first release of 10.0
    ],
)
def test_release_folder_of_each_windows(
    version: tuple[int, int], build: str, kind: str, first: str
) -> None:
    assert candidates(*version, parse_build(build), kind)[0] == first


def test_fallbacks_go_to_older_releases_same_kind_first_and_stay_in_the_era() -> None:
    assert candidates(10, 0, 22631, "client") == [
        "w11", "w10", "w8.1", "w8", "w7", "vista",
        "2k22", "2k19", "2k16", "2k12R2", "2k12", "2k8R2", "2k8",
    ]  # fmt: skip
    assert candidates(10, 0, 20348, "server")[:4] == ["2k22", "2k19", "2k16", "2k12R2"]
    assert candidates(5, 2, 3790, "server") == ["2k3", "xp"]  # never an NT 6 folder
    assert "xp" not in candidates(6, 1, 7601, "client")  # never an NT 5 folder


def test_kind_and_build_parsing() -> None:
    assert guest_kind("Client", "Windows 10 Pro") == "client"
    assert guest_kind("Server Core", "Windows Server 2019") == "server"
    assert guest_kind("unknown", "Microsoft Windows Server 2003") == "server"
    assert guest_kind("unknown", "Microsoft Windows XP") == "client"
    assert parse_build("2600.xpsp.080413-2111") == 2600
    assert parse_build("garbage") == 0
    assert describe(10, 0, 19045, "client", "x86_64") == "w10/amd64 (10.0 build 19045, client)"


# ---------------------------------------------------------------------------------------------
# The tree


@pytest.mark.parametrize(
    "name",
    ["../viostor/w10/amd64/x.sys", "viostor/w10/amd64/../../x.sys", "viostor/w10/amd64/*.sys",
     "viostor/w10/amd64/a\nb.sys", "viostor//w10/x.sys", "viostor/w10/amd64/[x].sys"],
)  # fmt: skip
def test_unsafe_member_names_are_not_used(name: str) -> None:
    assert clean_member(name) is None
    assert TreeIndex.of([name]).drivers == {}


def test_index_keeps_only_the_layout() -> None:
    index = TreeIndex.of(
        [
            "./viostor/w10/amd64/viostor.sys",
            "/viostor/W10/AMD64/viostor.inf",  # any case, leading slash
            "viostor/w10/amd64/readme.txt",  # not a driver file
            "viostor/w10/ARM64/viostor.sys",  # an architecture vmshift does not convert
            "viostor/w99/amd64/viostor.sys",  # no such release
            "amd64/w10/viostor.sys",  # the ISO's flat copies
            "guest-agent/qemu-ga-x86_64.msi",
            "guest-agent/qemu-ga-i386.msi",
        ]
    )
    assert index.drivers == {
        "viostor": {
            ("w10", "amd64"): ["viostor/w10/amd64/viostor.sys", "viostor/W10/AMD64/viostor.inf"]
        }
    }
    assert index.agent("amd64") == "guest-agent/qemu-ga-x86_64.msi"
    assert index.agent("x86") == "guest-agent/qemu-ga-i386.msi"


def test_select_picks_each_drivers_best_release() -> None:
    index = TreeIndex.of(
        ["viostor/w11/amd64/viostor.sys", "viostor/w10/amd64/viostor.sys",
         "NetKVM/w10/amd64/netkvm.sys", "Balloon/w7/x86/balloon.sys"]
    )  # fmt: skip
    chosen = index.select(candidates(10, 0, 22631, "client"), "amd64")
    assert [(d.driver, d.osdir) for d in chosen] == [("NetKVM", "w10"), ("viostor", "w11")]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("vw") / "virtio-win")


@pytest.mark.parametrize("kind", ["dir", "iso"])
def test_directory_and_iso_give_the_same_files(tree: Path, tmp_path: Path, kind: str) -> None:
    path = tree if kind == "dir" else build_iso(tree, tmp_path / "virtio-win.iso")
    with open_tree(path) as t:
        chosen = drivers.without_conflicts(
            t.index.select(candidates(10, 0, 20348, "server"), "amd64")
        )
        names = [d.driver for d in chosen]
        assert "qemufwcfg" not in names and "fwcfg" in names
        assert {d.osdir for d in chosen} == {"2k22"}
        viostor = next(d for d in chosen if d.driver == "viostor")
        local = t.fetch(viostor.files)
        assert local["viostor/2k22/amd64/viostor.sys"].read_bytes() == stand_in(
            "viostor", "2k22", "amd64", "viostor.sys"
        )
        with pytest.raises(ConversionError, match="refusing"):
            t.fetch(["../etc/passwd"])


def test_a_missing_tree_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no such virtio-win"), open_tree(tmp_path / "nope"):
        pass


def test_a_file_that_is_not_an_iso_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "virtio-win.iso"
    bad.write_bytes(b"not an ISO image " * 300)
    with pytest.raises(ConversionError, match="virtio-win ISO"), open_tree(bad):
        pass


def test_source_path_option_then_environment_then_default() -> None:
    assert drivers.source_path("/x", {"VIRTIO_WIN": "/y"}) == (Path("/x"), True)
    assert drivers.source_path(None, {"VIRTIO_WIN": "/y"}) == (Path("/y"), True)
    path, given = drivers.source_path(None, {})
    assert not given and str(path).startswith("/usr/share/virtio-win")


# ---------------------------------------------------------------------------------------------
# Registry


@pytest.fixture
def system(tmp_path: Path) -> Path:
    path = tmp_path / "SYSTEM"
    hive.build_hive(path, {"ControlSet002\\Services\\atapi": {"Start": 0}, "DriverDatabase": {}})
    return path


def test_registration_is_idempotent(system: Path) -> None:
    pkg = bootdriver.DriverPackage.of("viostor", "VIOSTOR.INF", b"[Version]", "amd64")
    snapshots = []
    for _ in range(2):
        ed = HiveEditor(system)
        bootdriver.register_service(ed, "ControlSet002", "viostor")
        bootdriver.register_critical_devices(ed, "ControlSet002", "viostor")
        bootdriver.register_driver_database(ed, "viostor", pkg)
        ed.commit()
        h = hive.open_hive(system)
        snapshots.append(list(hive.read_tree(h)))
    assert snapshots[0] == snapshots[1]
    ro = Hive(system)
    assert ro.get_typed(r"ControlSet002\Services\viostor", "ImagePath") == ExpandSz(
        r"System32\drivers\viostor.sys"
    )
    assert pkg.inf == "viostor.inf" and pkg.package.startswith("viostor.inf_amd64_")
    cdd = r"ControlSet002\Control\CriticalDeviceDatabase"
    cdd_node = ro.node(cdd)
    assert cdd_node is not None
    assert sorted(n for n, _ in ro.subkeys(cdd_node)) == [
        "pci#ven_1af4&dev_1001&rev_00",
        "pci#ven_1af4&dev_1001&subsys_00021af4&rev_00",
        "pci#ven_1af4&dev_1042&rev_01",
        "pci#ven_1af4&dev_1042&subsys_11001af4&rev_01",
    ]


def test_vioscsi_ids() -> None:
    assert bootdriver.hardware_ids("vioscsi") == [
        "VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00",
        "VEN_1AF4&DEV_1004&REV_00",
        "VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01",
        "VEN_1AF4&DEV_1048&REV_01",
    ]


def test_device_path_gets_the_folder_once() -> None:
    folder = r"%SystemRoot%\Drivers\VirtIO"
    assert drivers.with_entry(r"%SystemRoot%\inf", folder) == rf"%SystemRoot%\inf;{folder}"
    assert drivers.with_entry(rf"%SystemRoot%\inf;{folder.upper()};", folder) == (
        rf"%SystemRoot%\inf;{folder.upper()}"
    )


def test_driver_install_command_per_release() -> None:
    assert drivers.install_drivers_script(5) is None
    assert "pnputil -i -a" in (drivers.install_drivers_script(6) or "")
    assert "pnputil /add-driver" in (drivers.install_drivers_script(10) or "")


# ---------------------------------------------------------------------------------------------
# What the guest runs on


def _guest(major: int, boot: str | None, installed: list[str]) -> WindowsGuest:
    os = OperatingSystem(
        root="/dev/sda1", type="windows", distro="windows", product_name="Windows",
        product_variant="Client", major_version=major, minor_version=1, arch="x86_64",
        hostname="h", package_format="unknown", package_manager="unknown", osinfo="win7",
        firmware="bios", mountpoints={"/": "/dev/sda1"}, filesystems=(), applications=(),
        foreign_software=(),
    )  # fmt: skip
    vm = SourceVM("vm", 1 << 30, 1, None, Firmware.BIOS, disks=(), nics=())
    guest = WindowsGuest(None, os, vm, ConvertOptions(), "/Windows", "ControlSet001")
    guest.boot_driver = boot
    guest.drivers_installed = installed
    return guest


def test_caps_follow_the_installed_drivers() -> None:
    caps = guest_caps(_guest(6, "viostor", ["Balloon", "NetKVM", "viorng", "vioserial", "viostor"]))
    assert (caps.block_bus, caps.net_model, caps.machine) == ("virtio-blk", "virtio", "q35")
    assert caps.virtio and caps.virtio_balloon and caps.virtio_rng and caps.virtio_serial
    caps = guest_caps(_guest(6, "vioscsi", ["vioscsi", "viostor"]))
    assert (caps.block_bus, caps.net_model) == ("virtio-scsi", "e1000")
    caps = guest_caps(_guest(5, None, []))
    assert (caps.block_bus, caps.net_model, caps.machine) == ("ide", "rtl8139", "pc")
    assert not caps.virtio_serial


def test_an_iso_symlink_member_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    d = tree / "viostor" / "w10" / "amd64"
    d.mkdir(parents=True)
    (d / "viostor.sys").symlink_to("/etc/passwd")
    (d / "viostor.inf").write_text("[Version]\r\n")
    with open_tree(build_iso(tree, tmp_path / "evil.iso")) as t:
        (chosen,) = t.index.select(["w10"], "amd64")
        with pytest.raises(ConversionError, match="not a regular file"):
            t.fetch(chosen.files)


def test_a_missing_virtio_win_path_is_refused_before_any_work(tmp_path: Path) -> None:
    disk = tmp_path / "guest.img"
    disk.write_bytes(bytes(1 << 20))
    args: list[str | Path] = ["convert", "-i", "disk", disk, "-o", "local", "-os", tmp_path]
    proc = vmshift([*args, "--virtio-win", tmp_path / "nope.iso"])
    assert proc.returncode == 2
    assert "--virtio-win" in proc.stderr and "nope.iso" in proc.stderr
