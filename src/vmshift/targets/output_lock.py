"""One run per output name: the lock a target takes in check() and drops in finalize() or abort().

    DIR/.NAME.vmshift-lock    next to the outputs: -o local and -o qemu in -os DIR, -o libvirt
                              in a directory pool's directory, -o rhv in the export domain's
                              <SD_UUID>/ directory

The lock is a file held with flock(2) from check() to the end of the run, holding the run's
owner stamp (process.Owner: pid, start time, boot, host). The kernel drops a flock when its
process dies, however it dies, so taking the lock tells a live run from a dead one exactly:

- refused: another run is converting to this name; refused in one line naming its pid.
- granted, and the file holds a stamp: the run that wrote it died without cleaning up (kill -9,
  a crash, a power cut). Its temporary outputs for this name (the target's pattern: .NAME-sda.tmp
  disks, XML and script temporaries, an RHV staging directory) and its lock are removed, and
  `swept` says so, one line each, for the pipeline to show before the slow work starts.
- granted, the file new: temporary outputs of this name with no lock behind them (an older
  vmshift's, or someone's by hand) are not ours to judge: refused, naming the first.

The stamp guards where flock cannot: a stamp naming a live process of this host, or a process
of another host or pid namespace (flock on an NFS mount with `nolock` is local to each client),
is refused, never swept. Final files are checked by the target while it holds the lock, and put
into place with fsops.rename_noreplace: a name taken meanwhile is never replaced. The lock file
is close-on-exec, so helpers such as qemu-img never hold it for a run that died.

A temporary disk kept for a resume (an interrupted copy, resume.py) is claimed by a file next to
it, `.NAME-sda.tmp.vmshift-resume`, naming the resume state in the run's work directory: while
that state exists, neither the sweep nor the leftover check touches the disk. A claim whose
state is gone is a leftover like the disk it claimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from vmshift.errors import TargetError
from vmshift.process import Owner

SUFFIX = ".vmshift-lock"
CLAIM_SUFFIX = ".vmshift-resume"
_ATTEMPTS = 10  # the lock changing hands under us this often is someone else's loop


def claim(temporary: Path, state: Path) -> Path:
    """Mark temporary as kept for the resume state file state; return the claim's path."""
    path = temporary.with_name(temporary.name + CLAIM_SUFFIX)
    path.write_text(f"{state}\n")
    return path


def claimed(temporary: Path) -> bool:
    """A claim next to temporary names a resume state that exists."""
    try:
        state = temporary.with_name(temporary.name + CLAIM_SUFFIX).read_text().strip()
    except OSError:
        return False
    return bool(state) and Path(state).is_file()


def temporary_names(name: str, files: Sequence[str] = (), dirs: Sequence[str] = ()) -> str:
    """A regular expression of the hidden names a run converting to name writes before its
    finalize renames them: .NAME-sdX.tmp disks (the copier's), .FILE.XXXXXXXX.tmp for each of
    files (write_file_atomically's), and the dirs as they are."""
    parts = [rf"\.{re.escape(name)}-sd[a-z]+\.tmp"]
    parts += [rf"\.{re.escape(f)}\.[a-z0-9_]{{8}}\.tmp" for f in files]
    parts += [re.escape(d) for d in dirs]
    return "|".join(parts)


