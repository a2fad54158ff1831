"""Guests that must not be converted as they are, through the real command line: a dirty
filesystem, a /boot too full to rebuild an initramfs in, a LUKS volume without its key or with
a wrong one, a work directory too small for the overlays. Each is one `vmshift: error:` line
naming what is at fault, a non-zero exit, nothing written to the output directory and the
source byte for byte as it was. And a LUKS guest converts once its key is given.

The guests: tests/guests/safety_guests.py (built once, cached). One appliance launch per run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.safety_guests import PASSPHRASE, SafetyGuests
from tests.integration.convert_runs import convert_argv

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def guests() -> SafetyGuests:
    from tests.guests.safety_guests import build_safety_guests

    return build_safety_guests()


def refused(
    command: Sequence[str | os.PathLike[str]],
    source: Path,
    outdir: Path | None = None,
    stdin: str = "",
) -> tuple[int, str]:
    """Run vmshift; check it failed in one error line and left everything as it was. Its
    standard input is never a terminal: a LUKS volume without a key is not asked for."""
    before = sha256(source)
    proc = vmshift(command, stdin=stdin)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1, proc.stderr
    assert not any(line.startswith("vmshift:") for line in proc.stdout.splitlines()), proc.stdout
    if outdir is not None:
        assert list(outdir.iterdir()) == [], "the output directory was written to"
    assert sha256(source) == before, "the source changed"
    return proc.returncode, errors[0]


@slow
def test_dirty_filesystems_are_refused_naming_each(
    guests: SafetyGuests, outdir: Path, workdir: Path
) -> None:
    rc, error = refused(convert_argv([guests.dirty], outdir, workdir), guests.dirty, outdir)
    assert rc == 1
    # /boot's damage only a full e2fsck -n sees; /'s the superblock records.
    assert "/dev/sda1 (ext4, the guest's /boot): the filesystem has errors (e2fsck -n: " in error
    assert "Block bitmap differences" in error
    assert (
        "/dev/sda2 (ext4, the guest's /): the filesystem has errors (superblock state "
        "'clean with errors', 2 errors recorded)" in error
    )
    assert list(workdir.iterdir()) == []


@slow
def test_a_full_boot_is_refused_with_the_figures(
    guests: SafetyGuests, outdir: Path, workdir: Path
) -> None:
    rc, error = refused(convert_argv([guests.smallboot], outdir, workdir), guests.smallboot, outdir)
    assert rc == 1
    match = re.fullmatch(
        r"vmshift: error: the guest's /boot \(/dev/sda1\) has (\d+\.\d) MiB free; converting "
        r"it needs 50 MiB \(the initramfs is rebuilt there\)",
        error,
    )
    assert match is not None, error
    assert 20 < float(match.group(1)) < 40  # a 40 MiB filesystem with a kernel in it


@slow
def test_luks_without_a_key_is_refused_naming_the_volume(
    guests: SafetyGuests, outdir: Path, workdir: Path
) -> None:
    rc, error = refused(convert_argv([guests.luks], outdir, workdir), guests.luks, outdir)
    assert rc == 2
    assert error == (
        f"vmshift: error: /dev/sda2 (on {guests.luks}, UUID {guests.luks_uuid}) is "
        "LUKS-encrypted and no key was given for it"
    )


@slow
def test_a_wrong_key_from_stdin_is_refused_naming_the_volume(guests: SafetyGuests) -> None:
    rc, error = refused(
        ["inspect", "--keys-from-stdin", guests.luks], guests.luks, stdin="not the passphrase\n"
    )
    assert rc == 2
    assert error == (
        f"vmshift: error: /dev/sda2 (on {guests.luks}, UUID {guests.luks_uuid}): the key given "
        "does not open this LUKS volume"
    )


@slow
def test_a_luks_guest_converts_with_its_key(
    guests: SafetyGuests, outdir: Path, workdir: Path, tmp_path: Path
) -> None:
    keyfile = tmp_path / "passphrase"
    keyfile.write_text(PASSPHRASE + "\n")
    report = tmp_path / "report.json"
    before = sha256(guests.luks)
    # Keys are tried in turn: a wrong one for every volume, then the right one by UUID.
    proc = vmshift(
        convert_argv(
            [guests.luks],
            outdir,
            workdir,
            "--key",
            "all:key:wrong",
            "--key",
            f"{guests.luks_uuid}:file:{keyfile}",
            "--report",
            report,
        )
    )
    assert proc.returncode == 0, proc.stderr
    assert PASSPHRASE not in proc.stdout + proc.stderr
    doc = json.loads(report.read_text())
    assert doc["os"]["root"] == f"/dev/mapper/luks-{guests.luks_uuid}"
    # crypttab names the LUKS volume by its old device: renamed for virtio like fstab.
    assert {
        "step": "devices",
        "what": "device names changed (sda -> vda)",
        "path": "/etc/crypttab",
    } in doc["changes"]
    assert (outdir / "safety-luks-sda").exists()
    assert sha256(guests.luks) == before


def test_a_small_work_directory_is_refused_before_anything_starts(
    tmp_path: Path, outdir: Path, small_tmpfs: Path
) -> None:
    disk = tmp_path / "guest.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    rc, error = refused(convert_argv([disk], outdir, small_tmpfs), disk, outdir)
    assert rc == 1
    assert error == (
        f"vmshift: error: {small_tmpfs}: not enough free space for the work directory: 16 MiB "
        "free, 1024 MiB needed (the overlays of the guest's disks)"
    )
    assert list(small_tmpfs.iterdir()) == []
