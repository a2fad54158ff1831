"""A run's private work directory, and finding those of runs that died.

Each run works in a `vmshift-XXXXXXXX` directory (its overlays, nbdkit's sockets and logs,
rewritten descriptors), removed when the run ends, however it ends, except by SIGKILL or a
machine that went down. So the directory holds an `owner` file naming the process and its
start time (a process number alone could be reused), and each run first removes the
directories whose owner is gone, saying so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from vmshift.process import proc_stat

log = logging.getLogger(__name__)

PREFIX = "vmshift-"
OWNER = "owner"


def make_workdir(parent: Path | None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    (workdir / OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return workdir


def sweep_dead_runs(parent: Path | None) -> list[Path]:
    """Remove the work directories under parent (default: the temporary directory) whose
    owner process is gone; return them. Directories without an owner file are left alone."""
    base = parent if parent is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    for workdir in sorted(base.glob(f"{PREFIX}*")):
        if workdir.is_symlink():  # a short way to a work directory (sources/nbdkit.py)
            if not workdir.exists():  # its run died, and its directory is gone
                with contextlib.suppress(OSError):  # (another user's link in /tmp)
                    workdir.unlink()
            continue
        try:
            if workdir.stat().st_uid != os.getuid():
                continue  # another user's run
            pid, started = (workdir / OWNER).read_text().split()
            if _start_time(int(pid)) == started:
                continue  # its run is still going
        except (OSError, ValueError):
            continue  # not ours to judge: no owner file, or one we cannot read
        shutil.rmtree(workdir, ignore_errors=True)
        if workdir.exists():
            log.warning("could not remove %s, left by run %s that died", workdir, pid)
            continue
        log.info("removed %s, left by run %s that died", workdir, pid)
        removed.append(workdir)
    return removed


def _start_time(pid: int) -> str:
    """When process pid started (clock ticks since boot), or "" if there is no such process."""
    fields = proc_stat(pid)
    return fields[19] if fields else ""
