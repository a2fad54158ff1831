"""A vSphere disk with no flat file (as on vSAN) read through the VM's export lease, against
govmomi's simulator with our ExportVm (tests/vsphere/vcsim_export.go), which serves a
streamOptimized VMDK of the disk the way ESXi does: the data arrive intact, the lease is
completed (or aborted, with nothing left behind), a lack of room is one line, and the datastore
is untouched."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import mounted_tmpfs, sha256, vmshift
from tests.vsphere.simulator import (
    SimDisk,
    Simulator,
    SimVm,
    make_flat_vmdk,
    make_stream_vmdk,
    simulator,
)
from vmshift.blockio.progress import CopyProgress, Event
from vmshift.errors import DiskImageError
from vmshift.sources.base import SourceOptions
from vmshift.sources.vsphere import VsphereSource

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit")

PASSWORD = "export:pass word"
VM = "vsan-guest"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two disks: `flat` (descriptor + flat file, read over /folder) and `vsan` (its data only
    in what the export lease serves), each with a known first sector; vsan also holds 4 MiB of
    random data, so its export is not all zeros. The lease serves a streamOptimized VMDK of
    each, as ESXi does."""
    base = tmp_path_factory.mktemp("vsphere-export")
    for name in ("flat", "vsan"):
        raw = base / f"{name}.raw"
        with raw.open("wb") as f:
            f.truncate(16 << 20)
            f.write(f"vmshift {name} disk".encode().ljust(512, b"\0"))
            if name == "vsan":
                f.seek(1 << 20)
                f.write(os.urandom(4 << 20))
        make_flat_vmdk(raw, "raw", base / f"{name}.vmdk")
        make_stream_vmdk(raw, "raw", base / f"{name}-stream.vmdk")
    return base


@pytest.fixture(scope="module", params=["esx", "vpx"])
def sim(request: pytest.FixtureRequest, images: Path) -> Iterator[Simulator]:
    user = "root" if request.param == "esx" else "administrator@vsphere.local"
    with simulator(request.param, user, PASSWORD) as server:
        server.add_vm(
            SimVm(
                VM,
                (
                    SimDisk(images / "flat.vmdk", export=images / "flat-stream.vmdk"),
                    SimDisk(
                        images / "vsan.vmdk",
                        "lsilogic",
                        flat=False,
                        export=images / "vsan-stream.vmdk",
                    ),
                ),
            )
        )
        # A server that sends a descriptor: qemu would open the files it names on this host.
        server.add_vm(
            SimVm(
                "descriptor",
                (SimDisk(images / "vsan.vmdk", flat=False, export=images / "vsan.vmdk"),),
            )
        )
        yield server


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pw") / "password"
    path.write_text(PASSWORD + "\n")
    return path


def datastore(sim: Simulator) -> dict[Path, str]:
    return {p: sha256(p) for p in sorted((sim.datastore_dir / VM).iterdir())}


