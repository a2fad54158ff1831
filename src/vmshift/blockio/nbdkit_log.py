"""What nbdkit's log filter recorded for a disk a source serves from a remote: the bytes its
plugin really fetched, and whether the reads ended in failure (the remote stopped answering).

The source puts `--filter=log` next to the plugin (after the retry filter), so each attempt is
one logged request: a read that failed and was retried counts once as failed, once as read.
The log's lines (nbdkit 1.32):

    connection=1 Read id=7 offset=0x10000 count=0x200 ...
    connection=1 ...Read id=7 return=0
    connection=1 ...Read id=8 return=-1 error=EIO
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_ASKED = re.compile(r"connection=(\d+) Read id=(\d+) offset=0x[0-9a-f]+ count=0x([0-9a-f]+) ")
_ANSWERED = re.compile(r"connection=(\d+) \.\.\.Read id=(\d+) return=(-?\d+)")


@dataclass(frozen=True)
class ReadLog:
    fetched: int = 0  # bytes of the reads that succeeded
    reads: int = 0
    failed: int = 0
    last_failed: bool = False  # the last answered read was an error

    def __add__(self, other: ReadLog) -> ReadLog:
        return ReadLog(
            self.fetched + other.fetched,
            self.reads + other.reads,
            self.failed + other.failed,
            self.last_failed or other.last_failed,
        )


def read_log(path: Path) -> ReadLog:
    """The reads in one log file; an absent file (nbdkit never started) is no reads."""
    pending: dict[tuple[str, str], int] = {}
    fetched = reads = failed = 0
    last_failed = False
    try:
        f = path.open(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ReadLog()
    with f:
        for line in f:
            if asked := _ASKED.search(line):
                pending[(asked[1], asked[2])] = int(asked[3], 16)
            elif answered := _ANSWERED.search(line):
                count = pending.pop((answered[1], answered[2]), 0)
                if answered[3] == "0":
                    fetched += count
                    reads += 1
                    last_failed = False
                else:
                    failed += 1
                    last_failed = True
    return ReadLog(fetched, reads, failed, last_failed)
