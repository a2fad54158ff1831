"""Resumable copy (issue 12) beyond -o local and local files: -o libvirt into a directory pool
(real libvirtd), a vSphere source (govmomi's simulator) whose copy is interrupted, or whose
host stops answering in the middle of it, then resumed to the source's bytes, a VM whose disk
changed meanwhile not resumed; and a VMX read over SSH (a private sshd) resumed alike.

As in test_resume.py, the appliance stages are stand-ins (`no_appliance`: the overlay is the
source as it is) and windows are 64 MiB (`small_windows`); everything else is real: qemu-img,
nbdkit with its https plugin, the vSphere API, libvirtd.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.libvirt_fixture import PrivateLibvirtd, dir_pool, private_libvirtd
from tests.integration.test_resume import (  # noqa: F401 (fixtures)
    MIB,
    Stop,
    data_image,
    no_appliance,
    same_bytes,
    small_windows,
)
from tests.integration.test_vsphere_source import DroppingProxy
from tests.sshd_fixture import private_sshd
from tests.vmx_samples import two_nic_vmx
from tests.vsphere.simulator import SimDisk, Simulator, SimVm, flat_file, make_flat_vmdk, simulator
from vmshift import resume
from vmshift.blockio.progress import CopyProgress, Event
from vmshift.errors import ConversionError
from vmshift.pipeline import ConversionResult, RunOptions, run_conversion
from vmshift.sources import vsphere
from vmshift.sources.base import Source, SourceOptions
from vmshift.sources.disk import DiskSource
from vmshift.sources.vmx import VmxSource
from vmshift.targets.base import Target, TargetOptions
from vmshift.targets.libvirt import LibvirtTarget
from vmshift.targets.local import LocalTarget
from vmshift.workdir import RESUMABLE

DISK = 128 * MIB  # 2 windows: the interruptions come in the second
PASSWORD = "resume pass"
Sink = Callable[[Event], None]


def stop_at(done: int) -> Sink:
    """A sink that interrupts the copy, as a signal would, once `done` bytes are copied."""

    def sink(event: Event) -> None:
        if isinstance(event, CopyProgress) and event.done >= done:
            raise Stop()

    return sink


def convert(
    source: Source, target: Target, work: Path, sink: Sink, *, again: bool = False
) -> ConversionResult:
    opts = RunOptions(workdir_parent=work, resume_key="k1", resume=again)
    return run_conversion(source, target, opts, sink)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- -o libvirt, a directory pool -----------------------------------------------------------


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


@pytest.mark.usefixtures("no_appliance")
def test_a_copy_into_a_directory_pool_resumes(libvirtd: PrivateLibvirtd, tmp_path: Path) -> None:
    src, work = tmp_path / "g.raw", tmp_path / "work"
    work.mkdir()
    data_image(src, DISK)
    conn = libvirtd.connect()
    with dir_pool(libvirtd, "resume-pool") as (pool, pool_dir):

        def run(sink: Sink, again: bool = False) -> ConversionResult:
            source = DiskSource(SourceOptions(args=(str(src),), name="g"))
            target = LibvirtTarget(TargetOptions(storage=pool.name(), conn=libvirtd.uri))
            return convert(source, target, work, sink, again=again)

        with pytest.raises(resume.KeptForResume) as kept:
            run(stop_at(80 * MIB))
        assert (kept.value.workdir / RESUMABLE).exists()
        # The temporary disk and its claim stay; the lock is released, nothing is defined.
        assert names(pool_dir) == [".g-sda.tmp", ".g-sda.tmp.vmshift-resume"]
        assert "g" not in conn.listDefinedDomains()
        events: list[Event] = []
        try:
            result = run(events.append, again=True)
            assert result.copy_verified
            assert any("resuming the copy after" in str(e) for e in events)
            assert names(pool_dir) == ["g-sda"]
            assert same_bytes(pool_dir / "g-sda", src)
            pool.refresh(0)
            assert pool.listVolumes() == ["g-sda"]
            xml = conn.lookupByName("g").XMLDesc(0)
            assert str(pool_dir / "g-sda") in xml
            assert list(work.iterdir()) == []
        finally:
            with contextlib.suppress(Exception):
                conn.lookupByName("g").undefine()
            for path in pool_dir.iterdir():
                path.unlink()
    conn.close()


# --- a vSphere source -----------------------------------------------------------------------


class CuttableProxy(DroppingProxy):
    """A TCP proxy to the simulator: cut() ends every connection and refuses new ones, as a
    host gone from the network; restore() lets them through again."""

    def __init__(self, target_port: int) -> None:
        self._cut = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(target_port, limit=1 << 62)  # never drops on its own

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        if self._cut.is_set():
            for s in (src, dst):
                s.close()
            return
        with self._lock:
            self._open |= {src, dst}
        super()._pump(src, dst, answers)

    def close(self) -> None:
        super().close()
        self.cut()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Simulator, dict[str, Path]]]:
    """An ESXi simulator with two powered-off VMs, each with a DISK-sized flat disk of data;
    and the raw images of those disks."""
    if shutil.which("nbdkit") is None:
        pytest.skip("needs nbdkit")
    base = tmp_path_factory.mktemp("resume-vsphere")
    raws = {}
    with simulator("esx", "root", PASSWORD) as server:
        for seed, name in enumerate(("lost", "changed")):
            raws[name] = base / f"{name}.raw"
            data_image(raws[name], DISK, seed=seed)
            vmdk = make_flat_vmdk(raws[name], "raw", base / f"{name}.vmdk")
            server.add_vm(SimVm(name, (SimDisk(vmdk),)))
        yield server, raws


def vsphere_source(uri: str, name: str) -> vsphere.VsphereSource:
    return vsphere.VsphereSource(SourceOptions(args=(name,), conn=uri, password=PASSWORD))


@pytest.mark.usefixtures("no_appliance")
def test_a_vsphere_copy_whose_host_went_away_resumes(
    sim: tuple[Simulator, dict[str, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host stops answering in the middle of the copy: once the reads fail after their
    retries, the state is kept as for a signal (KeptSourceError names the disk); with the host
    back, --resume opens the VM again (nbdkit on the same sockets), checks the journaled part
    against the overlay and copies the rest, to the disk's bytes."""
    server, raws = sim
    monkeypatch.setattr(vsphere, "RETRIES", 1)  # one retry after 1 s, not six in a minute
    proxy = CuttableProxy(server.port)
    uri = server.uri().replace(f":{server.port}/", f":{proxy.port}/")
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()

    def cut_midway(event: Event) -> None:
        if isinstance(event, CopyProgress) and event.done >= 80 * MIB:
            proxy.cut()

    try:
        with pytest.raises(resume.KeptSourceError) as kept:
            convert(vsphere_source(uri, "lost"), LocalTarget(TargetOptions(storage=str(out))),
                    work, cut_midway)  # fmt: skip
        assert "[LocalDS_0] lost/lost.vmdk stopped answering" in kept.value.message
        workdir = kept.value.workdir
        state = json.loads((workdir / RESUMABLE).read_text())
        assert state["remote"][0].startswith("vm ")
        assert names(out) == [".lost-sda.tmp", ".lost-sda.tmp.vmshift-resume"]
        assert (workdir / "copy.journal").read_text().startswith("sda 0 ")
        proxy.restore()
        events: list[Event] = []
        result = convert(vsphere_source(uri, "lost"),
                         LocalTarget(TargetOptions(storage=str(out))), work, events.append,
                         again=True)  # fmt: skip
    finally:
        proxy.close()
    assert any("resuming the copy after" in str(e) for e in events)
    assert not result.copy_verified  # a remote source's copy is not verified
    assert names(out) == ["lost-sda", "lost.xml"]
    assert same_bytes(out / "lost-sda", raws["lost"])
    assert list(work.iterdir()) == []


