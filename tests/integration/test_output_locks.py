"""Two runs, one output name (issue 12): the output lock, what the next run removes after a
kill -9, and renames into place that never replace a file. Targets are driven directly (as in
test_targets.py); a "run that was killed" is a real child process killed with SIGKILL.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import vmshift
from tests.export_domain import FakeDomain, make_export_domain
from tests.integration.libvirt_fixture import PrivateLibvirtd, dir_pool, private_libvirtd
from tests.integration.test_targets import CAPS, MIB, fake_copy, make_vm
from tests.os_samples import LINUX
from vmshift.blockio.progress import Event, WarningEvent
from vmshift.errors import DiskImageError, TargetError
from vmshift.fsops import rename_noreplace
from vmshift.model.vm import DiskEndpoint, Firmware, SourceDisk, SourceVM
from vmshift.pipeline import RunOptions, run_conversion
from vmshift.process import Owner, proc_stat
from vmshift.targets.base import TargetOptions
from vmshift.targets.libvirt import LibvirtTarget
from vmshift.targets.local import LocalTarget
from vmshift.targets.qemu import QemuTarget
from vmshift.targets.rhv import RhvTarget

REPO = Path(__file__).parents[2]

# A vmshift run in another process: check() and setup(), then either stopped in the middle of
# its copy ("copy": half a disk written, its path printed, then it sleeps), or its copy done and
# killed with SIGKILL in finalize: at its Nth rename into place ("renameN"), or at the very end,
# as it drops its lock ("release").
CHILD = """
import json, os, signal, sys, time
from tests.integration.test_targets import CAPS, MIB, fake_copy, make_vm
from tests.os_samples import LINUX
from vmshift import fsops
from vmshift.targets.base import TargetOptions
from vmshift.targets.libvirt import LibvirtTarget
from vmshift.targets.local import LocalTarget
from vmshift.targets.output_lock import OutputLock
from vmshift.targets.qemu import QemuTarget
from vmshift.targets.rhv import RhvTarget

kind, options, disks, stop = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
targets = {"local": LocalTarget, "qemu": QemuTarget, "rhv": RhvTarget, "libvirt": LibvirtTarget}
target = targets[kind](TargetOptions(**options))
vm = make_vm(disks=disks)
target.check(vm)
outs = target.setup(vm, [MIB] * disks)
if stop == "copy":
    outs[0].path.write_bytes(b"half a disk")
    print(outs[0].path, flush=True)
    time.sleep(600)
for out in outs:
    fake_copy(out)

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)

renames, rename = [], fsops.rename_noreplace
def counted(src, dst):
    renames.append(dst)
    if stop == f"rename{len(renames)}":
        killed()
    rename(src, dst)

fsops.rename_noreplace = counted
if stop == "release":
    OutputLock.release = killed
target.finalize(vm, LINUX, CAPS, outs)
"""


@pytest.fixture
def child() -> Iterator[list[subprocess.Popen[str]]]:
    """Started children; any still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run_child(
    kind: str, options: dict[str, str], stop: str, disks: int = 2
) -> subprocess.Popen[str]:
    """The run of CHILD for target kind with TargetOptions(**options), to stop at stop."""
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, json.dumps(options), str(disks), stop],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_run(started: list[subprocess.Popen[str]], kind: str, storage: Path) -> Path:
    """A vmshift run in another process, stopped with a disk half copied; its temporary disk."""
    proc = run_child(kind, {"storage": str(storage)}, "copy")
    started.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.communicate()[1]
    return Path(line.strip())


def killed_in_finalize(kind: str, options: dict[str, str], stop: str, disks: int = 2) -> int:
    """A vmshift run in another process that kills itself (SIGKILL) in finalize; its pid."""
    proc = run_child(kind, options, stop, disks)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    return proc.pid


