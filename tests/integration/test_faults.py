"""Faults injected around a conversion of the phony RHEL guest: a slow source whose reads start
failing (nbdkit's delay and error filters, shown to vmshift as an ordinary disk file by
nbdfuse), a target that fills up, and two runs racing for one output name. Each ends with one
clear line, nothing left that looks complete, and the source byte-identical. (Interruptions
during the copy, which keep what --resume needs, are test_resume.py's.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.manifest import BuiltGuest
from tests.integration.convert_runs import start_convert, wait_for_stage
from vmshift.blockio.copier import CopyJob, copy_disks
from vmshift.blockio.overlay import create_overlay
from vmshift.blockio.progress import discard
from vmshift.errors import CopyError
from vmshift.model.vm import DiskEndpoint

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def failing_disk(disk: Path, tmp: Path) -> Iterator[tuple[Path, Path]]:
    """disk served read-only by nbdkit and shown as a file by nbdfuse; every read answers
    late, as a far datastore's do (nbdkit's delay filter, 2 ms), and fails while the returned
    trigger file exists (nbdkit's error filter)."""
    if shutil.which("nbdfuse") is None or not Path("/dev/fuse").exists():
        pytest.skip("nbdfuse or /dev/fuse is missing")
    mnt = tmp / "mnt"
    mnt.mkdir()
    trigger = tmp / "fail-reads"
    shown = mnt / disk.name
    argv = ["nbdfuse", "-r", str(shown), "[", "nbdkit", "-r", "--filter=error",
            "--filter=delay", "file", str(disk), "delay-read=2ms", "error-rate=100%",
            f"error-file={trigger}", "]"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not shown.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "nbdfuse did not show the disk"
            time.sleep(0.1)
        yield shown, trigger
    finally:
        unmount = subprocess.run(["fusermount3", "-u", str(mnt)], check=False, capture_output=True)
        if unmount.returncode != 0:
            # Still busy (a process left reading it): detach it, so nothing stays mounted.
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False, capture_output=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("vmshift: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("stage", ["inspect", "convert"])
def test_a_source_whose_reads_fail_ends_the_run_cleanly(
    stage: str, linux_guests: dict[str, BuiltGuest], tmp_path: Path, outdir: Path, workdir: Path
) -> None:
    """Reads that fail from inspection on, or once the guest's tools run (a filesystem check
    or grub2-mkconfig hits them then): either way the disk is named, not the tool."""
    guest = linux_guests["rhel"]
    disk = Path(guest.disks[0])
    before = sha256(disk)
    with failing_disk(disk, tmp_path) as (shown, trigger):
        proc = start_convert([shown], outdir, workdir)
        wait_for_stage(proc, stage)
        trigger.touch()  # from here on every read of the source fails
        try:
            _out, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            # Ended here, not by the fixture: a run still reading the disk keeps nbdfuse's
            # mount busy, and the unmount would fail, leaving a dead FUSE mount behind.
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 1, err
    # Not "no operating system found": the disk could not be read, and the line says which.
    line = _one_error_line(err)
    assert line.startswith(f"vmshift: error: {shown}: "), line
    assert "I/O error at sector " in line and "the source disk cannot be read" in line, line
    assert list(outdir.iterdir()) == [] and list(workdir.iterdir()) == []
    assert sha256(disk) == before


def test_two_runs_racing_for_one_name(
    linux_guests: dict[str, BuiltGuest], outdir: Path, workdir: Path
) -> None:
    """The second run fails at once, naming the first, and touches none of its files. (That a
    finished guest's name is refused too is test_output_locks.py's, without an appliance.)"""
    guest = linux_guests["rhel"]
    disk = Path(guest.disks[0])
    first = start_convert([disk], outdir, workdir, "-on", "race")
    wait_for_stage(first, "appliance")  # past the target's check: it holds the name
    second = vmshift(["convert", "-i", "disk", disk, "-o", "local", "-os", outdir,
                      "--workdir", workdir, "-on", "race"])  # fmt: skip
    line = _one_error_line(second.stderr)
    assert second.returncode == 1
    assert f"another vmshift run (pid {first.pid}) is converting to this name" in line, line
    assert first.poll() is None, "the refused run disturbed the first"
    # The first run ends (a signal, before its copy): it cleans up its own name only.
    first.send_signal(signal.SIGTERM)
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert list(outdir.iterdir()) == [] and list(workdir.iterdir()) == []


def test_a_target_that_fills_up_during_the_copy(tmp_path: Path, small_tmpfs: Path) -> None:
    """ENOSPC in the middle of the copy (the free-space check passed, then something else
    filled the filesystem): the copy fails naming the disk, and no output is left."""
    source = tmp_path / "data.raw"
    with source.open("wb") as f:
        f.write(os.urandom(24 << 20))  # more than the 16 MiB filesystem holds
    overlay = create_overlay(DiskEndpoint(str(source), "raw", 24 << 20), tmp_path, "sda")
    output = small_tmpfs / ".full-sda.tmp"
    with pytest.raises(CopyError) as failed:
        copy_disks([CopyJob(overlay, output, "raw", False, "full-sda")], discard)
    assert "full-sda" in str(failed.value)
    assert "No space left on device" in str(failed.value)
    assert list(small_tmpfs.iterdir()) == []
