"""`vmshift convert -o rhv` end to end: a phony Linux guest (options from the seed's XML profile)
and a phony Windows guest (options from a TOML profile, some overridden on the command line)
into a fake export storage domain.

The OVF is compared with golden files after masking what changes between runs (UUIDs, dates,
sizes that depend on the bytes copied); the volumes are checked with qemu-img and the .meta
files key by key. The golden files are written by hand from a checked run after an intended
change (masked_ovf() of the new OVF), never by the test that compares them.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import vmshift
from tests.export_domain import FakeDomain, make_export_domain, masked_ovf, read_meta
from tests.guests.manifest import BuiltGuest
from tests.guests.virtio_win import build_tree
from tests.vmx_samples import two_nic_vmx

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
OVF = "{http://schemas.dmtf.org/ovf/envelope/1/}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
GIB = 1 << 30

SEED_XML = """<?xml version="1.0"?>
<virt-v2v>
  <profile name="myrhev">
    <method>rhev</method>
    <storage format="qcow2" allocation="sparse">{top}</storage>
    <network type="default">
      <network type="network" name="rhevm"/>
    </network>
  </profile>
</virt-v2v>
"""

WINDOWS_TOML = """\
[profile.rhv-windows]
method = "rhev"
storage = "{top}"
format = "qcow2"
allocation = "sparse"
rhv-data-domain-type = "nfs"
default-network = "ovirtmgmt"
"""


@dataclass(frozen=True)
class Converted:
    domain: FakeDomain
    proc: subprocess.CompletedProcess[str]
    report: dict[str, object]
    ovf_path: Path
    ovf: etree._Element
    volumes: list[Path]


def _convert(domain: FakeDomain, args: list[str | Path], report: Path) -> Converted:
    proc = vmshift(["convert", *args, "--report", report])
    assert proc.returncode == 0, proc.stderr
    (vm_dir,) = domain.vm_dirs()
    ovf_path = vm_dir / f"{vm_dir.name}.ovf"
    ovf = etree.parse(str(ovf_path)).getroot()
    volumes = [
        domain.root / "images" / f.get(f"{OVF}href", "") for f in ovf.findall("References/File")
    ]
    return Converted(domain, proc, json.loads(report.read_text()), ovf_path, ovf, volumes)


@pytest.fixture(scope="module")
def linux(
    linux_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> Converted:
    base = tmp_path_factory.mktemp("rhv-linux")
    domain = make_export_domain(base / "export", owner=(36, 36))
    conf = base / "virt-v2v.conf"
    conf.write_text(SEED_XML.format(top=domain.top))
    # The seed's second command, with -i vmx until the vSphere source exists; one command-line
    # mapping on top of the profile's default network.
    vmdk = base / "rhel-web.vmdk"
    disk = linux_guests["rhel"].disks[0]
    subprocess.run(
        ["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", disk, vmdk],
        check=True,
    )
    vmx = base / "rhel-web.vmx"
    vmx.write_text(two_nic_vmx("rhel-web", vmdk.name))
    args: list[str | Path] = ["--profile", "myrhev", "--conf", conf, "-i", "vmx", vmx]
    args += ["--network", "Backup Network:backup", "--workdir", base]
    return _convert(domain, args, base / "report.json")


@pytest.fixture(scope="module")
def windows(
    windows_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> Converted:
    base = tmp_path_factory.mktemp("rhv-windows")
    domain = make_export_domain(base / "export", owner=(36, 36))
    conf = base / "profiles.toml"
    conf.write_text(WINDOWS_TOML.format(top=domain.top))
    tree = build_tree(base / "virtio-win")
    guest = windows_guests["win2022"]
    args: list[str | Path] = ["--profile", "rhv-windows", "--conf", conf]
    args += ["-i", "disk", *guest.disks, "--name", "win2022", "--virtio-win", tree]
    # The command line wins over the profile: raw preallocated instead of qcow2 sparse.
    args += ["-of", "raw", "-oa", "preallocated", "--workdir", base]
    return _convert(domain, args, base / "report.json")


def _qemu_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", path], check=True, capture_output=True, text=True
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


@pytest.mark.parametrize(
    ("which", "golden"), [("linux", "rhv-linux.ovf"), ("windows", "rhv-windows.ovf")]
)
def test_ovf_matches_the_golden_file(
    which: str, golden: str, request: pytest.FixtureRequest
) -> None:
    converted: Converted = request.getfixturevalue(which)
    # The golden files were written from hand-checked runs; this test never rewrites them.
    assert masked_ovf(converted.ovf_path.read_text()) == (GOLDEN / golden).read_text()


@pytest.mark.parametrize("which", ["linux", "windows"])
def test_ovf_ids_and_sizes_match_the_files(which: str, request: pytest.FixtureRequest) -> None:
    c: Converted = request.getfixturevalue(which)
    vm_id = c.ovf_path.parent.name
    assert c.ovf_path.name == f"{vm_id}.ovf"
    os_section = c.ovf.find("Content/Section[Description]")
    assert os_section is not None and os_section.get(f"{OVF}id") == vm_id
    disks = c.ovf.findall("Section/Disk")
    files = c.ovf.findall("References/File")
    items = [i for i in c.ovf.iter("Item") if i.findtext(f"{RASD}ResourceType") == "17"]
    assert len(disks) == len(files) == len(items) == len(c.volumes) >= 1
    for disk, file, item, volume in zip(disks, files, items, c.volumes, strict=True):
        href = f"{volume.parent.name}/{volume.name}"
        assert disk.get(f"{OVF}diskId") == file.get(f"{OVF}id") == volume.name
        assert disk.get(f"{OVF}fileRef") == file.get(f"{OVF}href") == href
        assert item.findtext(f"{RASD}HostResource") == href
        assert item.findtext(f"{RASD}StorageId") == c.domain.sd_uuid
        virtual = int(str(_qemu_info(volume)["virtual-size"]))
        allocated = volume.stat().st_blocks * 512
        assert disk.get(f"{OVF}capacity") == str(virtual)
        assert disk.get(f"{OVF}size") == str(-(-virtual // GIB))
        assert disk.get(f"{OVF}actual_size") == str(max(1, -(-allocated // GIB)))
        assert file.get(f"{OVF}size") == str(allocated)


def test_linux_volumes_are_qcow2_sparse(linux: Converted) -> None:
    for volume in linux.volumes:
        info = _qemu_info(volume)
        assert info["format"] == "qcow2"
        meta = read_meta(volume.with_name(volume.name + ".meta"))
        assert meta == {
            "DOMAIN": linux.domain.sd_uuid,
            "IMAGE": volume.parent.name,
            "PUUID": "00000000-0000-0000-0000-000000000000",
            "SIZE": str(int(str(info["virtual-size"])) // 512),
            "FORMAT": "COW",
            "TYPE": "SPARSE",
            "VOLTYPE": "LEAF",
            "DISKTYPE": "2",
            "DESCRIPTION": f"rhel-web disk {linux.volumes.index(volume) + 1}, converted by vmshift",
            "LEGALITY": "LEGAL",
            "CTIME": meta["CTIME"],
            "MTIME": meta["CTIME"],
            "POOL_UUID": "",
        }
        assert volume.stat().st_blocks * 512 < int(str(info["virtual-size"])) // 2  # sparse


def test_windows_volumes_follow_the_command_line(windows: Converted) -> None:
    (volume,) = windows.volumes
    info = _qemu_info(volume)
    assert info["format"] == "raw"
    assert volume.stat().st_blocks * 512 >= int(str(info["virtual-size"]))  # preallocated
    meta = read_meta(volume.with_name(volume.name + ".meta"))
    assert (meta["FORMAT"], meta["TYPE"]) == ("RAW", "PREALLOCATED")
    (disk,) = windows.ovf.findall("Section/Disk")
    assert disk.get(f"{OVF}volume-format") == "RAW"
    assert disk.get(f"{OVF}volume-type") == "Preallocated"


def test_profile_networks_reach_the_ovf(linux: Converted, windows: Converted) -> None:
    assert [c.text for c in linux.ovf.iter(f"{RASD}Connection")] == ["rhevm", "backup"]
    assert [m.text for m in linux.ovf.iter(f"{RASD}MACAddress")] == [
        "00:50:56:ab:cd:ef",
        "00:0c:29:12:34:56",
    ]
    assert [c.text for c in windows.ovf.iter(f"{RASD}Connection")] == ["ovirtmgmt"]


def test_virtio_only_where_drivers_were_installed(linux: Converted, windows: Converted) -> None:
    for c in (linux, windows):
        assert c.report["devices"]["virtio"] is True  # type: ignore[index]
        assert {d.get(f"{OVF}disk-interface") for d in c.ovf.findall("Section/Disk")} == {"VirtIO"}
        subtypes = {i.findtext(f"{RASD}ResourceSubType") for i in c.ovf.iter("Item")}
        assert "3" in subtypes  # virtio-net


def test_everything_new_belongs_to_vdsm(linux: Converted, windows: Converted) -> None:
    for c in (linux, windows):
        new = [c.ovf_path.parent, c.ovf_path]
        for volume in c.volumes:
            new += [volume.parent, volume, volume.with_name(volume.name + ".meta")]
        for path in new:
            st = path.lstat()
            assert (st.st_uid, st.st_gid) == (36, 36), path
        leftovers = [p.name for p in c.domain.root.iterdir() if p.name.startswith(".")]
        assert leftovers == []


def test_the_user_is_told_where_the_guest_is(linux: Converted, windows: Converted) -> None:
    for c, name in ((linux, "rhel-web"), (windows, "win2022")):
        lines = c.proc.stdout.strip().splitlines()
        assert lines[-1].startswith(f"vmshift: {name} configured with virtio drivers")
        assert lines[-2].startswith(f"{c.ovf_path} in export storage domain {c.domain.top}")
        assert "VM Import" in lines[-2]