def dead_owner() -> Owner:
    """The owner stamp of a run of this host that is gone (killed, its lock left)."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dataclasses.replace(Owner.this_process(), pid=dead.pid)


def kill_9(proc: subprocess.Popen[str], *, reap: bool = True) -> None:
    proc.send_signal(signal.SIGKILL)
    if reap:
        proc.wait()
        return
    # Left a zombie (a parent that has not reaped it yet): dead all the same.
    deadline = time.monotonic() + 10
    while (stat := proc_stat(proc.pid)) is not None and stat[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def busy(directory: Path, name: str, pid: int) -> str:
    return f"{directory / name}: another vmshift run (pid {pid}) is converting to this name"


# ---- -o local ------------------------------------------------------------------------------


def test_two_runs_for_one_name(tmp_path: Path) -> None:
    """The second run is refused while the first runs, naming it; after the first finished,
    because the files exist. Neither refusal leaves anything behind."""
    vm = make_vm()
    first = LocalTarget(TargetOptions(storage=str(tmp_path)))
    first.check(vm)
    assert first.swept == []
    outs = first.setup(vm, [MIB, MIB])
    assert names(tmp_path) == [".guest1.vmshift-lock"]
    with pytest.raises(TargetError) as refused:
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(vm)
    assert refused.value.message == busy(tmp_path, "guest1", os.getpid())
    assert names(tmp_path) == [".guest1.vmshift-lock"]  # the first run's lock is left alone

    for out in outs:
        fake_copy(out)
    first.finalize(vm, LINUX, CAPS, outs)
    assert names(tmp_path) == ["guest1-sda", "guest1-sdb", "guest1.xml"]  # lock dropped
    with pytest.raises(TargetError, match=r"guest1-sda: already exists; refusing to overwrite"):
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(vm)
    assert names(tmp_path) == ["guest1-sda", "guest1-sdb", "guest1.xml"]


def test_a_live_run_in_another_process_is_named(
    tmp_path: Path, child: list[subprocess.Popen[str]]
) -> None:
    temp = start_run(child, "local", tmp_path)
    with pytest.raises(TargetError) as refused:
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    assert refused.value.message == busy(tmp_path, "guest1", child[0].pid)
    assert temp.read_bytes() == b"half a disk"  # its files are its own


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_what_a_killed_run_left_is_removed_by_the_next(
    tmp_path: Path, child: list[subprocess.Popen[str]], reaped: bool
) -> None:
    temp = start_run(child, "local", tmp_path)
    assert temp == tmp_path / ".guest1-sda.tmp"
    pid = child[0].pid
    kill_9(child[0], reap=reaped)
    # Like it, but not it: another name's temporary disk, a file of the user's.
    (tmp_path / ".guest10-sda.tmp").write_text("another run's")
    (tmp_path / "notes.txt").write_text("mine")

    target = LocalTarget(TargetOptions(storage=str(tmp_path)))
    vm = make_vm()
    target.check(vm)  # before any slow work
    assert target.swept == [
        f"removed {temp}: left by run {pid} that was killed",
        f"removed {tmp_path / '.guest1.vmshift-lock'}: left by run {pid} that was killed",
    ]
    assert names(tmp_path) == [".guest1.vmshift-lock", ".guest10-sda.tmp", "notes.txt"]
    assert Owner.parse((tmp_path / ".guest1.vmshift-lock").read_text()).pid == os.getpid()
    outs = target.setup(vm, [MIB, MIB])
    for out in outs:
        fake_copy(out)
    target.finalize(vm, LINUX, CAPS, outs)
    assert names(tmp_path) == [
        ".guest10-sda.tmp", "guest1-sda", "guest1-sdb", "guest1.xml", "notes.txt"
    ]  # fmt: skip


def test_a_killed_runs_lock_alone_is_taken_over_saying_so(tmp_path: Path) -> None:
    """Killed before its copy began: only its lock is left (here a stamp of a process that
    is gone, as an older vmshift with a two-field stamp would write it)."""
    dead = dead_owner()
    (tmp_path / ".guest1.vmshift-lock").write_text(f"{dead.pid} {dead.started}\n")
    target = LocalTarget(TargetOptions(storage=str(tmp_path)))
    target.check(make_vm())
    lock = tmp_path / ".guest1.vmshift-lock"
    assert target.swept == [f"removed {lock}: left by run {dead.pid} that was killed"]
    target.abort()
    assert names(tmp_path) == []


@pytest.mark.parametrize("content", ["", "dead"], ids=["being-written", "being-taken-over"])
def test_a_held_lock_is_refused_whatever_it_says(tmp_path: Path, content: str) -> None:
    """The flock decides, not the stamp: a run that has just created its lock (still empty),
    or is taking over a killed run's (still the dead stamp), has the name."""
    lock = tmp_path / ".guest1.vmshift-lock"
    if content == "dead":
        content = dead_owner().stamp()
    lock.write_text(content)
    (tmp_path / ".guest1-sda.tmp").write_text("its copy")
    with lock.open("r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TargetError) as refused:
            LocalTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    assert refused.value.message == (
        f"{tmp_path / 'guest1'}: another vmshift run is converting to this name"
    )
    assert lock.read_text() == content
    assert (tmp_path / ".guest1-sda.tmp").read_text() == "its copy"


def test_a_lock_vmshift_cannot_judge_is_refused(tmp_path: Path) -> None:
    """Another host's run (a shared NFS directory): whether it lives is not known here."""
    lock = tmp_path / ".guest1.vmshift-lock"
    other = dataclasses.replace(Owner.this_process(), host="elsewhere.example.com")
    lock.write_text(other.stamp())
    (tmp_path / ".guest1-sda.tmp").write_text("its copy")
    with pytest.raises(TargetError) as refused:
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    assert refused.value.message == (
        f"{tmp_path / 'guest1'}: another vmshift run (pid {other.pid} on host "
        "elsewhere.example.com) may be converting to this name"
    )
    assert refused.value.hint == f"if it is not running any more, remove {lock}"
    assert lock.read_text() == other.stamp()
    assert (tmp_path / ".guest1-sda.tmp").read_text() == "its copy"


@pytest.mark.parametrize("appears", ["guest1-sdb", "guest1.xml"])
def test_a_file_that_appears_before_its_rename_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, appears: str
) -> None:
    """Someone else's file appears under a final name after check(): finalize fails in one
    line, that file is untouched, and abort() removes this run's files and lock."""

    def racing(src: Path, dst: Path) -> None:
        if dst.name == appears:  # made in the instant between the last check and the rename
            dst.write_text("precious")
        rename_noreplace(src, dst)

    monkeypatch.setattr("vmshift.fsops.rename_noreplace", racing)
    target = LocalTarget(TargetOptions(storage=str(tmp_path)))
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [MIB, MIB])
    for out in outs:
        fake_copy(out)
    with pytest.raises(TargetError) as failed:
        target.finalize(vm, LINUX, CAPS, outs)
    assert failed.value.message == f"{tmp_path / appears}: already exists; refusing to overwrite it"
    assert (tmp_path / appears).read_text() == "precious"
    target.abort()  # as the pipeline does on any error
    assert names(tmp_path) == [appears]
    assert (tmp_path / appears).read_text() == "precious"


