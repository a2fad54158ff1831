"""What an interrupted copy keeps for `vmshift convert --resume`, and finding it again.

When the copy starts, the pipeline writes a resume state into the run's work directory:

    WORKDIR/resume.json     the conversion's key, the overlays, the outputs, the source files
                            (size, mtime) the overlays are backed by; written last, atomically:
                            it is what makes the directory resumable
    WORKDIR/resume.pickle   the SourceVM, OperatingSystem and GuestCaps the target's finalize
                            needs (the conversion is not run again)
    WORKDIR/copy.journal    the windows copied and made durable (blockio/windows.py)
    OUTDIR/.NAME-sda.tmp.vmshift-resume   next to each temporary output: the claim that keeps
                            the output lock's sweep off it (targets/output_lock.py)

It is written before the first byte is copied, so a run killed with SIGKILL during the copy
leaves it too. A run interrupted by a signal keeps it (the work directory and the temporary
outputs stay), and so does a run whose remote source stopped answering during the copy
(KeptSourceError); any other end of the run removes it with the work directory.
sweep_dead_runs leaves resumable directories alone. The next run of the same conversion (the
same key) either resumes it (--resume) or discards it, saying so.

What a resume checks the source by (`facts`):
- local files behind the overlays: their size and mtime (`sources`);
- a remote source's NBD exports (vSphere, -it ssh: nbdkit on unix sockets in the work
  directory): the --resume opens the source again on the kept work directory, which serves the
  disks on the same socket paths, so the overlays' backing names resolve again (`reopen`); the
  endpoints must be the same, and so must the source's identity() (the VM's UUID, its
  configuration stamp, its disk files' sizes and modification times) recorded in `remote`. A
  source that cannot be reached keeps the state for a later --resume. A source that cannot
  serve its disks again as they were (a vSphere disk downloaded through an export lease) makes
  the copy not resumable.

Targets keep what they wrote through keep_for_resume(); one with `resumable` False (-o libvirt
with a pool of block devices: its volumes are made through libvirt, not temporaries a claim
can keep) is not resumable.

The key is the CLI's: a digest of the options that decide the result (cli/convert_cmd.py), so
"the same command" is what the user would call it, whatever the order of the options. The
pickle is only ever read from a directory of this user's, 0700 (tempfile.mkdtemp), after the
key matched; one that no longer loads (another vmshift version) makes the state unusable, and
it is discarded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmshift.blockio.overlay import Overlay
from vmshift.blockio.progress import EventSink, WarningEvent
from vmshift.blockio.windows import JOURNAL
from vmshift.errors import ConversionError, SourceError
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM
from vmshift.process import Owner
from vmshift.sources.base import ReopenableSource, Source
from vmshift.targets.base import OutputDisk, Target
from vmshift.targets.output_lock import CLAIM_SUFFIX, claim
from vmshift.workdir import OWNER, PREFIX, RESUMABLE

log = logging.getLogger(__name__)

FACTS = "resume.pickle"
VERSION = 2  # 2: a remote source's identity


class KeptForResume(KeyboardInterrupt):
    """A signal interrupted the copy, and what a --resume needs was kept in workdir."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(str(workdir))
        self.workdir = workdir


class KeptSourceError(SourceError):
    """The remote source stopped answering during the copy (or cannot be reached to continue
    one), and what a --resume needs was kept in workdir."""

    def __init__(self, lost: SourceError, workdir: Path) -> None:
        super().__init__(lost.message, hint=lost.hint)
        self.workdir = workdir


class ResumeStateError(Exception):
    """A resume state that cannot be used (unreadable, another version's)."""


@dataclass(frozen=True)
class ResumeState:
    workdir: Path
    key: str
    vm: SourceVM
    os: OperatingSystem
    caps: GuestCaps
    overlays: tuple[Overlay, ...]
    outputs: tuple[OutputDisk, ...]
    sources: tuple[tuple[str, int, int], ...]  # (file, size, mtime_ns) behind the overlays
    remote: tuple[str, ...] | None = None  # a remote source's identity(): reopened to resume

    @property
    def journal(self) -> Path:
        return self.workdir / JOURNAL


