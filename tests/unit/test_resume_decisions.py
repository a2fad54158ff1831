"""What makes a copy resumable (resume.facts), what the resume key covers, and the last lines of
a run whose remote source was lost in the copy (the state kept for --resume)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from tests.os_samples import LINUX
from vmshift import resume
from vmshift.blockio.overlay import Overlay
from vmshift.cli import convert_cmd, main
from vmshift.cli.resume_key import resume_key
from vmshift.cli.signals import GUARD
from vmshift.errors import CopyError, SourceError
from vmshift.model.caps import GuestCaps
from vmshift.model.vm import DiskEndpoint, Firmware, SourceDisk, SourceVM
from vmshift.pipeline import RunOptions, run_conversion
from vmshift.targets.base import TargetOptions
from vmshift.targets.libvirt import LibvirtTarget
from vmshift.targets.local import LocalTarget
from vmshift.workdir import make_workdir


def vm_with(uri: str) -> SourceVM:
    disk = SourceDisk(DiskEndpoint(uri, "raw", 1 << 20), name="sda")
    return SourceVM("g", 1 << 30, 1, None, Firmware.BIOS, (disk,))


class Keeps:
    def keep_for_resume(self) -> None: ...


class Remote:
    """A remote source (RemoteSource) that cannot be opened again on a kept work directory."""

    def open(self, workdir: Path) -> SourceVM:
        raise AssertionError("not opened")

    def close(self) -> None: ...

    def fetched(self) -> dict[str, int]:
        return {}

    def lost(self) -> SourceError | None:
        return None


class Reopenable(Remote):
    def __init__(self, identity: tuple[str, ...] | None) -> None:
        self._identity = identity

    def identity(self) -> tuple[str, ...] | None:
        return self._identity


NBD = "nbd+unix:///?socket=/w/vsphere-0.sock"


def test_a_remote_copy_is_resumable_by_its_identity() -> None:
    vm = vm_with(NBD)
    assert resume.facts(Reopenable(("vm 42",)), vm, Keeps(), [NBD]) == ((), ("vm 42",))
    # a disk downloaded into the work directory (an export lease): open() would fetch it again
    assert resume.facts(Reopenable(None), vm, Keeps(), [NBD]) is None
    assert resume.facts(Remote(), vm, Keeps(), [NBD]) is None
    assert resume.facts(Reopenable(("vm 42",)), vm, object(), [NBD]) is None  # keeps nothing


def test_a_libvirt_pool_of_block_devices_is_not_resumable() -> None:
    target = LibvirtTarget(TargetOptions(storage="vg0"))  # _pool_dir unset: not a directory
    assert not target.resumable
    assert resume.facts(Reopenable(("vm 42",)), vm_with(NBD), target, [NBD]) is None


def test_the_key_covers_the_remote_source_options() -> None:
    base = {"input": "libvirt", "input_conn": "esx://root@h/", "input_options": ["a=b"],
            "input_transport": None, "input_password_file": "/pw", "args": ["vm"]}  # fmt: skip
    key = resume_key(argparse.Namespace(**base))
    for option, other in (
        ("input_conn", "esx://root@other/"),
        ("input_options", ["vddk-thumbprint=AA"]),
        ("input_transport", "ssh"),
        ("args", ["vm2"]),
    ):
        assert resume_key(argparse.Namespace(**{**base, option: other})) != key, option
    # where the password is read from is not what is converted
    assert resume_key(argparse.Namespace(**{**base, "input_password_file": "/pw2"})) == key


def test_a_source_lost_in_the_copy_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lost = SourceError("esx://h/g: [ds] g/g.vmdk stopped answering: reset", hint="tried 7 times")

    def run(_args: argparse.Namespace) -> int:
        raise resume.KeptSourceError(lost, Path("/tmp/vmshift-x"))

    monkeypatch.setattr(convert_cmd, "run", run)
    monkeypatch.setattr(GUARD, "install", lambda: None)
    monkeypatch.setattr(GUARD, "signum", None)
    assert main.main(["convert", "-i", "disk", "x.img", "-o", "null"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "vmshift: error: esx://h/g: [ds] g/g.vmdk stopped answering: reset",
        "vmshift: hint: tried 7 times",
        "vmshift: the converted disks and the partial copy are kept: rerun the same command "
        "with --resume to continue, or without --resume to discard them; the source is untouched",
    ]


T = TypeVar("T")


class _SignalIn(Generic[T]):
    """A step the CLI's one signal (a KeyboardInterrupt raised in the main thread) interrupts
    the first time it runs, once it has done its work."""

    def __init__(self, step: Callable[[], T]) -> None:
        self.step, self.calls = step, 0

    def __call__(self) -> T:
        self.calls += 1
        result = self.step()
        if self.calls == 1:
            raise KeyboardInterrupt("SIGHUP")
        return result


def _copying(
    tmp_path: Path, remote: tuple[str, ...] | None = ("vm 42",)
) -> tuple[LocalTarget, Path, Path]:
    """A -o local run killed in its copy: the lock held, a partial temporary output, the
    resume state written: (target, temporary output, work directory)."""
    (tmp_path / "out").mkdir()
    workdir = make_workdir(tmp_path)
    vm = vm_with(NBD)
    target = LocalTarget(TargetOptions(storage=str(tmp_path / "out"), name="g"))
    target.check(vm)
    (output,) = target.setup(vm, [1 << 20])
    output.path.write_bytes(b"half a copy")
    caps = GuestCaps("virtio-blk", "virtio", "virtio", "q35", Firmware.BIOS, "x86_64")
    overlay = Overlay(workdir / "sda.qcow2", vm.disks[0].endpoint, "sda")
    state = resume.ResumeState(workdir, "key", vm, LINUX, caps, (overlay,), (output,), (), remote)
    resume.save(state)
    return target, output.path, workdir


def _next_run_accepts(tmp_path: Path) -> None:
    """The next run's check: refuses a temporary output neither a run nor a state claims."""
    LocalTarget(TargetOptions(storage=str(tmp_path / "out"), name="g")).check(vm_with(NBD))