def test_an_xml_made_after_setup_is_not_replaced(tmp_path: Path) -> None:
    """No monkeypatching: the XML is only ever checked by its rename."""
    target = LocalTarget(TargetOptions(storage=str(tmp_path)))
    vm = make_vm(disks=1)
    target.check(vm)
    (out,) = target.setup(vm, [MIB])
    fake_copy(out)
    (tmp_path / "guest1.xml").write_text("<domain>someone else's</domain>")
    with pytest.raises(TargetError, match=r"guest1\.xml: already exists; refusing to overwrite"):
        target.finalize(vm, LINUX, CAPS, [out])
    target.abort()
    assert names(tmp_path) == ["guest1.xml"]
    assert (tmp_path / "guest1.xml").read_text() == "<domain>someone else's</domain>"


def test_the_pipeline_reports_what_check_removed_before_the_slow_work(tmp_path: Path) -> None:
    """target.swept reaches the user as warnings right after check(); here the run then
    fails at once (its disk is missing) and the target is aborted."""

    class Source:
        def open(self, workdir: Path) -> SourceVM:
            disk = DiskEndpoint(str(tmp_path / "missing.img"), "raw", MIB)
            return SourceVM("g", 1 << 30, 1, None, Firmware.BIOS, (SourceDisk(disk),))

        def close(self) -> None:
            pass

    class Target:
        swept = ["removed /out/.g-sda.tmp: left by run 42 that was killed"]
        aborted = False

        def check(self, vm: SourceVM) -> None:
            pass

        def abort(self) -> None:
            self.aborted = True

    events: list[Event] = []
    target = Target()
    with pytest.raises(DiskImageError):
        run_conversion(
            Source(),
            target,  # type: ignore[arg-type]
            RunOptions(workdir_parent=tmp_path),
            events.append,
        )
    assert WarningEvent("removed /out/.g-sda.tmp: left by run 42 that was killed") in events
    assert target.aborted


