"""`--root ask` (virt-v2v's default) on disks holding two operating systems: without a terminal
it fails at once naming both, never reading stdin; on a terminal it lists them and converts the
one the user types."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.guests.manifest import BuiltGuest

pytestmark = pytest.mark.slow

EXE = Path(sys.executable).parent / "vmshift"


@pytest.fixture(scope="module")
def two_oses(linux_guests: dict[str, BuiltGuest]) -> list[Path]:
    # Debian's disk first: its fstab names /dev/sda1.
    return [*linux_guests["debian"].disks, *linux_guests["rhel"].disks]


def test_without_a_terminal_the_roots_are_named(
    two_oses: list[Path], linux_guests: dict[str, BuiltGuest]
) -> None:
    argv = [str(EXE), "convert", "-i", "disk", *map(str, two_oses), "-o", "null", "--root", "ask"]
    # An answer waits on stdin: a run that read it would convert instead of failing.
    proc = subprocess.run(
        argv, input="1\n", capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1, proc.stderr
    products = [re.escape(linux_guests[name].oses[0].product_name) for name in ("debian", "rhel")]
    listed = rf"/dev/sd\S+ \({products[0]}\), /dev/sd\S+ \({products[1]}\)$"
    assert re.search(f"several operating systems: {listed}", errors[0]), errors[0]
    assert "vmshift: hint: there is no terminal to ask on" in proc.stderr
    assert "Traceback" not in proc.stderr


def _run_on_a_terminal(argv: list[str], answer: str, timeout: float) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as stdin; type answer once the prompt shows."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True
    )
    os.close(slave)
    assert proc.stdout is not None and proc.stderr is not None
    seen = b""
    answered = False
    deadline = time.monotonic() + timeout
    fds = [proc.stdout.fileno(), proc.stderr.fileno(), master]
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select(fds, [], [], 1.0)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                fds.remove(fd)
                continue
            seen += data
        if not answered and b"Number (1-2): " in seen:
            os.write(master, answer.encode() + b"\n")
            answered = True
    if proc.poll() is None:
        proc.kill()
    rest_out, rest_err = proc.communicate(timeout=30)
    os.close(master)
    return proc.returncode, (seen + rest_out + rest_err).decode(errors="replace")


def test_on_a_terminal_the_chosen_root_is_converted(
    two_oses: list[Path], linux_guests: dict[str, BuiltGuest], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    argv = [str(EXE), "convert", "-i", "disk", *map(str, two_oses), "-o", "null",
            "--report", str(report)]  # fmt: skip
    rc, output = _run_on_a_terminal(argv, "2", timeout=900)
    assert rc == 0, output
    assert "1. /dev/sd" in output and "2. /dev/sd" in output
    chosen = json.loads(report.read_text())["os"]
    assert chosen["product_name"] == linux_guests["rhel"].oses[0].product_name
