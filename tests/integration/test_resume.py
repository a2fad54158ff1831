"""Resumable copy (issue 12): windows and their journal, what an interrupted copy keeps, and
`--resume` continuing it to a result byte-identical to an uninterrupted copy.

Fast tests drive the copier and the pipeline on real qemu-img (the pipeline's appliance stages
replaced by stand-ins: the overlay is then the source as it is); the slow ones run the CLI on
the phony RHEL guest with a 3 GiB data disk, killed or interrupted in the middle of its copy.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import vmshift
from tests.guests.manifest import BuiltGuest
from tests.integration.convert_runs import convert_argv, start_convert, users_of, wait_for_stage
from tests.integration.test_targets import CAPS
from tests.os_samples import LINUX
from vmshift import resume
from vmshift.blockio import windows
from vmshift.blockio.copier import CopyJob, copy_disks
from vmshift.blockio.overlay import create_overlay
from vmshift.blockio.progress import CopyProgress, Event, WarningEvent
from vmshift.blockio.windows import Journal, Planner, Window, image_opts
from vmshift.cli.resume_key import resume_key
from vmshift.model.vm import DiskEndpoint
from vmshift.pipeline import RunOptions, run_conversion
from vmshift.process import Owner
from vmshift.sources.base import SourceOptions
from vmshift.sources.disk import DiskSource
from vmshift.targets.base import TargetOptions
from vmshift.targets.local import LocalTarget
from vmshift.targets.output_lock import OutputLock, claim, temporary_names
from vmshift.workdir import RESUMABLE, make_workdir, sweep_dead_runs

MIB = 1 << 20
GIB = 1 << 30
DISK = 512 * MIB


def data_image(path: Path, size: int, *, seed: int = 1) -> DiskEndpoint:
    """A sparse raw disk with a MiB of random data every 40 MiB, and a written-zero run."""
    rng = hashlib.sha256(str(seed).encode()).digest()
    with path.open("wb") as f:
        f.truncate(size)
        for n, offset in enumerate(range(0, size, 40 * MIB)):
            f.seek(offset)
            f.write(hashlib.sha256(rng + n.to_bytes(8, "big")).digest() * (MIB // 32))
        f.seek(size // 2)
        f.write(bytes(4 * MIB))
    return DiskEndpoint(str(path), "raw", size)


def same_bytes(a: Path, b: Path, fmt_a: str = "raw") -> bool:
    """The two disks hold the same bytes (a qcow2 a read through qemu-img as raw)."""
    if fmt_a != "raw":
        raw = a.with_suffix(".content")
        subprocess.run(["qemu-img", "convert", "-f", fmt_a, "-O", "raw", a, raw], check=True)
        a = raw
    return subprocess.run(["cmp", "-s", a, b], check=False).returncode == 0


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(autouse=True)
def small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of 64 MiB on the fast tests' 512 MiB disks: 8 of them, as on an 8 GiB disk
    (they do not grow)."""
    monkeypatch.setattr(windows, "WINDOW", 64 * MIB)
    monkeypatch.setattr(windows, "WINDOW_SECONDS", 0.0)


# --- windows and the journal ---------------------------------------------------------------


def test_windows_grow_while_they_are_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "WINDOW", GIB)
    monkeypatch.setattr(windows, "WINDOW_MAX", 64 * GIB)
    monkeypatch.setattr(windows, "WINDOW_SECONDS", 8.0)
    planner, got = Planner(20 * GIB + 12345, GIB), []
    while (window := planner.next()) is not None:
        got.append(window)
        planner.took(1.0 if window.offset < 3 * GIB else 60.0)
    assert [w.size >> 30 for w in got[:5]] == [1, 2, 4, 4, 4]  # the 3rd was slow: no growth
    assert got[0].offset == GIB and got[-1].end == 20 * GIB + 12345
    assert all(a.end == b.offset for a, b in itertools.pairwise(got))
    compressed = Planner(20 * GIB, compressed=True)
    assert compressed.next() == Window(0, 20 * GIB) and compressed.next() is None


def test_image_opts_double_commas() -> None:
    node = {"driver": "raw", "size": 5, "file": {"driver": "file", "filename": "/a,b"}}
    assert image_opts(node) == "driver=raw,size=5,file.driver=file,file.filename=/a,,b"


def test_the_journal_is_a_prefix_and_ignores_a_torn_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    ws = [Window(0, GIB), Window(GIB, 2 * GIB), Window(3 * GIB, GIB), Window(4 * GIB, GIB)]
    journal.append("sda", ws[0])
    journal.append("sdb", ws[0])
    journal.append("sda", ws[2])  # not after a gap
    assert journal.done("sda") == [ws[0]]
    journal.append("sda", ws[1])
    with journal.path.open("a") as f:
        f.write(f"sda {ws[3].offset} ")  # a kill in the middle of the line
    assert journal.done("sda") == ws[:3]
    assert journal.done("sdc") == []