def test_the_command_says_what_it_removed_and_who_has_the_name(
    tmp_path: Path, child: list[subprocess.Popen[str]]
) -> None:
    """`vmshift convert` end to end, stopped in check() (no appliance): a live run's name is
    refused in one line; a killed run's leftovers are removed and reported even when the run
    is then refused, here by a final file that its lock does not record as that run's (so it
    is not removed: test_killed_in_finalize.py has the files a run killed in finalize made)."""
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(MIB)
    out = tmp_path / "out"
    out.mkdir()
    temp = start_run(child, "local", out)
    pid = child[0].pid
    argv: list[str | Path] = ["convert", "-i", "disk", disk, "-on", "guest1"]
    argv += ["-o", "local", "-os", out]
    live = vmshift(argv, timeout=120)
    assert live.returncode == 1, live.stderr
    assert f"{out / 'guest1'}: another vmshift run (pid {pid}) is converting to this name" in (
        live.stderr
    )
    assert temp.read_bytes() == b"half a disk"

    kill_9(child[0])
    (out / "guest1.xml").write_text("<domain/>")
    again = vmshift(argv, timeout=120)
    assert again.returncode == 1, again.stderr
    lines = again.stderr.splitlines()
    for removed in (temp, out / ".guest1.vmshift-lock"):
        said = f"removed {removed}: left by run {pid} that was killed"
        assert any(said in line for line in lines), again.stderr
    assert f"{out / 'guest1.xml'}: already exists; refusing to overwrite it" in again.stderr
    assert "Traceback" not in again.stderr
    assert names(out) == ["guest1.xml"]


# ---- -o qemu -------------------------------------------------------------------------------


def test_qemu_lock_and_what_a_killed_run_left(
    tmp_path: Path, child: list[subprocess.Popen[str]]
) -> None:
    temp = start_run(child, "qemu", tmp_path)
    pid = child[0].pid
    with pytest.raises(TargetError) as refused:
        QemuTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    assert refused.value.message == busy(tmp_path, "guest1", pid)
    kill_9(child[0])
    # As if it had been killed in finalize, writing its script and UEFI variables.
    script_temp = tmp_path / ".guest1.sh.k2x9_q0a.tmp"
    vars_temp = tmp_path / ".guest1-VARS.fd.abcd1234.tmp"
    script_temp.write_text("#!/bin/sh\n")
    vars_temp.write_bytes(b"\0" * 64)

    target = QemuTarget(TargetOptions(storage=str(tmp_path)))
    vm = make_vm()
    target.check(vm)
    lock = tmp_path / ".guest1.vmshift-lock"
    assert target.swept == [
        f"removed {p}: left by run {pid} that was killed"
        for p in (vars_temp, temp, script_temp, lock)
    ]
    outs = target.setup(vm, [MIB, MIB])
    for out in outs:
        fake_copy(out)
    target.finalize(vm, LINUX, CAPS, outs)
    assert names(tmp_path) == ["guest1-sda", "guest1-sdb", "guest1.sh"]


