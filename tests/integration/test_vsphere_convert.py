"""Conversions straight from the vSphere simulator: the real Debian guest from an ESXi host
(esx://) boots on virtio with its MAC and static address, and the phony Windows Server 2022 from
vCenter (vpx://) gets its VirtIO drivers. The datastore's files are byte-identical afterwards:
the disks are read over HTTPS through nbdkit, every write lands in the overlay."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.boot import boot_to_login
from tests.guests.cache import cached_dir
from tests.guests.debian_real import MAC
from tests.guests.manifest import BuiltGuest
from tests.guests.virtio_win import build_tree
from tests.vsphere.simulator import (
    SimDisk,
    SimNic,
    Simulator,
    SimVm,
    flat_file,
    make_flat_vmdk,
    simulator,
)

pytestmark = [pytest.mark.slow, pytest.mark.realguest]

PASSWORD = "vsphere pass"
STATIC_ADDRESS = "192.0.2.10/24"


def flat_copy(disk: Path, fmt: str, name: str) -> Path:
    """disk as a flat VMDK (descriptor + sparse -flat file), as ESXi stores it; cached."""

    def build(out: Path) -> None:
        make_flat_vmdk(disk, fmt, out / f"{name}.vmdk")

    # Keyed by the source guest's own cache version: a rebuilt guest gets a new copy.
    where = cached_dir(f"{name}-flat", disk.parent.name.rsplit("-", 1)[-1], build)
    return where / f"{name}.vmdk"


@pytest.fixture(scope="module")
def datastore_files(
    real_debian: BuiltGuest, windows_guests: dict[str, BuiltGuest]
) -> dict[str, Path]:
    return {
        "debian12": flat_copy(real_debian.disks[0], "vmdk", "debian12-vmware"),
        "win2022": flat_copy(windows_guests["win2022"].disks[0], "qcow2", "win2022"),
    }


@pytest.fixture(scope="module")
def sims(datastore_files: dict[str, Path]) -> Iterator[dict[str, Simulator]]:
    with (
        simulator("esx", "root", PASSWORD) as esx,
        simulator("vpx", "administrator@vsphere.local", PASSWORD) as vpx,
    ):
        esx.add_vm(
            SimVm(
                "debian12",
                (SimDisk(datastore_files["debian12"]),),
                (SimNic(MAC),),
                guest_id="debian12_64Guest",
            )
        )
        vpx.add_vm(
            SimVm(
                "win2022",
                (SimDisk(datastore_files["win2022"], "lsilogic"),),
                (SimNic("00:50:56:aa:20:22"),),
                memory_mib=2048,
                guest_id="windows2019srvNext_64Guest",
            )
        )
        yield {"esx": esx, "vpx": vpx}


Converted = tuple[subprocess.CompletedProcess[str], Path]


@pytest.fixture(scope="module")
def conversions(
    sims: dict[str, Simulator],
    datastore_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[Converted]]]:
    """Both conversions at once: each spends minutes in a single-threaded TCG appliance."""
    base = tmp_path_factory.mktemp("vsphere-convert")
    password = base / "password"
    password.write_text(PASSWORD + "\n")
    tree = build_tree(base / "virtio-win")
    jobs: dict[str, tuple[Simulator, list[str | Path]]] = {
        "debian12": (sims["esx"], []),
        "win2022": (sims["vpx"], ["--virtio-win", tree]),
    }

    def run(name: str) -> Converted:
        sim, extra = jobs[name]
        out = base / name
        out.mkdir()
        argv: list[str | Path] = ["convert", "-ic", sim.uri(), name, "-ip", password]
        argv += ["-o", "local", "-os", out, "-of", "qcow2", *extra]
        return vmshift(argv, timeout=2400), out

    before = {p: sha256(p) for f in datastore_files.values() for p in (f, flat_file(f))}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in jobs}
        yield futures
        for future in futures.values():
            future.result()
    assert {p: sha256(p) for p in before} == before, "the datastore's files changed"


def test_debian_from_esx_boots_on_virtio_with_its_address(
    conversions: dict[str, Future[Converted]],
) -> None:
    proc, out = conversions["debian12"].result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = proc.stdout.strip().splitlines()[-1]
    assert verdict.startswith("vmshift: debian12 configured with virtio drivers"), verdict
    assert PASSWORD not in proc.stdout + proc.stderr
    xml = (out / "debian12.xml").read_text().replace('"', "'")
    assert f"<mac address='{MAC}'/>" in xml
    assert "<target dev='vda' bus='virtio'/>" in xml
    result = boot_to_login(
        out / "debian12-sda",
        disk_bus="virtio-blk",
        nic_model="virtio-net-pci",
        mac=MAC,
        command="ip -br addr",
        password="vmshift",
        timeout=900,
    )
    assert result.reached_login, result.tail()
    iface = next(line for line in (result.command_output or "").splitlines() if "ens192" in line)
    assert "UP" in iface and STATIC_ADDRESS in iface


def test_windows_from_vcenter_gets_its_drivers(
    conversions: dict[str, Future[Converted]],
) -> None:
    proc, out = conversions["win2022"].result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = proc.stdout.strip().splitlines()[-1]
    assert verdict.startswith("vmshift: win2022 configured with virtio drivers"), verdict
    assert "viostor" in verdict
    xml = (out / "win2022.xml").read_text().replace('"', "'")
    assert "<mac address='00:50:56:aa:20:22'/>" in xml
    assert "bus='virtio'" in xml
