"""The read accounting of blockio/nbdkit_log.py, on logs written by a real nbdkit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vmshift.blockio.nbdkit_log import ReadLog, read_log

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit")

READER = """
import nbd, sys
h = nbd.NBD()
h.connect_unix(sys.argv[1])
for size, offset in ((65536, 0), (512, 4096), (4096, 1 << 20)):
    try:
        h.pread(size, offset)
    except nbd.Error:
        pass
h.shutdown()
"""


def _served(tmp_path: Path, *error: str) -> Path:
    """Three reads through nbdkit's log filter (and the error filter, given its settings)."""
    sock, logfile = tmp_path / "sock", tmp_path / "log"
    subprocess.run(
        ["nbdkit", "-U", str(sock), "--filter=log", *(["--filter=error"] if error else []),
         "memory", "4M", *error, f"logfile={logfile}",
         "--run", f"/usr/bin/python3 -c '{READER}' {sock}"],
        check=True, timeout=60,
    )  # fmt: skip
    return logfile


def test_successful_reads_are_counted(tmp_path: Path) -> None:
    assert read_log(_served(tmp_path)) == ReadLog(fetched=65536 + 512 + 4096, reads=3)


def test_failed_reads_are_counted_apart(tmp_path: Path) -> None:
    logfile = _served(tmp_path, "error-pread=EIO", "error-pread-rate=1")
    assert read_log(logfile) == ReadLog(fetched=0, reads=0, failed=3, last_failed=True)


def test_no_log_is_no_reads(tmp_path: Path) -> None:
    assert read_log(tmp_path / "absent") == ReadLog()
