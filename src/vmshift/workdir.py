"""A run's private work directory, and finding those of runs that died.

Each run works in a `vmshift-XXXXXXXX` directory (its overlays, nbdkit's sockets and logs,
rewritten descriptors), removed when the run ends, however it ends, except by SIGKILL or a
machine that went down. So the directory holds an `owner` file naming the process and its
start time (a process number alone could be reused; process.Owner, the stamp output locks use
too), and each run first removes the directories whose owner is gone, saying so. A directory
holding a resume state (resume.py: a copy interrupted for a later --resume) is not garbage:
the sweep leaves it to the next run of the same conversion, which resumes or discards it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from vmshift.process import Owner

log = logging.getLogger(__name__)

PREFIX = "vmshift-"
OWNER = "owner"
RESUMABLE = "resume.json"  # resume.py's state: the directory is kept for a --resume


def make_workdir(parent: Path | None, prefix: str = PREFIX) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (workdir / OWNER).write_text(Owner.this_process().stamp())
    return workdir


def sweep_dead_runs(parent: Path | None, prefix: str = PREFIX) -> list[Path]:
    """Remove the work directories under parent (default: the temporary directory) whose
    owner process is gone; return them. Directories without an owner file are left alone, and
    so are those of another host or pid namespace."""
    base = parent if parent is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    for workdir in sorted(base.glob(f"{prefix}*")):
        if workdir.is_symlink():  # a short way to a work directory (sources/nbdkit.py)
            if not workdir.exists():  # its run died, and its directory is gone
                with contextlib.suppress(OSError):  # (another user's link in /tmp)
                    workdir.unlink()
            continue
        try:
            if workdir.stat().st_uid != os.getuid():
                continue  # another user's run
            owner = Owner.parse((workdir / OWNER).read_text())
            if owner.state() != "dead":
                continue  # its run is still going, or not ours to judge
            if (workdir / RESUMABLE).exists():
                continue  # kept for a --resume of its conversion
        except (OSError, ValueError):
            continue  # not ours to judge: no owner file, or one we cannot read
        shutil.rmtree(workdir, ignore_errors=True)
        if workdir.exists():
            log.warning("could not remove %s, left by run %d that died", workdir, owner.pid)
            continue
        log.info("removed %s, left by run %d that died", workdir, owner.pid)
        removed.append(workdir)
    return removed