class OutputLock:
    """The lock on one output name in directory; where names the output in messages."""

    def __init__(self, directory: Path, name: str, temporaries: str, where: str = "") -> None:
        self.directory = directory
        self.path = directory / f".{name}{SUFFIX}"
        self._temporaries = re.compile(temporaries)
        self._where = where or str(directory / name)
        self._fd: int | None = None
        self.swept: list[str] = []  # what a dead run left and acquire() removed, one line each

    def acquire(self) -> None:
        """Take the lock, first removing what a dead run left; TargetError if another run has
        it, or if leftovers are not provably a dead run's."""
        if self._fd is not None:
            return
        for _ in range(_ATTEMPTS):
            fd = self._open_locked()
            try:
                previous = _read(fd)
                if previous.strip():
                    self._sweep(previous)  # then unlinks the dead run's lock: open a new one
                    self._unlink_if(fd)
                    os.close(fd)
                    continue
                self._refuse_leftovers(fd)
                os.ftruncate(fd, 0)
                os.pwrite(fd, Owner.this_process().stamp().encode(), 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return
        raise TargetError(f"{self.path}: the lock keeps changing hands; try again")

    def release(self) -> None:
        """Remove the lock: at the end of finalize, and in abort."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            self._unlink_if(fd)  # before close: a run waiting on this file then finds it gone
        finally:
            os.close(fd)

    def _open_locked(self) -> int:
        for _ in range(_ATTEMPTS):
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                raise TargetError(f"{self.path}: cannot create the lock: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = _read(fd)
                os.close(fd)
                raise self._busy(text) from None
            except OSError as exc:
                os.close(fd)
                raise TargetError(
                    f"{self.path}: cannot lock: {exc.strerror}",
                    hint="on NFS the server's lock manager must answer (or mount with -o nolock "
                    "if only this host writes there)",
                ) from exc
            if _same_file(fd, self.path):
                return fd
            os.close(fd)  # the run that held it removed it meanwhile: take the new one
        raise TargetError(f"{self.path}: the lock keeps changing hands; try again")

    def _busy(self, text: str) -> TargetError:
        try:
            owner: Owner | None = Owner.parse(text)
        except ValueError:
            owner = None  # being written right now
        if owner is not None and owner.state() == "dead":
            owner = None  # a dead run's stamp, being taken over by a live one right now
        who = f" ({owner})" if owner is not None else ""
        return TargetError(f"{self._where}: another vmshift run{who} is converting to this name")

    def _sweep(self, previous: str) -> None:
        """The lock was free but holds a stamp: judge its owner, remove what a dead one left."""
        try:
            owner = Owner.parse(previous)
        except ValueError:
            raise TargetError(
                f"{self.path}: not a lock vmshift can read",
                hint="if no vmshift is converting to this name, remove it",
            ) from None
        state = owner.state()
        if state == "alive":  # flock did not reach it: a filesystem with per-client locks
            raise TargetError(
                f"{self._where}: another vmshift run ({owner}) is converting to this name"
            )
        if state == "unknown":
            raise TargetError(
                f"{self._where}: another vmshift run ({owner}) may be converting to this name",
                hint=f"if it is not running any more, remove {self.path}",
            )
        for path in self._leftovers():
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise TargetError(
                    f"{path}: cannot remove what run {owner.pid} left: {exc.strerror}",
                    hint="remove it by hand",
                ) from exc
            self.swept.append(f"removed {path}: left by run {owner.pid} that was killed")
        # acquire() unlinks the lock itself: it holds it
        self.swept.append(f"removed {self.path}: left by run {owner.pid} that was killed")

    def _refuse_leftovers(self, fd: int) -> None:
        left = self._leftovers()
        if left:
            self._unlink_if(fd)
            raise TargetError(
                f"{left[0]}: a temporary output with no vmshift run behind it "
                "(an older vmshift's that was killed?)",
                hint="if no vmshift is converting to this name, remove it",
            )

    def _leftovers(self) -> list[Path]:
        try:
            entries = list(self.directory.iterdir())
        except OSError as exc:
            raise TargetError(f"{self.directory}: cannot list: {exc.strerror}") from exc
        left = []
        for path in entries:
            name = path.name.removesuffix(CLAIM_SUFFIX)
            if self._temporaries.fullmatch(name) and not claimed(path.with_name(name)):
                left.append(path)  # a temporary, or the claim of one, no resume state wants
        return sorted(left)

    def _unlink_if(self, fd: int) -> None:
        """Unlink the lock's name if it is still the file fd holds."""
        if _same_file(fd, self.path):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace")


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)