@pytest.mark.usefixtures("no_appliance")
def test_a_vsphere_vm_whose_disk_changed_is_not_resumed(
    sim: tuple[Simulator, dict[str, Path]], tmp_path: Path
) -> None:
    server, _raws = sim
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    target = LocalTarget(TargetOptions(storage=str(out)))
    with pytest.raises(resume.KeptForResume):
        convert(vsphere_source(server.uri(), "changed"), target, work, stop_at(80 * MIB))
    flat = server.datastore_dir / "changed" / flat_file(Path("changed.vmdk")).name
    with flat.open("r+b") as f:  # the VM ran meanwhile: its disk was written, later
        f.write(b"booted")
    later = flat.stat().st_mtime + 60
    os.utime(flat, (later, later))
    target = LocalTarget(TargetOptions(storage=str(out)))
    with pytest.raises(ConversionError, match="changed since the copy was interrupted") as refused:
        convert(vsphere_source(server.uri(), "changed"), target, work, lambda _e: None,
                again=True)  # fmt: skip
    assert "changed/changed-flat.vmdk" in refused.value.message
    assert list(out.iterdir()) == [] and list(work.iterdir()) == []


# --- -i vmx -it ssh -------------------------------------------------------------------------


@pytest.mark.usefixtures("no_appliance")
def test_a_copy_over_ssh_resumes(tmp_path: Path) -> None:
    """The same mechanism as vSphere's: nbdkit's ssh plugin on the same socket again, the VMX
    and the flat file checked by size and mtime over SFTP."""
    if shutil.which("nbdkit") is None:
        pytest.skip("needs nbdkit")
    vm = tmp_path / "vmfs" / "volumes" / "datastore1" / "s1"
    vm.mkdir(parents=True)
    raw = tmp_path / "s1.raw"
    data_image(raw, DISK, seed=7)
    make_flat_vmdk(raw, "raw", vm / "s1.vmdk")
    vmx = vm / "s1.vmx"
    vmx.write_text(two_nic_vmx("s1", "s1.vmdk"))
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    with private_sshd(tmp_path / "sshd") as sshd:
        options = {"ssh-identity": str(sshd.identity), "ssh-known-hosts": str(sshd.known_hosts)}

        def run(sink: Sink, again: bool = False) -> ConversionResult:
            opts = SourceOptions(args=(sshd.uri(vmx),), transport="ssh", options=options)
            target = LocalTarget(TargetOptions(storage=str(out)))
            return convert(VmxSource(opts), target, work, sink, again=again)

        with pytest.raises(resume.KeptForResume) as kept:
            run(stop_at(80 * MIB))
        state = json.loads((kept.value.workdir / RESUMABLE).read_text())
        assert state["remote"][0].startswith(f"{vmx} ")
        events: list[Event] = []
        run(events.append, again=True)
    assert any("resuming the copy after" in str(e) for e in events)
    assert names(out) == ["s1-sda", "s1.xml"]
    assert same_bytes(out / "s1-sda", raw)
    assert list(work.iterdir()) == []
