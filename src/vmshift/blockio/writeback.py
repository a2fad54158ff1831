"""Early writeback of a copy's output, and dropping its pages once it is checked (copier.py).

qemu-img leaves everything it wrote dirty in the page cache; these start writing it back while
the copy goes on, so the fsync that ends a window does not write the whole window then.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

# How often, at most, the output's dirty pages are pushed to disk during the copy.
WRITEBACK_INTERVAL = 0.05
# <linux/fs.h>: start writeback of the range's dirty pages, do not wait for it.
SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _start_writeback() -> Callable[[int], object] | None:
    """sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) from the C library, if it has one."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return lambda fd: fn(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


def drop_pages(path: Path) -> None:
    """Let the kernel drop the file's (clean) pages: a verified output is not read again."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class EarlyWriteback:
    """Start writing the output back to disk while qemu-img still copies.

    qemu-img leaves everything it wrote dirty in the page cache, so the final fsync used to
    write the whole disk after the copy (docs/benchmarks.md). POSIX_FADV_DONTNEED starts
    writeback of dirty pages without waiting and drops the clean ones, so the copy and the
    flush overlap, as nbdcopy does with sync_file_range. A copy that is verified next keeps its
    pages for the compare: sync_file_range(SYNC_FILE_RANGE_WRITE) starts the same writeback and
    drops nothing.
    """

    def __init__(self, path: Path, *, keep_pages: bool = False) -> None:
        self.path = path
        self.fd: int | None = None
        self.last = 0.0
        self.start = _start_writeback() if keep_pages else None

    def poke(self) -> None:
        now = time.monotonic()
        if now - self.last < WRITEBACK_INTERVAL:
            return
        self.last = now
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return  # qemu-img has not created it yet
        if self.start is not None:
            self.start(self.fd)  # an error (-1) only means no early writeback, as below
            return
        with contextlib.suppress(OSError):
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
