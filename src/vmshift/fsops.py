"""Putting a finished output into place without ever replacing what is already there.

rename(2) replaces its target silently, so "check that the name is free, then rename" lets a
file another run (or the user) made in between be overwritten. rename_noreplace is atomic
instead: Linux's renameat2(RENAME_NOREPLACE) (glibc 2.28, Linux 3.15) fails with EEXIST if the
name is taken. Filesystems that do not know the flag (NFS, some FUSE ones: EINVAL) get an
equally atomic fallback:

    a file       link(2) to the final name, then unlink the temporary one: link fails with
                 EEXIST if the name is taken. Killed between the two, the file is under both
                 names; the temporary one is then a leftover for the next run to remove.
    a directory  mkdir(2) the final name (EEXIST if taken), then rename onto that empty
                 directory: rename replaces an empty directory only, so anything another
                 process put there in between makes it fail (ENOTEMPTY/EEXIST).

Only for outputs put into place; the work directory's private files need none of this.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable
from pathlib import Path

AT_FDCWD = -100
RENAME_NOREPLACE = 1

# Errors that say "this filesystem (or libc, or kernel) cannot do RENAME_NOREPLACE".
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)


def _load_renameat2() -> Callable[[str, str], None] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):  # no glibc 2.28 (musl, old systems)
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int

    def renameat2(src: str, dst: str) -> None:
        if func(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), src, None, dst)

    return renameat2


_renameat2 = _load_renameat2()


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename src (a file or a directory) to dst on the same filesystem; FileExistsError if dst
    exists, whatever it is (a dangling symlink too), and then src is left as it was."""
    if _renameat2 is not None:
        try:
            _renameat2(str(src), str(dst))
            return
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
            if exc.errno not in _UNSUPPORTED:
                raise
    if src.is_dir() and not src.is_symlink():
        _move_directory(src, dst)
    else:
        _move_file(src, dst)


def _move_file(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        # NFS may answer a retransmitted LINK that did succeed with EEXIST: is dst now src?
        if not _same_file(src, dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
    src.unlink()


def _move_directory(src: Path, dst: Path) -> None:
    dst.mkdir(0o700)  # FileExistsError if taken; replaced at once by src below
    try:
        src.rename(dst)
    except OSError as exc:
        with contextlib.suppress(OSError):
            dst.rmdir()  # only if it is still our empty placeholder
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        raise


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = a.lstat(), b.lstat()
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
