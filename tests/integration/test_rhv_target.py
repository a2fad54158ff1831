"""-o rhv against a fake export storage domain (tests/export_domain.py), through the Target
contract: layout, .meta files, OVF fields, ownership, refusals and clean aborts. The whole
convert command into a domain is in test_rhv_convert.py.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from tests.export_domain import FakeDomain, make_export_domain, read_meta
from tests.integration.test_convert_bad_input import make_vm as make_source_vm
from tests.integration.test_convert_bad_input import refused
from tests.integration.test_targets import CAPS, MIB, NETWORKS, fake_copy, make_vm
from tests.os_samples import LINUX
from vmshift.errors import TargetError
from vmshift.model.vm import Firmware
from vmshift.targets.base import NetworkMap, TargetOptions
from vmshift.targets.rhv import RhvTarget

OVF = "{http://schemas.dmtf.org/ovf/envelope/1/}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
VDSM = (36, 36)


@pytest.fixture
def domain(tmp_path: Path) -> FakeDomain:
    top = tmp_path / "export"
    top.mkdir()
    return make_export_domain(top, owner=VDSM)


def owner(path: Path) -> tuple[int, int]:
    st = path.lstat()
    return (st.st_uid, st.st_gid)


def test_writes_the_layout_rhv_imports(domain: FakeDomain) -> None:
    before = domain.everything()
    opts = TargetOptions(storage=str(domain.top), format="qcow2", networks=NETWORKS)
    target = RhvTarget(opts)
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [16 * MIB, 32 * MIB])
    for out in outs:
        fake_copy(out)
    # Copied but not finished: RHV must see nothing new under its names yet.
    assert domain.image_dirs() == [] and domain.vm_dirs() == []
    assert all(out.path.parts[-4] == ".guest1.vmshift-staging" for out in outs)

    result = target.finalize(vm, LINUX, CAPS, outs)

    (vm_dir,) = domain.vm_dirs()
    ovf_path = vm_dir / f"{vm_dir.name}.ovf"
    assert len(domain.image_dirs()) == 2
    new = sorted(set(domain.everything()) - set(before))
    volumes = [out.final_path for out in outs]
    assert new == sorted(
        [f"master/vms/{vm_dir.name}", f"master/vms/{vm_dir.name}/{ovf_path.name}"]
        + [str(v.parent.relative_to(domain.root)) for v in volumes]
        + [str(v.relative_to(domain.root)) for v in volumes]
        + [str(v.relative_to(domain.root)) + ".meta" for v in volumes]
    )
    assert set(result.files) == {*volumes, ovf_path}
    assert result.warnings == ()
    for rel in new:
        assert owner(domain.root / rel) == VDSM, rel

    for out, size in zip(outs, (16 * MIB, 32 * MIB), strict=True):
        meta = read_meta(out.final_path.with_name(out.final_path.name + ".meta"))
        assert meta["DOMAIN"] == domain.sd_uuid
        assert meta["IMAGE"] == out.final_path.parent.name
        assert meta["PUUID"] == "00000000-0000-0000-0000-000000000000"
        assert meta["SIZE"] == str(size // 512)
        assert (meta["FORMAT"], meta["TYPE"], meta["VOLTYPE"]) == ("COW", "SPARSE", "LEAF")
        assert (meta["LEGALITY"], meta["DISKTYPE"]) == ("LEGAL", "2")
        assert int(meta["CTIME"]) > 1_700_000_000

    ovf = etree.parse(str(ovf_path)).getroot()
    files = ovf.findall("References/File")
    hrefs = [f"{v.parent.name}/{v.name}" for v in volumes]
    assert [f.get(f"{OVF}href") for f in files] == hrefs
    disks = ovf.findall("Section/Disk")
    assert [d.get(f"{OVF}diskId") for d in disks] == [v.name for v in volumes]
    assert [d.get(f"{OVF}size") for d in disks] == ["1", "1"]  # GiB, rounded up
    assert [d.get(f"{OVF}capacity") for d in disks] == [str(16 * MIB), str(32 * MIB)]
    assert {d.get(f"{OVF}volume-format") for d in disks} == {"COW"}
    assert {d.get(f"{OVF}format") for d in disks} == {"COW"}
    assert {d.get(f"{OVF}volume-type") for d in disks} == {"Sparse"}
    assert {d.get(f"{OVF}disk-interface") for d in disks} == {"VirtIO"}
    assert [d.get(f"{OVF}boot") for d in disks] == ["True", "False"]
    content = ovf.find("Content")
    assert content is not None
    assert content.findtext("Name") == "guest1"
    assert content.findtext("Origin") == "1"  # VMware
    assert content.findtext("BiosType") == "1"  # q35 + SeaBIOS
    os_section = content.find(
        "Section[@{http://www.w3.org/2001/XMLSchema-instance}type="
        "'ovf:OperatingSystemSection_Type']"
    )
    assert os_section is not None
    assert os_section.get(f"{OVF}id") == vm_dir.name
    assert os_section.findtext("Description") == "debian_9"
    items = content.findall("Section/Item")
    by_type: dict[str | None, list[etree._Element]] = {}
    for item in items:
        by_type.setdefault(item.findtext(f"{RASD}ResourceType"), []).append(item)
    (cpu,) = by_type["3"]
    assert (cpu.findtext(f"{RASD}num_of_sockets"), cpu.findtext(f"{RASD}cpu_per_socket")) == (
        "1",
        "2",
    )
    (mem,) = by_type["4"]
    assert mem.findtext(f"{RASD}VirtualQuantity") == "128"
    assert [i.findtext(f"{RASD}HostResource") for i in by_type["17"]] == hrefs
    nics = [
        (
            i.findtext(f"{RASD}Connection"),
            i.findtext(f"{RASD}MACAddress"),
            i.findtext(f"{RASD}ResourceSubType"),
        )
        for i in by_type["10"]
    ]
    # A --bridge mapping names an RHV logical network just the same.
    assert nics == [("default", "00:50:56:aa:00:01", "3"), ("br-dmz", "00:50:56:aa:00:02", "3")]
    assert [n.get(f"{OVF}name") for n in ovf.findall("Section/Network")] == ["default", "br-dmz"]


def test_raw_preallocated_and_a_version_5_domain(tmp_path: Path) -> None:
    domain = make_export_domain(tmp_path, version=5, owner=VDSM)
    target = RhvTarget(TargetOptions(storage=str(domain.root), allocation="preallocated"))
    vm = make_vm(disks=1)
    target.check(vm)
    (out,) = target.setup(vm, [16 * MIB])
    fake_copy(out)
    target.finalize(vm, LINUX, replace(CAPS, block_bus="sata", firmware=Firmware.UEFI), [out])
    meta = read_meta(out.final_path.with_name(out.final_path.name + ".meta"))
    assert (meta["FORMAT"], meta["TYPE"], meta["CAP"]) == ("RAW", "PREALLOCATED", str(16 * MIB))
    assert "SIZE" not in meta
    (vm_dir,) = domain.vm_dirs()
    ovf = etree.parse(str(vm_dir / f"{vm_dir.name}.ovf")).getroot()
    (disk,) = ovf.findall("Section/Disk")
    assert disk.get(f"{OVF}volume-format") == "RAW"
    assert disk.get(f"{OVF}volume-type") == "Preallocated"
    assert disk.get(f"{OVF}disk-interface") == "IDE"
    assert ovf.findtext("Content/BiosType") == "2"  # q35 + OVMF


def test_unmapped_nics_keep_their_network_names(domain: FakeDomain) -> None:
    target = RhvTarget(TargetOptions(storage=str(domain.top)))
    vm = make_vm(disks=1)
    target.check(vm)
    (out,) = target.setup(vm, [MIB])
    fake_copy(out)
    target.finalize(vm, LINUX, CAPS, [out])
    (vm_dir,) = domain.vm_dirs()
    ovf = etree.parse(str(vm_dir / f"{vm_dir.name}.ovf")).getroot()
    assert [c.text for c in ovf.iter(f"{RASD}Connection")] == ["VM Network", "DMZ"]

    # --network rhevm: every NIC on the RHV network.
    target = RhvTarget(
        TargetOptions(
            storage=str(domain.top), name="g2", networks=NetworkMap(default_network="rhevm")
        )
    )
    target.check(vm)
    (out,) = target.setup(vm, [MIB])
    fake_copy(out)
    target.finalize(vm, LINUX, CAPS, [out])
    (ovf_path,) = [p for p in domain.root.glob("master/vms/*/*.ovf") if "g2" in p.read_text()]
    ovf = etree.parse(str(ovf_path)).getroot()
    assert [c.text for c in ovf.iter(f"{RASD}Connection")] == ["rhevm", "rhevm"]


@pytest.mark.parametrize("when", ["setup", "finalize"])
def test_abort_leaves_the_domain_as_it_was(domain: FakeDomain, when: str) -> None:
    before = domain.everything()
    target = RhvTarget(TargetOptions(storage=str(domain.top)))
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [MIB, MIB])
    fake_copy(outs[0])  # a copy that died half way
    if when == "finalize":
        fake_copy(outs[1])
        target.finalize(vm, LINUX, CAPS, outs)
    target.abort()
    assert domain.everything() == before


def test_a_failed_finalize_leaves_nothing(domain: FakeDomain) -> None:
    before = domain.everything()
    target = RhvTarget(TargetOptions(storage=str(domain.top)))
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [MIB, MIB])
    fake_copy(outs[0])  # the second disk never arrived
    with pytest.raises(TargetError, match="the copied disk is missing"):
        target.finalize(vm, LINUX, CAPS, outs)
    target.abort()
    assert domain.everything() == before


def _error(opts: TargetOptions) -> str:
    with pytest.raises(TargetError) as info:
        RhvTarget(opts).check(make_vm())
    return str(info.value)


def test_refuses_what_is_not_a_writable_export_domain(tmp_path: Path) -> None:
    assert "-o rhv needs -os" in _error(TargetOptions())
    assert _error(TargetOptions(storage=str(tmp_path / "nope"))).endswith("no such directory")
    assert "not an export storage domain (no <SD_UUID>/dom_md/metadata" in _error(
        TargetOptions(storage=str(tmp_path))
    )
    data = make_export_domain(tmp_path / "data", domain_class="Data")
    message = _error(TargetOptions(storage=str(data.top)))
    assert message == (
        f"{data.root}/dom_md/metadata: CLASS=Data: this is not an export storage domain "
        "(CLASS=Backup)"
    )
    two = tmp_path / "two"
    a, b = make_export_domain(two), make_export_domain(two)
    assert "holds several storage domains" in _error(TargetOptions(storage=str(two)))
    assert a.sd_uuid in _error(TargetOptions(storage=str(two)))
    (b.root / "master" / "vms").rmdir()
    assert _error(TargetOptions(storage=str(b.root))) == (
        f"{b.root}/master/vms: missing: not an export storage domain as RHV lays it out"
    )


@pytest.mark.parametrize(
    ("fmt", "alloc", "kind", "message"),
    [
        (
            "qcow2",
            "preallocated",
            None,
            "-of qcow2 -oa preallocated: RHV cannot import preallocated qcow2 volumes",
        ),
        (
            "raw",
            "sparse",
            "iscsi",
            "-of raw -oa sparse: an ISCSI data domain cannot hold raw sparse volumes",
        ),
        (
            "raw",
            "sparse",
            "fc",
            "-of raw -oa sparse: an FC data domain cannot hold raw sparse volumes",
        ),
        (
            "qcow2",
            "preallocated",
            "nfs",
            "-of qcow2 -oa preallocated: an NFS data domain cannot hold qcow2 preallocated volumes",
        ),
    ],
)
def test_refuses_volumes_the_data_domain_cannot_hold(
    domain: FakeDomain, fmt: str, alloc: str, kind: str | None, message: str
) -> None:
    opts = TargetOptions(
        storage=str(domain.top), format=fmt, allocation=alloc, rhv_data_domain_type=kind
    )
    with pytest.raises(TargetError) as info:
        RhvTarget(opts).check(make_vm())
    assert str(info.value) == message
    if kind == "iscsi":
        assert info.value.hint == (
            "with --rhv-data-domain-type iscsi use one of: -of raw -oa preallocated, "
            "-of qcow2 -oa sparse"
        )


@pytest.mark.parametrize(
    ("fmt", "alloc", "kind"),
    [("raw", "sparse", "nfs"), ("raw", "preallocated", "iscsi"), ("qcow2", "sparse", "fc")],
)
def test_accepts_what_the_data_domain_holds(
    domain: FakeDomain, fmt: str, alloc: str, kind: str
) -> None:
    target = RhvTarget(
        TargetOptions(
            storage=str(domain.top), format=fmt, allocation=alloc, rhv_data_domain_type=kind
        )
    )
    target.check(make_vm())
    target.abort()


def test_refuses_a_name_the_domain_already_holds(domain: FakeDomain) -> None:
    vm = make_vm(disks=1)
    target = RhvTarget(TargetOptions(storage=str(domain.top)))
    target.check(vm)
    (out,) = target.setup(vm, [MIB])
    fake_copy(out)
    target.finalize(vm, LINUX, CAPS, [out])
    before = domain.everything()
    message = _error(TargetOptions(storage=str(domain.top)))
    assert "the export domain already holds a VM named 'guest1'" in message
    assert domain.everything() == before


def test_ownership_it_cannot_give_is_an_error(
    domain: FakeDomain, monkeypatch: pytest.MonkeyPatch
) -> None:
    def squashed(path: object, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chown", squashed)
    with pytest.raises(TargetError) as info:
        RhvTarget(TargetOptions(storage=str(domain.top))).check(make_vm())
    assert str(info.value) == (
        f"{domain.root}: cannot give files to vdsm:kvm (36:36), as RHV needs: "
        "Operation not permitted"
    )
    assert "root_squash" in (info.value.hint or "")
    assert not list((domain.root / "images").iterdir())  # the probe is gone


def test_without_root_the_files_keep_their_owner_and_the_user_is_told(
    domain: FakeDomain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    target = RhvTarget(TargetOptions(storage=str(domain.top)))
    vm = make_vm(disks=1)
    target.check(vm)
    (out,) = target.setup(vm, [MIB])
    fake_copy(out)
    result = target.finalize(vm, LINUX, CAPS, [out])
    (warning,) = result.warnings
    assert "not vdsm:kvm (36:36)" in warning and "chown -R 36:36" in warning
    assert owner(out.final_path) == (os.getuid(), os.getgid())


def test_an_nfs_export_that_cannot_be_mounted() -> None:
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("vmshift-export-*"))
    message = _error(TargetOptions(storage="127.0.0.1:/no/such/export"))
    assert message.startswith("-os 127.0.0.1:/no/such/export: cannot mount the NFS export domain")
    assert set(tmp.glob("vmshift-export-*")) == before  # mount point removed


# ---- through the command line: refused before any slow work --------------------------------


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["-of", "qcow2", "-oa", "preallocated"], ["-of qcow2 -oa preallocated"]),
        (["--rhv-data-domain-type", "iscsi"], ["-of raw -oa sparse", "ISCSI data domain"]),
        (["-o", "rhev", "-os", "/nonexistent/export"], ["-os /nonexistent/export"]),
    ],
)
def test_the_command_refuses_before_copying(
    domain: FakeDomain, tmp_path: Path, extra: list[str], names: list[str]
) -> None:
    vm = make_source_vm(tmp_path / "vm")
    before = domain.everything()
    args: list[str | Path] = ["-i", "vmx", vm.vmx, "-o", "rhv", "-os", domain.top, *extra]
    refused(args, sources=vm.files, outdir=None, names=names)
    assert domain.everything() == before


def test_refuses_a_disk_that_is_not_whole_sectors(domain: FakeDomain) -> None:
    vm = make_vm(disks=1)
    (disk,) = vm.disks
    odd = replace(vm, disks=(replace(disk, endpoint=replace(disk.endpoint, virtual_size=1000)),))
    with pytest.raises(TargetError) as info:
        RhvTarget(TargetOptions(storage=str(domain.top))).check(odd)
    assert str(info.value) == (
        f"disk 1 ({disk.endpoint.uri}): its size, 1000 bytes, is not a whole number of "
        "512-byte sectors, as RHV volumes are"
    )
