"""SIGTERM, SIGHUP and SIGKILL in the middle of a conversion (the phony RHEL guest, -o local):
one line naming the signal and the stage, the right exit code, nothing left behind (outputs,
work directory, child processes), and what a killed run left removed by the next run."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.manifest import BuiltGuest
from tests.integration.convert_runs import start_convert, users_of, wait_for_stage

CASES = {
    "SIGTERM": (signal.SIGTERM, "convert", "interrupted by SIGTERM while converting linux guest"),
    # The appliance's start: the longest libguestfs call of a run (inspection of this guest
    # now takes less than the two seconds waited below).
    "SIGHUP": (
        signal.SIGHUP,
        "appliance",
        "interrupted by SIGHUP while starting the libguestfs appliance",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_signal_ends_the_run_cleanly(
    linux_guests: dict[str, BuiltGuest], outdir: Path, workdir: Path, case: str
) -> None:
    """Only vmshift gets the signal (as from `kill` or a closed terminal), not the appliance:
    vmshift stops its children itself, even with its main thread inside a libguestfs call."""
    signum, stage, said = CASES[case]
    guest = linux_guests["rhel"]
    before = sha256(guest.disks[0])
    proc = start_convert(guest.disks, outdir, workdir)
    wait_for_stage(proc, stage)
    time.sleep(2)  # inside the stage's work, not at its first line
    started = time.monotonic()
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert time.monotonic() - started < 60, "the signal waited for the stage to end"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("vmshift: interrupted")]
    assert len(lines) == 1 and lines[0].startswith(f"vmshift: {said}"), err
    assert "vmshift: error:" not in err, err
    assert list(outdir.iterdir()) == [] and list(workdir.iterdir()) == []
    assert users_of(workdir) == []
    assert sha256(guest.disks[0]) == before


def test_what_a_killed_run_left_is_removed_by_the_next(
    linux_guests: dict[str, BuiltGuest], outdir: Path, workdir: Path
) -> None:
    guest = linux_guests["rhel"]
    proc = start_convert(guest.disks, outdir, workdir)
    wait_for_stage(proc, "inspect")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    [left] = list(workdir.iterdir())  # SIGKILL cannot be cleaned up at once
    assert (left / "owner").read_text().split()[0] == str(proc.pid)
    deadline = time.monotonic() + 60
    while users_of(left) and time.monotonic() < deadline:
        time.sleep(1)  # the appliance notices its parent is gone and powers off
    # The next run (here one that fails at once on its output directory) removes it.
    nowhere = outdir / "absent"
    again = vmshift(["convert", "-i", "disk", *guest.disks, "-o", "local", "-os", nowhere,
                     "--workdir", workdir])  # fmt: skip
    assert again.returncode == 1, again.stderr
    assert f"removed {left}: the work directory of a run that was killed" in again.stderr
    assert list(workdir.iterdir()) == []
    assert Path(guest.disks[0]).exists()
