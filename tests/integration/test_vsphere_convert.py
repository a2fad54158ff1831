"""Conversions straight from the vSphere simulator: the real Debian guest from an ESXi host
(esx://) boots on virtio with its MAC and static address, and the phony Windows Server 2022 from
vCenter (vpx://) gets its VirtIO drivers. The datastore's files are byte-identical afterwards:
the disks are read over HTTPS through nbdkit, every write lands in the overlay.

The Debian VM also has a 2 TiB thin data disk holding a little data: it converts with the guest,
and the bytes fetched for it over HTTPS stay near what the thin disk holds."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.cache import cached_dir
from tests.guests.debian_real import MAC
from tests.guests.manifest import BuiltGuest
from tests.guests.virtio_win import build_tree
from tests.integration.libvirt_fixture import PrivateLibvirtd, private_libvirtd
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
BIG = 2 << 40  # the thin data disk's capacity
BIG_DATA = 128 << 20  # what it holds: one file of random bytes
BIG_LABEL = "[LocalDS_0] debian12/bigdata.vmdk"
SYSTEM_LABEL = "[LocalDS_0] debian12/debian12-vmware.vmdk"


def flat_copy(disk: Path, fmt: str, name: str) -> Path:
    """disk as a flat VMDK (descriptor + sparse -flat file), as ESXi stores it; cached."""

    def build(out: Path) -> None:
        make_flat_vmdk(disk, fmt, out / f"{name}.vmdk")

    # Keyed by the source guest's own cache version: a rebuilt guest gets a new copy.
    where = cached_dir(f"{name}-flat", disk.parent.name.rsplit("-", 1)[-1], build)
    return where / f"{name}.vmdk"


def thin_data_disk(where: Path) -> Path:
    """A 2 TiB thin disk as ESXi stores it: a descriptor and a sparse -flat file whose
    allocated blocks are what the guest wrote, here an XFS filesystem over the whole disk made
    with one file in it (mkfs.xfs writes its 64 MiB log too: that is allocated as well)."""
    where.mkdir()
    data = where / "data.bin"
    data.write_bytes(os.urandom(BIG_DATA))
    proto = where / "proto"
    proto.write_text(f"/dev/null\n0 0\nd--755 0 0\ndata.bin ---644 0 0 {data}\n$\n")
    vmdk = where / "bigdata.vmdk"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", str(vmdk),
         str(BIG)],
        check=True,
    )  # fmt: skip
    flat = flat_file(vmdk)
    subprocess.run(
        ["mkfs.xfs", "-q", "-f", "-K", "-l", "size=64m", "-p", str(proto), str(flat)], check=True
    )
    return vmdk


def _offset_of(needle: bytes, disk: Path, within: int) -> int:
    """Where needle (a 4 KiB block of random data) starts in disk's first `within` bytes."""
    with disk.open("rb") as f:
        for offset in range(0, within, 4096):
            f.seek(offset)
            if f.read(len(needle)) == needle:
                return offset
    raise AssertionError(f"{disk}: the file's data is not in its first {within} bytes")


