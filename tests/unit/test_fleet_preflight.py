"""fleet/preflight.py and fleet/vsphere_select.py without a source: network and datastore
mapping, the choice of [[source]] VMs, used data and its sums against free space, findings."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from vmshift.cli.options import network_map
from vmshift.errors import ConfigError, SourceError
from vmshift.fleet.plan import GuestSpec, SourceSelection, load_plan, with_guests
from vmshift.fleet.preflight import (
    GuestResult,
    classify,
    read_first_sector,
    run_bounded,
    unmapped_datastores,
    unmapped_nics,
)
from vmshift.fleet.preflight_space import Use, allocated, space_findings
from vmshift.fleet.vsphere_select import FoundVm, choose, datastore_of, specs
from vmshift.model.vm import DiskEndpoint, Nic

VM_NET = Nic("00:50:56:00:00:01", "vmxnet3", "VM Network")
BACKUP = Nic("00:50:56:00:00:02", "e1000", "Backup Network")
BRIDGED = Nic("52:54:00:00:00:03", "virtio", "br0", "bridge")
NICS = [VM_NET, BACKUP, BRIDGED]


def test_in_out_maps_only_its_network() -> None:
    mapping = network_map(["VM Network:default"], None, None)
    assert unmapped_nics(NICS, mapping) == [BACKUP, BRIDGED]


def test_a_bare_out_maps_every_nic() -> None:
    assert unmapped_nics(NICS, network_map(["default"], None, None)) == []
    assert unmapped_nics(NICS, network_map(None, ["br1"], None)) == []


def test_bridge_and_mac_mappings() -> None:
    mapping = network_map(None, ["br0:br1"], ["00:50:56:00:00:02:network:backup"])
    assert unmapped_nics(NICS, mapping) == [VM_NET]
    assert unmapped_nics(NICS, network_map(None, None, None)) == NICS


def test_datastores_of_paths() -> None:
    assert datastore_of("[datastore1] web01/web01.vmdk") == "datastore1"
    assert datastore_of("[SAN LUN 7] x.vmdk") == "SAN LUN 7"
    assert datastore_of("/vmfs/volumes/datastore2/db01/db01.vmx") == "datastore2"
    assert datastore_of("/srv/vms/web01/web01.vmdk") is None
    assert datastore_of("web01.vmdk") is None
    storage = {"datastore1": "/fast"}
    assert unmapped_datastores(["datastore1", "datastore2"], storage) == ["datastore2"]
    assert unmapped_datastores([], storage) == []


INVENTORY = [
    FoundVm("web01", "", "esx1", "ds1"),
    FoundVm("web02", "prod", "esx1", "ds1"),
    FoundVm("web03", "prod/eu", "esx2", "ds2"),
    FoundVm("web-old", "prod", "esx2", "ds2"),
    FoundVm("db01", "prod", "esx1", "ds1"),
    FoundVm("web-template", "prod", "esx1", "ds1", template=True),
]


def _names(**keys: object) -> list[str]:
    selection = SourceSelection(options={"input-conn": "esx://x/"}, **keys)  # type: ignore[arg-type]
    return [vm.name for vm in choose(INVENTORY, selection, "plan.toml [[source]] 2")]


def test_choose_by_glob_regex_names_folder() -> None:
    assert _names(glob="web*") == ["web01", "web02", "web03", "web-old"]
    assert _names(regex=r"\d$") == ["web01", "web02", "web03", "db01"]
    assert _names(names=("db01", "web01")) == ["web01", "db01"]
    # A folder and its subfolders; only folder given: everything in it (templates never).
    assert _names(folder="prod") == ["web02", "web03", "web-old", "db01"]
    assert _names(folder="/prod/eu/") == ["web03"]
    assert _names(folder="prod", glob="web*", exclude=("web-old",)) == ["web02", "web03"]
    assert _names(glob="*", exclude=("web*",)) == ["db01"]


def test_choose_refuses_what_selects_nothing() -> None:
    with pytest.raises(ConfigError, match=r"\[\[source\]\] 2: chooses no VM \(glob 'mail\*'\)"):
        _names(glob="mail*")
    with pytest.raises(ConfigError, match=r"\[\[source\]\] 2: no VM named web01 in folder"):
        _names(folder="prod", names=("web01",))
    with pytest.raises(ConfigError, match=r"\[\[source\]\] 2: regex '\(' is not a regular"):
        _names(regex="(")


def _use(storage: str, size: int, path: str | None, output: str = "local") -> Use:
    return Use(storage, output, path, None, size, "allocated data")


def test_space_is_summed_per_target_storage(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    uses = [
        _use("local::a", free // 2 + 1, "a"),  # two halves that do not fit together
        _use("local::a", free // 2 + 1, "a"),
        _use("local::b", 1 << 20, "b"),
        _use("null::", 1 << 50, None, "null"),  # -o null writes nothing
    ]
    full, roomy = space_findings(uses, tmp_path)  # nothing for -o null
    assert not full[0] and full[1].startswith("-o local -os a: 2 guest(s) need")
    assert roomy[0] and "-os b: 1 guest(s) need 1.0 MiB" in roomy[1]


def test_space_of_a_missing_directory_is_not_known(tmp_path: Path) -> None:
    ((ok, text),) = space_findings([_use("local::nowhere", 1, "nowhere")], tmp_path)
    assert ok and "free space not known" in text and "nowhere" in text


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_allocated_counts_data_not_holes(tmp_path: Path) -> None:
    raw = tmp_path / "d.raw"
    with raw.open("wb") as f:
        f.truncate(64 << 20)
        f.seek(8 << 20)
        f.write(b"x" * (1 << 20))
    assert allocated(DiskEndpoint(str(raw), "raw", 64 << 20)) == 1 << 20
    # A flat VMDK: qemu-img map calls the whole extent data; its file holds 1 MiB.
    vmdk = tmp_path / "d.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-q", "-O", "vmdk", "-o", "subformat=monolithicFlat",
         str(raw), str(vmdk)],
        check=True,
    )  # fmt: skip
    assert allocated(DiskEndpoint(str(vmdk), "vmdk", 64 << 20)) <= (1 << 20) + (64 << 10)
    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(qcow)], check=True)
    assert allocated(DiskEndpoint(str(qcow), "qcow2", 64 << 20)) == 1 << 20


def test_first_sector_of_a_file_and_an_nbd_export(tmp_path: Path) -> None:
    disk = tmp_path / "d.raw"
    with disk.open("wb") as f:
        f.truncate(1 << 20)
        f.write(b"first sector".ljust(512, b"!"))
    expected = b"first sector".ljust(512, b"!")
    assert read_first_sector(DiskEndpoint(str(disk), "raw", 1 << 20)) == expected
    with pytest.raises(SourceError, match=r"missing\.raw: cannot read"):
        read_first_sector(DiskEndpoint(str(tmp_path / "missing.raw"), "raw", 1))
    if shutil.which("nbdkit") is None:
        pytest.skip("needs nbdkit")
    sock = tmp_path / "nbd.sock"
    proc = subprocess.Popen(["nbdkit", "-f", "-r", "-U", str(sock), "file", str(disk)])
    try:
        import nbd

        h = nbd.NBD()
        for _ in range(500):  # until nbdkit listens
            try:
                h.connect_unix(str(sock))
                break
            except nbd.Error:
                h = nbd.NBD()
                threading.Event().wait(0.02)
        h.shutdown()
        uri = f"nbd+unix:///?socket={sock}"
        assert read_first_sector(DiskEndpoint(uri, "raw", 1 << 20)) == expected
    finally:
        proc.terminate()
        proc.wait()
    with pytest.raises(SourceError, match="cannot read"):
        read_first_sector(DiskEndpoint(f"nbd+unix:///?socket={sock}", "raw", 1 << 20))


def test_classify_source_errors() -> None:
    assert classify("vpx://vc/busy: the VM is poweredOn")[:2] == ("powered off", False)
    assert classify("web01: the guest is running; shut it down first")[0] == "powered off"
    check, ok, text = classify("esx://h:1: cannot connect: Connection refused")
    assert (check, ok) == ("source", False) and text.startswith("unreachable: esx://h:1")
    assert classify("gone: no such VM on esx://h")[2] == "gone: no such VM on esx://h"


def _spec(name: str) -> GuestSpec:
    return GuestSpec(name, {}, (name,), "localhost", "local::")


def test_a_guest_over_its_time_is_left_and_the_others_finish() -> None:
    release = threading.Event()

    def check(spec: GuestSpec) -> GuestResult:
        if spec.name == "stuck":
            release.wait()
        if spec.name == "broken":
            raise RuntimeError("a bug")
        return GuestResult()

    specs = [_spec("a"), _spec("stuck"), _spec("b"), _spec("broken"), _spec("c")]
    try:
        results = run_bounded(specs, check, parallel=2, timeout=2.0)
    finally:
        release.set()
    assert results["stuck"] is None
    assert all(results[n] == GuestResult() for n in "abc")
    broken = results["broken"]
    assert broken is not None and "check failed: RuntimeError('a bug')" in broken.findings[0].text


def test_specs_of_chosen_vms(tmp_path: Path) -> None:
    """A [[source]]'s options over the defaults; its datastore's [storage] mapping; a VM that a
    [[guest]] table names on the same connection is left to it; the ESXi host is the limit's."""
    conn = "vpx://vc.example.com/DC/C/esx1?no_verify=1"
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(f"""\
[defaults]
output = "local"
output-storage = "/out"
output-format = "qcow2"

[storage]
ds2 = "/slow"

[[guest]]
input-conn = "{conn}"
input-password-file = "pw"
args = ["web01"]
output-name = "web01-kvm"

[[source]]
input-conn = "{conn}"
input-password-file = "pw"
output-format = "raw"
glob = "*"
""")
    plan = load_plan(plan_file)
    (selection,) = plan.sources
    made = specs(plan, selection, INVENTORY[:3])
    assert [(s.name, s.source_host, s.option("output-storage")) for s in made] == [
        ("web02", "esx1", "/out"),
        ("web03", "esx2", "/slow"),
    ]
    assert made[0].argv() == [
        "-o", "local", "-os", "/out", "-of", "raw", "-ic", conn, "-ip", "pw", "-i", "libvirt",
        "web02",
    ]  # fmt: skip
    assert with_guests(plan, made).guest("web03").target_storage == "local::/slow"
