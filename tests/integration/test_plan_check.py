"""`vmshift plan check` against real sources, nothing copied and no appliance: VMX guests on
local files, govmomi's vSphere simulator (TLS on 127.0.0.1) for [[source]] selections and a
powered-on VM, a closed port and a missing libvirt socket for unreachable sources."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import vmshift
from tests.vmx_samples import two_nic_vmx
from tests.vsphere.simulator import DATASTORE, SimDisk, SimNic, Simulator, SimVm, simulator
from tests.vsphere.simulator import make_flat_vmdk as flat_vmdk
from vmshift.cli.mode_options import read_password_file
from vmshift.errors import ConfigError
from vmshift.fleet.plan import load_plan
from vmshift.fleet.vsphere_select import select

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit")

USER = "administrator@vsphere.local"
PASSWORD = "plan-check pw"
ESX_HOST = "DC0_C0_H0"  # the simulator's one ESXi host (VPX_PATH's last element)
FIRST = b"vmshift plan-check disk".ljust(512, b"\0")


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16 MiB flat VMDK (sparse) whose first sector is FIRST."""
    base = tmp_path_factory.mktemp("plan-check-disk")
    raw = base / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(16 << 20)
        f.write(FIRST)
    return flat_vmdk(raw, "raw", base / "disk.vmdk")


@pytest.fixture(scope="module")
def sim(disk: Path) -> Iterator[Simulator]:
    """vCenter with web01, web02 (in folder prod), db01, vsan01 (no flat file; powered off)
    and busy (powered on)."""
    nic = (SimNic("00:50:56:aa:00:01"),)
    with simulator("vpx", USER, PASSWORD) as server:
        for name, on in (("web01", False), ("web02", False), ("db01", False), ("busy", True)):
            server.add_vm(SimVm(name, (SimDisk(disk),), nic, power_on=on))
        _into_folder(server, "prod", "web02")
        # As on vSAN: no flat file, so a conversion downloads it through an export lease.
        server.add_vm(SimVm("vsan01", (SimDisk(disk, flat=False),), nic))
        yield server


def _into_folder(server: Simulator, folder: str, vm_name: str) -> None:
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask

    si = server.connect()
    try:
        dc = si.RetrieveContent().rootFolder.childEntity[0]
        made = dc.vmFolder.CreateFolder(folder)
        vm = next(v for v in dc.vmFolder.childEntity if getattr(v, "name", "") == vm_name)
        WaitForTask(made.MoveIntoFolder_Task([vm]))
    finally:
        Disconnect(si)


