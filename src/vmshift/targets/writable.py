"""Can this run create files in a target's directory? Asked by creating one.

os.access alone is fooled by read-only mounts (for root) and by ACLs, and says nothing of who
will own what is made there (an NFS export squashing root): a file made and removed is the
only honest answer, and the export domain target looks at the probe's owner before removing it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vmshift.errors import TargetError

PREFIX = ".vmshift-probe-"


@contextlib.contextmanager
def probe_file(directory: Path, where: str) -> Iterator[Path]:
    """An empty file made in directory, removed on leaving; TargetError "WHERE: cannot create
    files there: REASON" when it cannot be made."""
    try:
        fd, name = tempfile.mkstemp(prefix=PREFIX, dir=directory)
    except OSError as exc:
        raise TargetError(f"{where}: cannot create files there: {exc.strerror}") from exc
    os.close(fd)
    probe = Path(name)
    try:
        yield probe
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def check_writable(directory: Path, where: str) -> None:
    """TargetError unless files can be made in directory."""
    with probe_file(directory, where):
        pass