def test_a_signal_while_the_lost_link_is_probed_keeps_the_copy(tmp_path: Path) -> None:
    """CI's intermittent p2v failure: the dropped link fails the copy, and sshd's SIGHUP comes
    while the source is asked whether it was lost. The copy is kept, claimed, resumable."""
    target, output, workdir = _copying(tmp_path)
    lost: _SignalIn[SourceError | None] = _SignalIn(lambda: None)
    failed = CopyError("sda: copying failed: Connection reset by peer")
    error = resume.settle(failed, workdir, target, lost, lambda: False)
    assert isinstance(error, resume.KeptForResume)
    assert output.read_bytes() == b"half a copy"
    assert [s.workdir for s in map(resume.load, resume.find(tmp_path, "key"))] == [workdir]
    _next_run_accepts(tmp_path)  # the kept output is claimed, the lock free


def test_a_signal_while_the_copy_is_kept_keeps_it_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, output, workdir = _copying(tmp_path)
    keep = _SignalIn(target.keep_for_resume)
    monkeypatch.setattr(target, "keep_for_resume", keep)
    error = resume.settle(KeyboardInterrupt("SIGTERM"), workdir, target, lambda: None, lambda: True)
    assert isinstance(error, resume.KeptForResume) and keep.calls == 2
    assert output.exists() and resume.find(tmp_path, "key") == [workdir]
    _next_run_accepts(tmp_path)


def test_a_signal_while_a_failed_copy_is_removed_removes_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that failed on its own (the source not lost, no signal yet) is removed; the
    signal coming in the middle does not leave half of it."""
    target, output, workdir = _copying(tmp_path)
    abort = _SignalIn(target.abort)
    monkeypatch.setattr(target, "abort", abort)
    failed = CopyError("sda: copying to the output failed: No space left on device")
    assert resume.settle(failed, workdir, target, lambda: None, lambda: False) is failed
    assert abort.calls == 2 and not output.exists()
    resume.forget(workdir)  # what the pipeline's finally does next
    _next_run_accepts(tmp_path)


def test_a_resume_interrupted_before_its_copy_keeps_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal while a resume reads the source or checks the target (before its copy starts
    again) leaves the state it took over as it found it: still resumable, its outputs claimed."""
    target, output, workdir = _copying(tmp_path, remote=None)
    target.keep_for_resume()  # as the interrupted run left it
    resumed = LocalTarget(TargetOptions(storage=str(tmp_path / "out"), name="g"))

    def signal(_vm: SourceVM) -> None:
        raise KeyboardInterrupt("SIGINT")

    monkeypatch.setattr(resumed, "check", signal)
    opts = RunOptions(workdir_parent=tmp_path, resume_key="key", resume=True)
    with pytest.raises(resume.KeptForResume):
        run_conversion(Remote(), resumed, opts, lambda _event: None)
    assert output.read_bytes() == b"half a copy"
    assert resume.find(tmp_path, "key") == [workdir]
    _next_run_accepts(tmp_path)