@pytest.fixture(scope="module")
def datastore_files(
    real_debian: BuiltGuest,
    windows_guests: dict[str, BuiltGuest],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    return {
        "debian12": flat_copy(real_debian.disks[0], "vmdk", "debian12-vmware"),
        "win2022": flat_copy(windows_guests["win2022"].disks[0], "qcow2", "win2022"),
        "bigdata": thin_data_disk(tmp_path_factory.mktemp("thin") / "bigdata"),
    }


def _unchanged(path: Path) -> tuple[int, ...]:
    """What would show a write: the contents' hash, or for the 2 TiB sparse file (hashing it
    would read 2 TiB of holes) its size, blocks and modification time."""
    st = path.stat()
    if st.st_size < BIG:
        return (int(sha256(path), 16),)
    return (st.st_size, st.st_blocks, st.st_mtime_ns)


@pytest.fixture(scope="module")
def sims(datastore_files: dict[str, Path]) -> Iterator[dict[str, Simulator]]:
    with (
        simulator("esx", "root", PASSWORD) as esx,
        simulator("vpx", "administrator@vsphere.local", PASSWORD) as vpx,
    ):
        esx.add_vm(
            SimVm(
                "debian12",
                (SimDisk(datastore_files["debian12"]), SimDisk(datastore_files["bigdata"])),
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
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


@pytest.fixture(scope="module")
def conversions(
    sims: dict[str, Simulator],
    datastore_files: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    libvirtd: PrivateLibvirtd,
) -> Iterator[dict[str, Future[Converted]]]:
    """Both conversions at once: each spends minutes in a single-threaded TCG appliance."""
    base = tmp_path_factory.mktemp("vsphere-convert")
    password = base / "password"
    password.write_text(PASSWORD + "\n")
    tree = build_tree(base / "virtio-win")
    jobs: dict[str, tuple[Simulator, list[str | Path]]] = {
        "debian12": (
            sims["esx"],
            [
                "--report",
                libvirtd.root / "debian12.json",
                "--verify-boot",
                "--verify-boot-conn",
                libvirtd.uri,
            ],
        ),
        "win2022": (sims["vpx"], ["--virtio-win", tree]),
    }

    def run(name: str) -> Converted:
        sim, extra = jobs[name]
        # A guest booted by --verify-boot: in the daemon's tree, which its uid can reach.
        out = (libvirtd.root if "--verify-boot" in extra else base) / name
        out.mkdir(mode=0o755)
        argv: list[str | Path] = ["convert", "-ic", sim.uri(), name, "-ip", password]
        argv += ["-o", "local", "-os", out, "-of", "qcow2", *extra]
        return vmshift(argv, timeout=2400), out

    before = {p: _unchanged(p) for f in datastore_files.values() for p in (f, flat_file(f))}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, name) for name in jobs}
        yield futures
        for future in futures.values():
            future.result()
    assert {p: _unchanged(p) for p in before} == before, "the datastore's files changed"


def test_debian_from_esx_boots_on_virtio_with_its_address(
    conversions: dict[str, Future[Converted]],
) -> None:
    proc, out = conversions["debian12"].result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = proc.stdout.strip().splitlines()[-2]
    assert verdict.startswith("vmshift: debian12 configured with virtio drivers"), verdict
    assert PASSWORD not in proc.stdout + proc.stderr
    xml = (out / "debian12.xml").read_text().replace('"', "'")
    assert f"<mac address='{MAC}'/>" in xml
    assert "<target dev='vda' bus='virtio'/>" in xml
    # --verify-boot booted that XML: login prompt, and the static address answered ARP on the
    # NIC with the source's MAC.
    booted = proc.stdout.strip().splitlines()[-1]
    assert booted.startswith("vmshift: debian12 booted to its login prompt in "), booted
    assert f"{STATIC_ADDRESS.split('/', maxsplit=1)[0]} up ({MAC})" in booted, booted


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


def test_a_2tib_thin_disk_fetches_about_what_it_holds(
    conversions: dict[str, Future[Converted]], datastore_files: dict[str, Path]
) -> None:
    """The copy skips what fstrim freed in the overlay, so of 2 TiB only about the blocks the
    thin disk holds cross the network (--report counts them from nbdkit's log), and the file
    on it arrives intact. (The filesystem's own metadata differs: conversion mounted it.)"""
    proc, out = conversions["debian12"].result()
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out.parent / "debian12.json").read_text())
    fetched = report["source"]["fetched_bytes"]
    flat = flat_file(datastore_files["bigdata"])
    held = flat.stat().st_blocks * 512  # the thin disk's allocated size on the datastore
    assert BIG_DATA < fetched[BIG_LABEL] <= 1.1 * held, (fetched, held)
    # The system disk too: what the appliance read was kept in the overlay (copy-on-read),
    # so the copy did not fetch it again.
    system = flat_file(datastore_files["debian12"]).stat().st_blocks * 512
    assert fetched[SYSTEM_LABEL] <= 1.1 * system, (fetched, system)
    assert f"{BIG_LABEL}: " in proc.stderr and " fetched from the source" in proc.stderr
    data = (flat.parent / "data.bin").read_bytes()
    offset = _offset_of(data[:4096], flat, held)
    chunk = out.parent / "bigdata-chunk.raw"
    subprocess.run(
        ["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1M", f"skip={offset >> 20}",
         f"count={(offset % (1 << 20) + BIG_DATA) // (1 << 20) + 1}",
         f"if={out / 'debian12-sdb'}", f"of={chunk}"],
        check=True, timeout=600,
    )  # fmt: skip
    with chunk.open("rb") as f:
        f.seek(offset % (1 << 20))
        assert f.read(BIG_DATA) == data, "the file on the 2 TiB disk did not arrive intact"