@pytest.fixture
def site(tmp_path: Path, disk: Path) -> Path:
    """A plan directory: two VMX guests (two NICs: VM Network, Backup Network), the vSphere
    password, an empty output directory."""
    for name in ("app01", "app02"):
        (tmp_path / name).mkdir()
        for part in (disk, disk.with_name("disk-flat.vmdk")):
            (tmp_path / name / part.name).hardlink_to(part)
        (tmp_path / name / f"{name}.vmx").write_text(two_nic_vmx(name, "disk.vmdk"))
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "out").mkdir()
    return tmp_path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check(plan: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = vmshift(["plan", "check", str(plan), *extra], timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def problems(proc: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    doc: dict[str, Any] = json.loads(proc.stdout)
    assert doc["ok"] is (proc.returncode == 0)
    return {(f["guest"], f["check"]): f["text"] for f in doc["findings"] if not f["ok"]}


DEFAULTS = """\
[defaults]
output = "local"
output-storage = "out"
output-format = "qcow2"
"""


def test_every_problem_is_reported_in_one_run(sim: Simulator, site: Path) -> None:
    """The issue's case: a missing network mapping, a name clash at the target, a powered-on
    guest and an unreachable source, all four in one run, exit 1."""
    (site / "out" / "app02-sda").write_bytes(b"an earlier conversion")
    plan = site / "plan.toml"
    plan.write_text(
        DEFAULTS
        + f"""network = ["VM Network:default"]

[[guest]]              # Backup Network has no mapping
input = "vmx"
args = ["app01/app01.vmx"]

[[guest]]              # out/app02-sda is there already
input = "vmx"
args = ["app02/app02.vmx"]
network = ["default"]

[[source]]             # powered on
input-conn = "{sim.uri()}"
input-password-file = "pw"
names = ["busy"]
network = ["default"]

[[guest]]
input = "libvirt"
input-conn = "esx://root@127.0.0.1:{closed_port()}/?no_verify=1"
input-password-file = "pw"
args = ["gone"]

[[guest]]
input = "libvirt"
input-conn = "qemu+unix:///system?socket={site}/no-libvirtd.sock"
args = ["elsewhere"]
"""
    )
    proc = check(plan, "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = problems(proc)
    assert set(found) == {
        ("app01", "networks"),
        ("app02", "target"),
        ("busy", "powered off"),
        ("gone", "source"),
        ("elsewhere", "source"),
    }, found
    assert "Backup Network" in found[("app01", "networks")]
    assert "VM Network" not in found[("app01", "networks")]
    assert "app02-sda" in found[("app02", "target")] and "exists" in found[("app02", "target")]
    assert "poweredOn" in found[("busy", "powered off")]
    assert found[("gone", "source")].startswith("unreachable: ")
    assert found[("elsewhere", "source")].startswith("unreachable: ")
    # Nothing was written at the target, and the table says the same as the JSON.
    assert sorted(p.name for p in (site / "out").iterdir()) == ["app02-sda"]
    table = check(plan)
    assert table.returncode == 1
    for guest, what in found:
        assert guest in table.stdout and what in table.stdout, table.stdout
    assert "5 problem(s)" in table.stdout


def test_a_clean_plan_passes(sim: Simulator, site: Path) -> None:
    """[[source]] guests (read over NBD from the simulator's datastore), a VMX guest, every
    network and datastore mapped, room at the target: exit 0."""
    plan = site / "plan.toml"
    plan.write_text(
        DEFAULTS
        + f"""network = ["default"]

[storage]
"{DATASTORE}" = "out"

[[guest]]
input = "vmx"
args = ["app01/app01.vmx"]

[[source]]
input-conn = "{sim.uri()}"
input-password-file = "pw"
glob = "web*"
names = ["vsan01"]
"""
    )
    proc = check(plan, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    passed = {(f["guest"], f["check"]) for f in doc["findings"] if f["ok"]}
    for guest in ("app01", "web01", "web02"):
        for what in ("source", "powered off", "disks", "target", "networks", "datastores"):
            assert (guest, what) in passed, doc
    assert ("(plan)", "space") in passed
    texts = {(f["guest"], f["check"]): f["text"] for f in doc["findings"]}
    assert texts[("web01", "datastores")] == f"mapped: {DATASTORE}"
    assert "vSphere committed storage" in texts[("(plan)", "space")]
    assert "allocated data" in texts[("(plan)", "space")]
    # A disk with no flat file is not downloaded to be checked: no export lease was made.
    assert "export lease" in texts[("vsan01", "disks")]
    assert sim.lease_records() == {}
    assert list((site / "out").iterdir()) == []
    assert "pass every check" in check(plan).stdout


def _selection(sim: Simulator, site: Path, table: str) -> list[tuple[str, str]]:
    plan = site / "plan.toml"
    plan.write_text(
        DEFAULTS
        + f"""
[[source]]
input-conn = "{sim.uri()}"
input-password-file = "pw"
{table}
"""
    )
    loaded = load_plan(plan)
    specs = select(loaded, loaded.sources[0], read_password_file)
    assert {s.source_host for s in specs} == {ESX_HOST}
    assert all(s.argv()[-1] == s.name and "-ic" in s.argv() for s in specs)
    return sorted((s.name, s.option("output-storage")) for s in specs)


def test_source_selection(sim: Simulator, site: Path) -> None:
    """[[source]] by glob, regex, folder and names, minus exclude; each guest counts against the
    ESXi host its VM runs on."""
    out = "out"
    assert _selection(sim, site, 'glob = "web*"') == [("web01", out), ("web02", out)]
    assert _selection(sim, site, 'regex = "^(db|bu)"') == [("busy", out), ("db01", out)]
    assert _selection(sim, site, 'folder = "prod"') == [("web02", out)]
    assert _selection(sim, site, 'glob = "*"\nexclude = ["web*", "busy"]') == [
        ("db01", out),
        ("vsan01", out),
    ]
    assert _selection(sim, site, 'folder = "/prod/"\nnames = ["web02"]') == [("web02", out)]
    with pytest.raises(ConfigError, match=r"\[\[source\]\] 1: chooses no VM \(glob 'mail\*'\)"):
        _selection(sim, site, 'glob = "mail*"')
    with pytest.raises(ConfigError, match=r"\[\[source\]\] 1: no VM named web01 in folder"):
        _selection(sim, site, 'folder = "prod"\nnames = ["web01"]')