# --- the copier: windows journaled, a resume checks them --------------------------------


@pytest.fixture
def overlay(tmp_path: Path) -> Any:
    return create_overlay(data_image(tmp_path / "src.raw", DISK), tmp_path, "sda")


class Stop(KeyboardInterrupt):
    pass


def stop_after(windows_done: int, journal: Journal) -> Any:
    """A sink that interrupts the copy (as a signal would) once the journal has n windows."""

    def sink(event: Event) -> None:
        if not isinstance(event, CopyProgress) or not journal.path.exists():
            return
        if len(journal.path.read_text().splitlines()) >= windows_done:
            raise Stop()

    return sink


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_an_interrupted_copy_resumes_to_the_same_bytes(
    overlay: Any, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / f"out.{fmt}"
    journal = Journal(tmp_path / "journal")
    job = CopyJob(overlay, out, fmt, preallocated=False, label="g-sda")
    with pytest.raises(Stop):
        copy_disks([job], stop_after(2, journal), journal)
    assert out.exists(), "a journaled copy keeps its output"
    done = journal.done("sda")
    assert len(done) >= 2 and done[-1].end < DISK
    events: list[Event] = []
    copy_disks([job], events.append, journal, resume=True)
    assert same_bytes(out, Path(overlay.source.uri), fmt)
    assert len(journal.done("sda")) == DISK // (64 * MIB)
    said = [e.message for e in events if isinstance(e, WarningEvent)]
    assert said == [
        f"g-sda: resuming the copy after {done[-1].end >> 20} MiB already on {out}; "
        "checking them against the converted disk"
    ]
    progress = [e for e in events if isinstance(e, CopyProgress)]
    assert progress[-1].finished and progress[-1].phase == "verify"
    assert out.stat().st_blocks * 512 < 32 * MIB  # still sparse: zeros were not written


def test_a_journaled_window_that_differs_is_copied_again(overlay: Any, tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    journal = Journal(tmp_path / "journal")
    job = CopyJob(overlay, out, "raw", preallocated=False, label="g-sda")
    with pytest.raises(Stop):
        copy_disks([job], stop_after(3, journal), journal)
    bad = journal.done("sda")[1]
    with out.open("r+b") as f:  # the journal says it is there; the disk says otherwise
        f.seek(bad.offset + 3 * MIB + 7)
        f.write(b"\xa5" * 4096)
    events: list[Event] = []
    copy_disks([job], events.append, journal, resume=True)
    assert same_bytes(out, Path(overlay.source.uri))
    said = [e.message for e in events if isinstance(e, WarningEvent)]
    assert (
        f"g-sda: the part of {out} at {bad.offset}+{bad.size} differs from the converted disk "
        f"(at offset {bad.offset + 3 * MIB}): copying it again"
    ) in said


def test_a_resume_without_its_output_copies_everything(overlay: Any, tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    journal = Journal(tmp_path / "journal")
    for offset in (0, 64 * MIB, 128 * MIB):
        journal.append(
            "sda", Window(offset, 64 * MIB)
        )  # a journal whose output was removed by hand
    job = CopyJob(overlay, out, "raw", preallocated=False, label="g-sda")
    copy_disks([job], lambda _e: None, journal, resume=True)
    assert same_bytes(out, Path(overlay.source.uri))


def test_without_a_journal_an_interrupted_copy_leaves_nothing(overlay: Any, tmp_path: Path) -> None:
    out = tmp_path / "out.raw"
    journal = Journal(tmp_path / "journal")  # only watched, not given to the copier

    def sink(event: Event) -> None:
        if isinstance(event, CopyProgress) and event.done > 150 * MIB:
            raise Stop()

    with pytest.raises(Stop):
        copy_disks([CopyJob(overlay, out, "raw", False, "g")], sink)
    assert not out.exists() and not journal.path.exists()


# --- what the sweeps leave alone ---------------------------------------------------------


def dead_stamp() -> str:
    me = Owner.this_process()
    return Owner(2**22 - 3, "1", me.boot, me.pidns, me.host).stamp()


def test_the_sweep_keeps_a_dead_runs_resumable_workdir(tmp_path: Path) -> None:
    kept, gone = make_workdir(tmp_path), make_workdir(tmp_path)
    for d in (kept, gone):
        (d / "owner").write_text(dead_stamp())
    (kept / RESUMABLE).write_text("{}")
    assert sweep_dead_runs(tmp_path) == [gone]
    assert kept.exists()


def test_the_output_lock_keeps_claimed_temporaries(tmp_path: Path) -> None:
    out, work = tmp_path / "out", make_workdir(tmp_path)
    out.mkdir()
    (out / ".g.vmshift-lock").write_text(dead_stamp())
    kept, stale = out / ".g-sda.tmp", out / ".g-sdb.tmp"
    for path in (kept, stale):
        path.write_bytes(b"half")
    (work / RESUMABLE).write_text("{}")
    claim(kept, work / RESUMABLE)
    claim(stale, tmp_path / "gone" / RESUMABLE)  # its state is gone: a leftover
    lock = OutputLock(out, "g", temporary_names("g"))
    lock.acquire()
    lock.release()
    assert sorted(p.name for p in out.iterdir()) == [".g-sda.tmp", ".g-sda.tmp.vmshift-resume"]
    assert f"removed {stale}: left by run {2**22 - 3} that was killed" in lock.swept
    # with no lock at all (a run interrupted by a signal releases it), nothing is refused
    lock.acquire()
    lock.release()


def test_the_key_is_the_command_not_its_order_or_its_chatter() -> None:
    a = argparse.Namespace(input="disk", output_storage="/o", verbose=0, resume=False)
    b = argparse.Namespace(resume=True, verbose=2, output_storage="/o", input="disk")
    c = argparse.Namespace(input="disk", output_storage="/p", verbose=0, resume=False)
    assert resume_key(a) == resume_key(b) != resume_key(c)


# --- the pipeline, its appliance stages replaced ------------------------------------------


@pytest.fixture
def no_appliance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The conversion stages as stand-ins: the overlays stay what the source is."""

    @contextlib.contextmanager
    def session(*_a: Any, **_k: Any) -> Iterator[None]:
        yield None

    class Converter:
        def convert(self, *_a: Any) -> Any:
            return CAPS

    monkeypatch.setattr("vmshift.pipeline.open_session", session)
    monkeypatch.setattr("vmshift.pipeline.unlock_volumes", lambda *_a: None)
    monkeypatch.setattr("vmshift.pipeline.inspect_session", lambda _s: [LINUX])
    monkeypatch.setattr("vmshift.pipeline.pick_converter", lambda _os: Converter())
    monkeypatch.setattr("vmshift.pipeline.trim_filesystems", lambda *_a: None)


def convert(src: Path, out: Path, work: Path, sink: Any, *, again: bool = False) -> Any:
    source = DiskSource(SourceOptions(args=(str(src),), name="g"))
    target = LocalTarget(TargetOptions(storage=str(out)))
    opts = RunOptions(workdir_parent=work, resume_key="k1", resume=again)
    return run_conversion(source, target, opts, sink)


def interrupted(tmp_path: Path, at: int) -> tuple[Path, Path, Path, Path]:
    """A conversion of a DISK-sized source interrupted once its copy has done `at` bytes:
    (source, output dir, --workdir, the kept work dir)."""
    src, out, work = tmp_path / "g.raw", tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    data_image(src, DISK)

    def sink(event: Event) -> None:
        if isinstance(event, CopyProgress) and event.done >= at:
            raise Stop()

    with pytest.raises(resume.KeptForResume) as kept:
        convert(src, out, work, sink)
    return src, out, work, kept.value.workdir


@pytest.mark.usefixtures("no_appliance")
def test_the_pipeline_keeps_an_interrupted_copy_and_resumes_it(tmp_path: Path) -> None:
    src, out, work, workdir = interrupted(tmp_path, 300 * MIB)
    assert (workdir / RESUMABLE).exists() and (workdir / "copy.journal").exists()
    assert sorted(p.name for p in out.iterdir()) == [".g-sda.tmp", ".g-sda.tmp.vmshift-resume"]
    events: list[Event] = []
    result = convert(src, out, work, events.append, again=True)
    assert result.copy_verified
    assert sorted(p.name for p in out.iterdir()) == ["g-sda", "g.xml"]
    assert same_bytes(out / "g-sda", src)
    assert list(work.iterdir()) == []
    assert any("resuming the copy after" in str(e) for e in events)


@pytest.mark.usefixtures("no_appliance")
def test_a_run_without_resume_discards_the_kept_copy(tmp_path: Path) -> None:
    src, out, work, workdir = interrupted(tmp_path, 150 * MIB)
    events: list[Event] = []
    convert(src, out, work, events.append)
    said = [e.message for e in events if isinstance(e, WarningEvent)]
    assert said[0] == (
        f"discarded the interrupted copy of this conversion kept in {workdir} "
        "(--resume continues such a copy)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["g-sda", "g.xml"]
    assert list(work.iterdir()) == []
    assert same_bytes(out / "g-sda", src)


@pytest.mark.usefixtures("no_appliance")
def test_a_changed_source_is_not_resumed(tmp_path: Path) -> None:
    src, out, work = tmp_path / "g.raw", tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    data_image(src, DISK)

    def sink(event: Event) -> None:
        if isinstance(event, CopyProgress) and event.done >= 300 * MIB:
            raise Stop()

    with pytest.raises(resume.KeptForResume):
        convert(src, out, work, sink)
    with src.open("r+b") as f:
        f.write(b"changed")
    with pytest.raises(Exception, match="changed since the copy was interrupted"):
        convert(src, out, work, lambda _e: None, again=True)
    assert list(out.iterdir()) == [] and list(work.iterdir()) == []


# --- the CLI on a real conversion (appliance: slow) ---------------------------------------


@pytest.fixture(scope="module")
def big_guest(
    linux_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """The phony RHEL guest plus a 3 GiB data disk full of non-zero bytes: a copy of seconds
    in windows of 1, then 2 GiB."""
    data = tmp_path_factory.mktemp("data") / "data.raw"
    with data.open("wb") as f:
        block = hashlib.sha256(b"data").digest() * (MIB // 32)
        for _ in range(3 * GIB // MIB):
            f.write(block)
    return [Path(linux_guests["rhel"].disks[0]), data]


def wait_for_windows(proc: subprocess.Popen[str], workdir: Path, disk: str) -> Path:
    """Wait for the copy stage, then for a journaled window of disk; the run's work dir."""
    wait_for_stage(proc, "copy")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for journal in workdir.glob("vmshift-*/copy.journal"):
            if f"{disk} " in journal.read_text():
                return journal.parent
        time.sleep(0.02)
    raise AssertionError("no window was journaled")


@pytest.mark.slow
def test_a_killed_copy_resumes_byte_identical_even_after_a_sigterm(
    big_guest: list[Path], outdir: Path, workdir: Path
) -> None:
    """kill -9 in the copy keeps it; a --resume stopped by SIGTERM in its own copy keeps it
    again and says how to go on; the next --resume checks what the journal lists (a window
    made to lie is copied again) and finishes with the bytes of an uninterrupted copy.
    (A plain rerun discarding a kept copy: test_a_run_without_resume_discards_the_kept_copy.)"""
    proc = start_convert(big_guest, outdir, workdir)
    kept = wait_for_windows(proc, workdir, "sdb")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while users_of(kept) and time.monotonic() < deadline:
        time.sleep(0.5)  # qemu-img, orphaned, finishes its window
    state = json.loads((kept / RESUMABLE).read_text())
    # The uninterrupted copy of the same converted disks: the overlays, read whole.
    refs = []
    for overlay in state["overlays"]:
        ref = workdir.parent / (Path(overlay).name + ".ref")
        subprocess.run(["qemu-img", "convert", "-O", "raw", overlay, ref], check=True)
        refs.append(ref)

    proc = start_convert(big_guest, outdir, workdir, "--resume")
    wait_for_stage(proc, "copy")
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    lines = err.strip().splitlines()
    assert lines[-2].startswith("vmshift: interrupted by SIGTERM while resuming the copy"), err
    assert lines[-1] == (
        "vmshift: the converted disks and the partial copy are kept: rerun the same command "
        "with --resume to continue, or without --resume to discard them; the source is untouched"
    )
    assert (kept / RESUMABLE).exists()
    assert sorted(p.name for p in outdir.iterdir() if p.name.endswith(".tmp.vmshift-resume"))

    # The journal says sda's first window is there: make it lie.
    sda_tmp = Path(state["outputs"][0])
    with sda_tmp.open("r+b") as f:
        f.seek(1 * MIB)
        f.write(b"\xa5" * 4096)
    again = vmshift([*convert_argv(big_guest, outdir, workdir), "--resume"])
    assert again.returncode == 0, again.stderr
    assert "resuming the copy after" in again.stderr
    assert "differs from the converted disk (at offset 1048576): copying it again" in again.stderr
    assert "interrupted" not in again.stdout
    names = sorted(p.name for p in outdir.iterdir())
    assert names in (["data-sda", "data-sdb", "data.xml"], ["rhel-sda", "rhel-sdb", "rhel.xml"])
    finals = [outdir / n for n in names[:2]]
    assert [digest(f) for f in finals] == [digest(r) for r in refs]
    assert list(workdir.iterdir()) == []
