"""What makes a copy resumable (resume.facts), what the resume key covers, and the last lines of
a run whose remote source was lost in the copy (the state kept for --resume)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vmshift import resume
from vmshift.cli import convert_cmd, main
from vmshift.cli.resume_key import resume_key
from vmshift.cli.signals import GUARD
from vmshift.errors import SourceError
from vmshift.model.vm import DiskEndpoint, Firmware, SourceDisk, SourceVM
from vmshift.targets.base import TargetOptions
from vmshift.targets.libvirt import LibvirtTarget


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