def new_leases(sim: Simulator, before: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    return [record for lease, record in sim.lease_records().items() if lease not in before]


def source(sim: Simulator) -> VsphereSource:
    return VsphereSource(SourceOptions(args=(VM,), conn=sim.uri(), password=PASSWORD))


def test_print_source_reads_the_disk_through_the_lease(
    sim: Simulator, images: Path, password_file: Path
) -> None:
    before_files, before_leases = datastore(sim), sim.lease_records()
    assert not (sim.datastore_dir / VM / "vsan-flat.vmdk").exists()
    proc = vmshift(
        ["convert", "-ic", sim.uri(), VM, "-ip", password_file, "--print-source"], timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "nbd+unix" in rows["sda"]  # a flat file: read over /folder
    assert " vmdk " in rows["sdb"] and "16.0 MiB" in rows["sdb"]  # what the lease served
    [lease] = new_leases(sim, before_leases)
    assert lease["state"] == "done"
    sent = lease["sent"]
    assert isinstance(sent, list) and len(sent) == 1, sent
    assert sent[0].endswith("/VirtualLsiLogicController0:1")  # sdb, not sda
    assert datastore(sim) == before_files


def test_the_downloaded_disk_holds_the_data(
    sim: Simulator,
    images: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from vmshift.sources import vsphere_export

    monkeypatch.setattr(vsphere_export, "KEEPALIVE", 0.0)  # a keep-alive after every chunk
    before = sim.lease_records()
    events: list[Event] = []
    vsphere = source(sim)
    vsphere.report_to(events.append)
    caplog.set_level(logging.INFO, logger="vmshift.sources.vsphere_export")
    try:
        vm = vsphere.open(tmp_path)
        flat, vsan = vm.disks
        assert flat.endpoint.uri.startswith("nbd+unix:")
        assert vsan.endpoint.is_local and vsan.endpoint.format == "vmdk"
        assert (vsan.controller_model, vsan.bus, vsan.unit) == ("lsilogic", 0, 1)
        assert vsan.endpoint.virtual_size == 16 << 20
        compare = subprocess.run(
            ["qemu-img", "compare", "-f", "raw", "-F", vsan.endpoint.format,
             str(images / "vsan.raw"), vsan.endpoint.uri],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert compare.returncode == 0, compare.stdout + compare.stderr
        assert vsphere.lost() is None  # the flat file's absence is no lost host
    finally:
        vsphere.close()
    [lease] = new_leases(sim, before)
    assert lease["state"] == "done" and lease["vm"] == VM
    assert isinstance(lease["progress_calls"], int) and lease["progress_calls"] >= 1
    downloads = [e for e in events if isinstance(e, CopyProgress)]
    assert downloads[-1].finished and downloads[-1].disk == "sdb-export"
    assert downloads[-1].done == (images / "vsan-stream.vmdk").stat().st_size
    # What crossed the network for it is the whole download (--report's fetched_bytes).
    fetched = vsphere.fetched()
    assert fetched[f"[LocalDS_0] {VM}/vsan.vmdk"] == downloads[-1].done, fetched
    assert any("downloaded through the export lease" in r.getMessage() for r in caplog.records)


def test_an_interrupted_download_aborts_the_lease(sim: Simulator, tmp_path: Path) -> None:
    def interrupt(event: Event) -> None:
        if isinstance(event, CopyProgress) and event.done:
            raise KeyboardInterrupt

    before = sim.lease_records()
    vsphere = source(sim)
    vsphere.report_to(interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            vsphere.open(tmp_path)
    finally:
        vsphere.close()
    assert [r["state"] for r in new_leases(sim, before)] == ["aborted"]
    assert not list(tmp_path.glob("*export*"))


@pytest.fixture
def small_tmpdir(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: room for the run's small files, not for the 4 MiB the lease serves."""
    with mounted_tmpfs(tmp_path / "small", "1m") as path:
        yield path


def test_too_little_room_is_one_line(
    sim: Simulator,
    images: Path,
    password_file: Path,
    small_tmpdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before_files, before_leases = datastore(sim), sim.lease_records()
    need = -(-(images / "vsan-stream.vmdk").stat().st_size >> 20)  # what the lease announces
    monkeypatch.setenv("TMPDIR", str(small_tmpdir))
    proc = vmshift(
        ["convert", "-ic", sim.uri(), VM, "-ip", password_file, "--print-source"], timeout=120
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1, proc.stderr
    assert (
        f": not enough free space to download [LocalDS_0] {VM}/vsan.vmdk through the export "
        f"lease: need {need} MiB, 0 MiB free" in errors[0]
    ), errors[0]
    assert [r["state"] for r in new_leases(sim, before_leases)] == ["aborted"]
    assert list(small_tmpdir.iterdir()) == []
    assert datastore(sim) == before_files


def test_an_image_naming_other_files_is_refused(
    sim: Simulator, password_file: Path, tmp_path: Path
) -> None:
    before = sim.lease_records()
    vsphere = VsphereSource(SourceOptions(args=("descriptor",), conn=sim.uri(), password=PASSWORD))
    try:
        with pytest.raises(DiskImageError) as refused:
            vsphere.open(tmp_path)
    finally:
        vsphere.close()
    assert str(refused.value) == (
        "[LocalDS_0] descriptor/vsan.vmdk: the export lease served a VMDK that names other files"
    )
    assert [r["state"] for r in new_leases(sim, before)] == ["done"]
    assert not list(tmp_path.glob("*export*"))