def source_files(files: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """(file, size, mtime_ns) of each file the overlays are backed by: a resume checks them."""
    out = []
    for name in files:
        st = Path(name).stat()
        out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def save(state: ResumeState) -> None:
    """Claim the outputs and write the state (facts first, the json last and atomically)."""
    workdir = state.workdir
    with (workdir / FACTS).open("wb") as f:
        pickle.dump((state.vm, state.os, state.caps, state.overlays, state.outputs), f)
        f.flush()
        os.fsync(f.fileno())
    doc = {
        "version": VERSION,
        "key": state.key,
        "name": state.vm.name,
        "overlays": [str(o.path) for o in state.overlays],
        "outputs": [str(o.path) for o in state.outputs],
        "sources": [list(s) for s in state.sources],
        "remote": list(state.remote) if state.remote is not None else None,
    }
    fd, tmp = tempfile.mkstemp(prefix=".resume.", dir=workdir)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    # The claims first: a claim counts once its state exists, and a state whose outputs are
    # not claimed yet would leave them to the leftover check if the run stopped in between.
    for out in state.outputs:
        claim(out.path, workdir / RESUMABLE)
    Path(tmp).replace(workdir / RESUMABLE)
    with contextlib.suppress(OSError):  # the directory entry of the rename made durable
        dfd = os.open(workdir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def load(workdir: Path) -> ResumeState:
    try:
        doc = json.loads((workdir / RESUMABLE).read_text())
        if doc.get("version") != VERSION:
            raise ResumeStateError(f"{workdir}: a resume state of another vmshift version")
        with (workdir / FACTS).open("rb") as f:
            vm, guest_os, caps, overlays, outputs = pickle.load(
                f
            )  # our own file, in a 0700 directory
        sources = tuple((str(s[0]), int(s[1]), int(s[2])) for s in doc["sources"])
        remote = doc.get("remote")
        return ResumeState(
            workdir, str(doc["key"]), vm, guest_os, caps, tuple(overlays), tuple(outputs),
            sources, tuple(str(r) for r in remote) if remote is not None else None,
        )  # fmt: skip
    except ResumeStateError:
        raise
    except Exception as exc:  # any damage: unusable, never a crash
        raise ResumeStateError(f"{workdir}: unreadable resume state: {exc}") from exc


def _key_of(workdir: Path) -> str | None:
    try:
        return str(json.loads((workdir / RESUMABLE).read_text()).get("key"))
    except (OSError, ValueError, AttributeError):
        return None


def find(parent: Path | None, key: str) -> list[Path]:
    """The work directories under parent holding a resume state of key, of this user, whose
    run is over; oldest first."""
    base = parent if parent is not None else Path(tempfile.gettempdir())
    found = []
    for workdir in sorted(base.glob(f"{PREFIX}*"), key=lambda p: _mtime(p / RESUMABLE)):
        try:
            if workdir.is_symlink() or workdir.stat().st_uid != os.getuid():
                continue
            if _key_of(workdir) != key:
                continue
            owner = Owner.parse((workdir / OWNER).read_text())
            if owner.state() != "dead" and owner != Owner.this_process():
                continue  # a run copying right now (this process's own earlier run is over)
        except (OSError, ValueError):
            continue
        found.append(workdir)
    return found


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def take_over(workdir: Path) -> None:
    """This process owns the directory now (sweeps judge it by its owner)."""
    (workdir / OWNER).write_text(Owner.this_process().stamp())


def _outputs(workdir: Path) -> list[Path]:
    try:
        return [Path(p) for p in json.loads((workdir / RESUMABLE).read_text())["outputs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def forget(workdir: Path) -> None:
    """The state is done with (the copy finished, or the run failed): remove the claims and
    the state, keep the outputs (the target owns them) and the directory."""
    for out in _outputs(workdir):
        out.with_name(out.name + CLAIM_SUFFIX).unlink(missing_ok=True)
    (workdir / RESUMABLE).unlink(missing_ok=True)
    (workdir / FACTS).unlink(missing_ok=True)


def discard(workdir: Path) -> None:
    """Remove a kept state altogether: its temporary outputs, their claims, the directory."""
    for out in _outputs(workdir):
        out.unlink(missing_ok=True)
    forget(workdir)
    shutil.rmtree(workdir, ignore_errors=True)


def changed_sources(state: ResumeState) -> list[str]:
    """The source files that are not as they were when the copy started."""
    changed = []
    for name, size, mtime in state.sources:
        try:
            st = Path(name).stat()
        except OSError:
            changed.append(name)
            continue
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            changed.append(name)
    return changed


def facts(
    source: Source, vm: SourceVM, target: object, files: Sequence[str]
) -> tuple[tuple[tuple[str, int, int], ...], tuple[str, ...] | None] | None:
    """What a resume of this copy checks the source by, (sources, remote) of the ResumeState
    (module docstring); None if the copy cannot be resumed. files: the local files behind the
    overlays, as the pipeline names them."""
    if not callable(getattr(target, "keep_for_resume", None)):
        return None
    if not getattr(target, "resumable", True):
        return None
    if not vm.read_remotely:  # local files, also those of a remote kind of source (-i vmx)
        return source_files(files), None
    if not isinstance(source, ReopenableSource) or any(d.endpoint.is_local for d in vm.disks):
        return None
    try:
        identity = source.identity()
    except SourceError as exc:  # the copy goes on; it is only not resumable
        log.warning("the copy cannot be resumed if interrupted: %s", exc.message)
        return None
    return ((), identity) if identity is not None else None


def reopen(state: ResumeState, source: Source) -> SourceVM:
    """The SourceVM to continue state's copy with. A remote source is opened again on the kept
    work directory, which serves its disks where the overlays' backing names point; it must be
    the same VM with the same disks, else the state is discarded. A source that cannot be
    reached: KeptSourceError, the state kept."""
    if state.remote is None:
        return state.vm
    try:
        vm = source.open(state.workdir)
        identity = source.identity() if isinstance(source, ReopenableSource) else None
    except SourceError as exc:
        raise KeptSourceError(exc, state.workdir) from exc
    now, then = [d.endpoint for d in vm.disks], [d.endpoint for d in state.vm.disks]
    changed = None
    if len(now) != len(then):
        changed = f"{len(then)} disks then, {len(now)} now"
    elif now != then:
        a, b = next((a, b) for a, b in zip(then, now, strict=True) if a != b)
        changed = f"a disk: {a.uri} ({a.virtual_size} bytes) then, {b.uri} ({b.virtual_size}) now"
    elif identity != state.remote:
        gone = [item for item in state.remote if item not in (identity or ())]
        changed = gone[0] if gone else "its identity"
    if changed is not None:
        discard(state.workdir)
        raise ConversionError(
            f"--resume: {vm.source_file or vm.name} changed since the copy was interrupted "
            f"({changed}); the kept copy was discarded",
            hint="run the conversion again without --resume",
        )
    return state.vm


def settle(
    exc: BaseException,
    workdir: Path,
    target: Target,
    lost: Callable[[], SourceError | None],
    interrupted: Callable[[], bool],
) -> BaseException:
    """A run whose conversion or copy raised exc: keep its copy for a --resume, or have the
    target remove what it wrote; return what the run raises (KeptForResume, KeptSourceError,
    the source's loss, or exc itself).

    The copy is kept when a signal interrupted it (exc a KeyboardInterrupt, or interrupted())
    or the remote source was lost in it (lost()), and its resume state was written.

    The CLI turns the first signal into a KeyboardInterrupt raised wherever the main thread
    is, so it may come while this runs: a link that drops fails the copy, and the SIGHUP
    follows. Coming while the ending is decided, it is decided again as an interrupted run;
    coming while the target keeps or removes, that is done again to its end. An ending left
    half done would leave a temporary output with neither a claim nor a run behind it."""
    while True:
        try:
            signalled = isinstance(exc, KeyboardInterrupt) or interrupted()
            gone = lost() if isinstance(exc, Exception) else None
            keeper = getattr(target, "keep_for_resume", None)
            kept = (signalled or gone is not None) and (workdir / RESUMABLE).exists()
            keep: Callable[[], None] | None = keeper if kept else None
            break
        except KeyboardInterrupt as signal_exc:
            exc = signal_exc
    while True:
        try:
            (keep or target.abort)()
            break
        except KeyboardInterrupt:
            continue  # both are safe to do again: what is done already is skipped
    if keep is None:
        return gone if gone is not None else exc
    if signalled or gone is None:
        return KeptForResume(workdir)
    return KeptSourceError(gone, workdir)


def kept_state(parent: Path | None, key: str, wanted: bool, sink: EventSink) -> ResumeState | None:
    """The interrupted copy of this conversion to resume (wanted: --resume), taken over; any
    other kept state of this conversion discarded, saying so."""
    found = find(parent, key)
    state = None
    while wanted and found and state is None:
        workdir = found.pop()  # the newest
        try:
            state = load(workdir)
        except ResumeStateError as exc:
            sink(WarningEvent(f"{exc}: discarded"))
            discard(workdir)
            continue
        take_over(workdir)
        changed = changed_sources(state)
        if changed:
            discard(workdir)
            raise ConversionError(
                f"--resume: {changed[0]} changed since the copy was interrupted; the kept copy "
                "was discarded",
                hint="run the conversion again without --resume",
            )
    for workdir in found:
        discard(workdir)
        sink(WarningEvent(
            f"discarded the interrupted copy of this conversion kept in {workdir} "
            "(--resume continues such a copy)"
        ))  # fmt: skip
    if wanted and state is None:
        log.warning("--resume: no interrupted copy of this conversion found; converting it")
    elif state is not None:
        log.info("--resume: continuing the copy kept in %s", state.workdir)
    return state


def discard_claims(outputs: Sequence[Path], sink: EventSink) -> None:
    """Discard the kept copies of other conversions whose temporary outputs have these names
    (another conversion to the same output name: the copy would write over them)."""
    for out in outputs:
        try:
            state = Path(out.with_name(out.name + CLAIM_SUFFIX).read_text().strip())
        except OSError:
            continue
        if state.name == RESUMABLE and state.is_file():
            discard(state.parent)
            sink(WarningEvent(
                f"discarded the interrupted copy of another conversion to {out} kept in "
                f"{state.parent}"
            ))  # fmt: skip
        out.with_name(out.name + CLAIM_SUFFIX).unlink(missing_ok=True)
