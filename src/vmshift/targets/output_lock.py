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

A run killed inside finalize() may have put some outputs into place already (NAME-sda but not
NAME.xml; for -o libvirt a volume and maybe the domain; for -o rhv image directories but not
the VM's). So before its first rename, finalize() records in its lock, after the stamp, what it
is about to make (`record_finals`, one call in each target), fsync'ed:

    1234 98765 BOOT_ID pid:[4026531836] host              the owner stamp (line 1)
    {"file": "NAME-sda", "inode": 131075}                 a file renamed into place
    {"dir": "images/IMAGE_UUID", "inode": 131090}         a directory renamed into place (-o rhv)
    {"domain": "NAME", "uuid": "UUID", "uri": "qemu:///system"}   a guest defined (-o libvirt)
    {"end": 3}                                            the record is complete

Paths are relative to the lock's directory (an RHV export domain is mounted elsewhere by each
run); an inode is that of the temporary that the rename gives the final name. A successful run
unlinks its lock, record and all. A dead run's complete record is a run that never finished:
the sweep removes what it names first (the last one first), one line each ("... that was
killed while finishing"), but only what is provably that run's: a regular file, or a directory,
with the recorded inode, reached through real directories (no symlinks followed), or an empty
directory (fsops' fallback had just made it); a domain only through the target (undefine), which
removes it only if it has the recorded UUID on this run's URI and is not running. Anything
else under a recorded name is left for the target's check to refuse as existing. A record with
no "end" line was cut short before any rename: ignored. "alive" and "unknown" owners are refused
before any of this.

A temporary disk kept for a resume (an interrupted copy, resume.py) is claimed by a file next to
it, `.NAME-sda.tmp.vmshift-resume`, naming the resume state in the run's work directory: while
that state exists, neither the sweep nor the leftover check touches the disk. A claim whose
state is gone is a leftover like the disk it claimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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
    files (local.write_temporary's), and the dirs as they are."""
    parts = [rf"\.{re.escape(name)}-sd[a-z]+\.tmp"]
    parts += [rf"\.{re.escape(f)}\.[a-z0-9_]{{8}}\.tmp" for f in files]
    parts += [re.escape(d) for d in dirs]
    return "|".join(parts)


@dataclass(frozen=True)
class Final:
    """One entry of a finishing run's record: a "file" or "dir" (name: its path relative to the
    lock's directory; inode: its temporary's), or a libvirt "domain" (name, uuid, uri)."""

    kind: str
    name: str
    inode: int = 0
    uuid: str = ""
    uri: str = ""


# Undefines a dead run's domain (name, uuid, uri) if it is provably that run's; True if it did.
Undefine = Callable[[str, str, str], bool]


class OutputLock:
    """The lock on one output name in directory; where names the output in messages; undefine
    is the target's way of removing a domain a dead run recorded (-o libvirt)."""

    def __init__(
        self,
        directory: Path,
        name: str,
        temporaries: str,
        where: str = "",
        undefine: Undefine | None = None,
    ) -> None:
        self.directory = directory
        self.path = directory / f".{name}{SUFFIX}"
        self._temporaries = re.compile(temporaries)
        self._where = where or str(directory / name)
        self._undefine = undefine
        self._fd: int | None = None
        self._stamp_size = 0
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
                stamp = Owner.this_process().stamp().encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, stamp, 0)
                self._stamp_size = len(stamp)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return
        raise TargetError(f"{self.path}: the lock keeps changing hands; try again")

    def record_finals(
        self, moves: Sequence[tuple[Path, Path]], domain: tuple[str, str, str] | None = None
    ) -> None:
        """finalize() is about to rename each (temporary, final) of moves into place, in this
        order, and then to define domain (name, uuid, uri): say so in the lock, durably, before
        the first rename, for the next run to undo if this one is killed before it finishes."""
        if self._fd is None:
            raise TargetError(f"{self.path}: finalize() without the lock (check() not called)")
        lines: list[dict[str, object]] = []
        for temporary, final in moves:
            try:
                st = temporary.lstat()
            except OSError as exc:
                raise TargetError(f"{temporary}: cannot put into place: {exc.strerror}") from exc
            kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
            lines.append({kind: final.relative_to(self.directory).as_posix(), "inode": st.st_ino})
        if domain is not None:
            name, uuid, uri = domain
            lines.append({"domain": name, "uuid": uuid, "uri": uri})
        lines.append({"end": len(lines)})
        text = "".join(json.dumps(line) + "\n" for line in lines).encode()
        try:
            os.ftruncate(self._fd, self._stamp_size)  # the stamp stays whatever happens
            os.pwrite(self._fd, text, self._stamp_size)
            os.fsync(self._fd)
        except OSError as exc:
            raise TargetError(f"{self.path}: cannot write: {exc.strerror}") from exc

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
                text = _read(fd).partition("\n")[0]
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
            owner = Owner.parse(previous.partition("\n")[0])
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
        for final in reversed(self._record(previous)):  # what looks complete goes first
            self._remove_final(final, owner.pid)
        for path in self._leftovers():
            self._remove(path, owner.pid)
        # acquire() unlinks the lock itself: it holds it
        self.swept.append(f"removed {self.path}: left by run {owner.pid} that was killed")

    def _record(self, text: str) -> list[Final]:
        """The finals a complete record after the stamp names; [] if there is none (or it was
        cut short: then no rename had started)."""
        lines = [line for line in text.splitlines()[1:] if line.strip()]
        try:
            end = json.loads(lines[-1]) if lines else None
        except ValueError:
            return []
        if not isinstance(end, dict) or end.get("end") != len(lines) - 1:
            return []
        try:
            return [_final(json.loads(line)) for line in lines[:-1]]
        except (ValueError, KeyError, TypeError):
            raise TargetError(
                f"{self.path}: not a lock vmshift can read (its record of final outputs)",
                hint="if no vmshift is converting to this name, remove it and the outputs "
                "of that name by hand",
            ) from None

    def _remove(self, path: Path, pid: int, when: str = "") -> None:
        """Remove path that run pid left (a directory with all it holds, never through a
        symlink), saying so."""
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise TargetError(
                f"{path}: cannot remove what run {pid} left: {exc.strerror}",
                hint="remove it by hand",
            ) from exc
        self.swept.append(f"removed {path}: left by run {pid} that was killed{when}")

    def _remove_final(self, final: Final, pid: int) -> None:
        if final.kind == "domain":
            if self._undefine is None:
                raise TargetError(
                    f"{self.path}: run {pid} was killed while defining guest {final.name} on "
                    f"{final.uri}",
                    hint=f"undefine that guest if it is half made, then remove {self.path}",
                )
            if self._undefine(final.name, final.uuid, final.uri):
                self.swept.append(
                    f"removed guest {final.name} from {final.uri}: left by run {pid} that was "
                    "killed while finishing"
                )
            return
        path = self._inside(PurePosixPath(final.name))
        if path is not None and _made(path, final):
            self._remove(path, pid, " while finishing")
        # else not what that run made (or not there): the target's check refuses it if there

    def _inside(self, name: PurePosixPath) -> Path | None:
        """directory/name if every directory on the way is a real one (no symlink), else
        None."""
        path = self.directory
        for part in name.parts[:-1]:
            path = path / part
            try:
                if not stat.S_ISDIR(path.lstat().st_mode):
                    return None
            except OSError:
                return None
        return path / name.name

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


def _final(item: object) -> Final:
    """An entry of a record, checked: a path that stays inside the lock's directory."""
    if not isinstance(item, dict):
        raise TypeError("not an object")
    if "domain" in item:
        name, uuid, uri = item["domain"], item["uuid"], item["uri"]
        if not all(isinstance(f, str) and f for f in (name, uuid, uri)):
            raise ValueError("a domain needs a name, a uuid and a uri")
        return Final("domain", name, uuid=uuid, uri=uri)
    (kind,) = {"file", "dir"} & item.keys()
    name, inode = item[kind], item["inode"]
    if not isinstance(name, str) or not isinstance(inode, int):
        raise TypeError("a path and an inode")
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or path.name in ("", "."):
        raise ValueError(f"{name!r}: not a path inside the lock's directory")
    return Final(kind, name, inode)


def _made(path: Path, final: Final) -> bool:
    """path is what the run that recorded final put there: the same kind, the same inode (or an
    empty directory: fsops' fallback had made the name, not yet renamed onto it)."""
    try:
        st = path.lstat()
        if final.kind == "file":
            return stat.S_ISREG(st.st_mode) and st.st_ino == final.inode
        return stat.S_ISDIR(st.st_mode) and (st.st_ino == final.inode or not any(path.iterdir()))
    except OSError:
        return False


def _read(fd: int) -> str:
    """The lock's content: the stamp, and a finishing run's record (a few lines per output)."""
    return os.pread(fd, 1 << 20, 0).decode(errors="replace")


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)