def test_qemu_script_made_after_setup_is_not_replaced(tmp_path: Path) -> None:
    target = QemuTarget(TargetOptions(storage=str(tmp_path)))
    vm = make_vm(disks=1)
    target.check(vm)
    (out,) = target.setup(vm, [MIB])
    fake_copy(out)
    (tmp_path / "guest1.sh").write_text("echo mine\n")
    with pytest.raises(TargetError, match=r"guest1\.sh: already exists; refusing to overwrite"):
        target.finalize(vm, LINUX, CAPS, [out])
    target.abort()
    assert names(tmp_path) == ["guest1.sh"]
    assert (tmp_path / "guest1.sh").read_text() == "echo mine\n"


# ---- -o rhv --------------------------------------------------------------------------------


@pytest.fixture
def domain(tmp_path: Path) -> FakeDomain:
    top = tmp_path / "export"
    top.mkdir()
    return make_export_domain(top, owner=(36, 36))


def test_rhv_lock_and_what_a_killed_run_left(
    domain: FakeDomain, child: list[subprocess.Popen[str]]
) -> None:
    before = domain.everything()
    temp = start_run(child, "rhv", domain.top)
    staging = domain.root / ".guest1.vmshift-staging"
    assert staging in temp.parents
    pid = child[0].pid
    with pytest.raises(TargetError) as refused:
        RhvTarget(TargetOptions(storage=str(domain.top))).check(make_vm())
    assert refused.value.message == (
        f"-os {domain.top}: VM guest1: another vmshift run (pid {pid}) is converting to this name"
    )
    assert temp.read_bytes() == b"half a disk"
    kill_9(child[0])

    target = RhvTarget(TargetOptions(storage=str(domain.top)))
    vm = make_vm()
    target.check(vm)
    lock = domain.root / ".guest1.vmshift-lock"
    assert target.swept == [
        f"removed {staging}: left by run {pid} that was killed",
        f"removed {lock}: left by run {pid} that was killed",
    ]
    assert domain.everything() == sorted([*before, lock.name])
    outs = target.setup(vm, [MIB, MIB])
    for out in outs:
        fake_copy(out)
    target.finalize(vm, LINUX, CAPS, outs)
    assert len(domain.vm_dirs()) == 1 and len(domain.image_dirs()) == 2
    assert not lock.exists() and not staging.exists()


def test_rhv_abort_drops_the_lock(domain: FakeDomain) -> None:
    before = domain.everything()
    target = RhvTarget(TargetOptions(storage=str(domain.top)))
    vm = make_vm()
    target.check(vm)
    target.setup(vm, [MIB, MIB])
    target.abort()
    assert domain.everything() == before
    again = RhvTarget(TargetOptions(storage=str(domain.top)))
    again.check(vm)
    assert again.swept == []
    again.abort()


# ---- -o libvirt, a directory pool ----------------------------------------------------------


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


def test_libvirt_directory_pool_lock(libvirtd: PrivateLibvirtd) -> None:
    with dir_pool(libvirtd, "pool-locks") as (lv_pool, pool_dir):
        _check_libvirt_pool_lock(libvirtd, lv_pool, pool_dir)


def _check_libvirt_pool_lock(libvirtd: PrivateLibvirtd, lv_pool: Any, pool_dir: Path) -> None:
    dead = dead_owner()
    lock = pool_dir / ".conv2.vmshift-lock"
    lock.write_text(dead.stamp())
    (pool_dir / ".conv2-sda.tmp").write_text("half")
    opts = TargetOptions(storage=lv_pool.name(), conn=libvirtd.uri, name="conv2")
    vm = make_vm()
    first = LibvirtTarget(opts)
    first.check(vm)
    assert first.swept == [
        f"removed {pool_dir / '.conv2-sda.tmp'}: left by run {dead.pid} that was killed",
        f"removed {lock}: left by run {dead.pid} that was killed",
    ]
    with pytest.raises(TargetError) as refused:
        LibvirtTarget(opts).check(vm)
    assert refused.value.message == (
        f"pool {lv_pool.name()} ({pool_dir}), conv2: another vmshift run (pid {os.getpid()}) "
        "is converting to this name"
    )
    outs = first.setup(vm, [MIB, MIB])
    fake_copy(outs[0])
    first.abort()
    assert names(pool_dir) == []
