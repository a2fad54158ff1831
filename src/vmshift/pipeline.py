"""One conversion, in stage order:

    source -> overlay -> inspect -> convert -> (trim) -> target.setup -> copy -> target.finalize

The source is only ever read; every guest change lands in a qcow2 overlay in a private work
directory that is removed at the end, success or not. Targets check their options before the
slow work starts, and on any failure (or Ctrl-C) remove everything they made, except that a
signal during the copy, or a remote source lost during it, keeps the work directory and the
partial outputs for --resume (resume.py; `_resume_copy` continues such a copy).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vmshift import resume
from vmshift.blockio.copier import CopyJob, copy_disks
from vmshift.blockio.imageinfo import ImageInfo
from vmshift.blockio.overlay import Overlay, SizeEstimate, create_overlay, measure
from vmshift.blockio.progress import EventSink, StageEvent, WarningEvent
from vmshift.blockio.windows import JOURNAL, Journal
from vmshift.convert.base import ConvertOptions, pick_converter
from vmshift.errors import (
    BootCheckError,
    ConversionError,
    TargetError,
)
from vmshift.guest.inspect import inspect_session
from vmshift.guest.luks import AskKey, LuksKey, unlock_volumes
from vmshift.guest.safety import check_workdir_space
from vmshift.guest.session import open_session
from vmshift.guest.trim import trim_filesystems
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM
from vmshift.sources.base import RemoteSource, ReportingSource, Source
from vmshift.targets.base import OutputDisk, Target, TargetResult
from vmshift.verify.boot import (
    BootCheckInterrupted,
    BootPlan,
    BootVerdict,
    VerifyOptions,
    static_addresses,
    verify_boot,
)
from vmshift.workdir import make_workdir, sweep_dead_runs

log = logging.getLogger(__name__)

# Output space estimates from qemu-img measure are exact for metadata; keep a little slack for
# filesystem overhead on the target.
SPACE_MARGIN = 1.02


@dataclass(frozen=True)
class RunOptions:
    out_format: str = "raw"  # -of
    preallocated: bool = False  # -oa preallocated
    compressed: bool = False  # -oo compressed (qcow2 only)
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    root: str | None = None  # --root: ask, single, first or a device; None means single
    # --root ask with several operating systems: the caller's way of asking the user; None
    # (no terminal) makes several operating systems an error that names them.
    ask_root: Callable[[Sequence[OperatingSystem]], OperatingSystem] | None = None
    workdir_parent: Path | None = None
    # -m/--memory and --smp/--vcpus: they replace what the source describes.
    memory: int | None = None  # bytes
    vcpus: int | None = None
    # --key: LUKS passphrases; ask_key asks for one no key matches (None: such a volume is
    # refused, naming it).
    keys: tuple[LuksKey, ...] = ()
    ask_key: AskKey | None = None
    # --verify-boot: boot the result from what the target describes, after finalize.
    verify_boot: VerifyOptions | None = None
    # --no-verify-copy makes this False: each copy is compared with its overlay by default.
    verify_copy: bool = True
    # What identifies this conversion for --resume (cli/convert_cmd.py); None: a copy
    # interrupted by a signal (or a remote source lost in it) is not kept for a resume.
    resume_key: str | None = None
    resume: bool = False  # --resume: continue this conversion's interrupted copy, if kept
    # Whether a signal came: a copy that failed because of one is kept for a resume.
    interrupted: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class ConversionResult:
    vm: SourceVM
    os: OperatingSystem
    caps: GuestCaps
    target: TargetResult
    # Bytes read from a remote source (vSphere, SSH) per disk: what crossed the network.
    fetched: dict[str, int] = field(default_factory=dict)
    boot: BootVerdict | None = None  # --verify-boot's verdict
    copy_verified: bool = False  # every output was compared with its converted disk


def _label(uri: str) -> str:
    """A disk's name for messages: its file, even when qemu reads it through a json: wrapper."""
    if uri.startswith("json:"):
        try:
            node = json.loads(uri[5:])
            while isinstance(node, dict) and "file" in node:
                node = node["file"]
            if isinstance(node, dict) and "filename" in node:
                return str(node["filename"])
        except ValueError:
            pass
    return uri


def choose_root(
    oses: Sequence[OperatingSystem],
    wanted: str | None,
    ask: Callable[[Sequence[OperatingSystem]], OperatingSystem] | None = None,
) -> OperatingSystem:
    """The OS to convert: the only one, the one --root names, or the one the user picks."""
    if wanted and wanted not in ("ask", "single", "first"):
        for candidate in oses:
            if candidate.root == wanted:
                return candidate
        roots = ", ".join(o.root for o in oses)
        raise ConversionError(f"--root {wanted}: no such root (found: {roots})")
    if len(oses) == 1 or wanted == "first":
        return oses[0]
    if wanted == "ask" and ask is not None:
        return ask(oses)
    roots = ", ".join(f"{o.root} ({o.product_name})" for o in oses)
    hint = "pick one with --root DEVICE, or --root first"
    if wanted == "ask":
        hint = "there is no terminal to ask on: " + hint
    raise ConversionError(f"the guest has several operating systems: {roots}", hint=hint)


def check_free_space(outputs: Sequence[OutputDisk], estimates: Sequence[SizeEstimate]) -> None:
    need: dict[int, tuple[Path, int]] = {}
    for out, est in zip(outputs, estimates, strict=True):
        directory = out.path.parent
        dev = directory.stat().st_dev
        size = est.fully_allocated if out.preallocated else est.required
        prev = need.get(dev, (directory, 0))
        need[dev] = (prev[0], prev[1] + int(size * SPACE_MARGIN))
    for directory, required in need.values():
        st = os.statvfs(directory)
        free = st.f_bavail * st.f_frsize
        if required > free:
            raise TargetError(
                f"{directory}: not enough free space for the output: need {required >> 20} MiB, "
                f"{free >> 20} MiB free"
            )


def run_conversion(
    source: Source, target: Target, opts: RunOptions, sink: EventSink
) -> ConversionResult:
    check_workdir_space(opts.workdir_parent, remote=False)  # remote disks: checked once known
    for dead in sweep_dead_runs(opts.workdir_parent):
        sink(WarningEvent(f"removed {dead}: the work directory of a run that was killed"))
    kept = None
    if opts.resume_key is not None:
        kept = resume.kept_state(opts.workdir_parent, opts.resume_key, opts.resume, sink)
    workdir = kept.workdir if kept is not None else make_workdir(opts.workdir_parent)
    # A resume leaves the state it took over as it found it until its copy starts: a signal,
    # a source that cannot be reached yet or a refusal before then costs it nothing.
    keep = kept is not None
    try:
        sink(StageEvent("source", "reading the source"))
        if isinstance(source, ReportingSource):
            source.report_to(sink)
        # A resume converts nothing: the overlays hold the converted disks.
        if kept is not None:
            vm = resume.reopen(kept, source)
        else:
            vm = _overridden(source.open(workdir), opts)
        for warning in vm.warnings:
            sink(WarningEvent(warning))
        # Everything that can be refused quickly is refused before the slow work.
        try:
            target.check(vm)
        finally:  # what a killed run had left there and check() removed, even if it refused
            for removed in getattr(target, "swept", ()):
                sink(WarningEvent(removed))
        try:
            keep = False  # from here resume.settle() decides
            remote = vm.read_remotely
            if kept is not None:
                result = _resume_copy(kept, target, opts, sink, remote=remote)
            else:
                result = _convert_and_copy(vm, target, source, workdir, opts, sink=sink)
        except BaseException as exc:
            # A remote source that stopped answering makes the appliance or the copy fail in
            # its own words (I/O errors, "no operating system"): say what really happened.
            # In the copy, that keeps it for a resume as a signal does.
            lost = source.lost if isinstance(source, RemoteSource) else lambda: None
            error = resume.settle(exc, workdir, target, lost, opts.interrupted)
            keep = isinstance(error, (resume.KeptForResume, resume.KeptSourceError))
            if error is exc:
                raise
            raise error from exc
        # The output is complete from here: a guest that does not boot fails the run, but
        # its output stays for the user to look at. Said as a stage of its own, so that whoever
        # reads the run's lines (a plan's runner) knows the guest is made even if the run is
        # killed in what follows (the boot check, removing the work directory).
        sink(StageEvent("created", "cleaning up (the guest is complete on the target)"))
        if opts.verify_boot is not None:
            sink(StageEvent("verify", "booting the converted guest to check it"))
            try:
                verdict = verify_boot(_boot_plan(result), workdir, opts.verify_boot)
            except KeyboardInterrupt as exc:
                raise BootCheckInterrupted(result.target.description) from exc
            result = dataclasses.replace(result, boot=verdict)
    except KeyboardInterrupt as exc:
        if keep and not isinstance(exc, resume.KeptForResume):  # a resume, before its copy
            raise resume.KeptForResume(workdir) from exc
        raise
    finally:
        try:
            source.close()
        finally:  # a signal that comes while the source closes must not leave the state
            if not keep:
                resume.forget(workdir)
                shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(source, RemoteSource):
        result = dataclasses.replace(result, fetched=source.fetched())
        for label, size in result.fetched.items():
            log.info("%s: fetched %d bytes from the source", label, size)
    return result


def _copy_jobs(
    vm: SourceVM, overlays: Sequence[Overlay], outputs: Sequence[OutputDisk], opts: RunOptions,
    verify: bool,
) -> list[CopyJob]:  # fmt: skip
    return [
        CopyJob(o, out.path, opts.out_format, opts.preallocated, f"{vm.name}-{o.name}",
                opts.compressed, verify=verify)
        for o, out in zip(overlays, outputs, strict=True)
    ]  # fmt: skip


def _resume_copy(
    state: resume.ResumeState, target: Target, opts: RunOptions, sink: EventSink, *, remote: bool
) -> ConversionResult:
    """Continue a kept copy: the outputs the target names again, the journal's windows checked,
    the rest copied, then finalize.

    The journal is never trusted alone: its windows are compared with the overlays, also for a
    remote source, whose blocks the overlay does not hold are then fetched once more (the
    journaled part only, where verifying would fetch the whole disk again). The rest is copied
    and, as in any run from a remote source, not verified."""
    vm = state.vm
    outputs = target.setup(vm, [o.virtual_size for o in state.overlays])
    if [o.path for o in outputs] != [o.path for o in state.outputs]:
        raise ConversionError(
            "--resume: the outputs are not where the interrupted copy wrote them",
            hint="run the conversion again without --resume",
        )
    verify = opts.verify_copy and not remote
    then = ", then comparing each copy with its disk" if verify else " (not verified)"
    sink(StageEvent("copy", f"resuming the copy of the disks{then}"))
    jobs = _copy_jobs(vm, state.overlays, outputs, opts, verify)
    copy_disks(jobs, sink, Journal(state.journal), resume=True)
    resume.forget(state.workdir)
    sink(StageEvent("finalize", "creating the guest on the target"))
    result = target.finalize(vm, state.os, state.caps, outputs)
    return ConversionResult(
        vm=vm, os=state.os, caps=state.caps, target=result, copy_verified=verify
    )


def _boot_plan(result: ConversionResult) -> BootPlan:
    target = result.target
    if (target.domain_xml is None and target.boot_script is None) or not target.files:
        raise BootCheckError("--verify-boot: this output describes no guest vmshift can boot")
    return BootPlan(
        xml=target.domain_xml,
        name=target.name,
        addresses=tuple(static_addresses(result.os)),
        save_dir=target.console_dir or target.files[0].parent,
        network_proof=result.os.type == "windows",
        script=target.boot_script,
    )


def _overridden(vm: SourceVM, opts: RunOptions) -> SourceVM:
    if opts.memory:
        vm = dataclasses.replace(vm, memory=opts.memory)
    if opts.vcpus:
        vm = dataclasses.replace(vm, vcpus=opts.vcpus, topology=None)
    return vm


def _convert_and_copy(
    vm: SourceVM, target: Target, source: Source, workdir: Path, opts: RunOptions, *,
    sink: EventSink,
) -> ConversionResult:  # fmt: skip
    remote = vm.read_remotely
    if remote:
        # A disk read over the network leaves what the appliance reads in its overlay.
        check_workdir_space(workdir.parent, remote=True)
    overlays: list[Overlay] = [
        create_overlay(disk.endpoint, workdir, disk.name or f"disk{i}")
        for i, disk in enumerate(vm.disks)
    ]
    images = [ImageInfo(o.path, "qcow2", o.virtual_size, None) for o in overlays]
    labels = [_label(d.endpoint.uri) for d in vm.disks]
    sink(StageEvent("appliance", "starting the libguestfs appliance"))
    # A remote source's blocks are fetched over the network: what the appliance reads is kept
    # in the overlay (copy-on-read), so neither it nor the copy fetches a block twice.
    with open_session(
        images, readonly=False, labels=labels, copy_on_read=remote, scratch=workdir
    ) as session:
        unlock_volumes(session, opts.keys, opts.ask_key)
        sink(StageEvent("inspect", "inspecting the guest"))
        oses = inspect_session(session)
        guest_os = choose_root(oses, opts.root, opts.ask_root)
        what = f"{guest_os.distro} {guest_os.major_version}.{guest_os.minor_version}"
        sink(StageEvent("convert", f"converting {guest_os.type} guest ({what}, {guest_os.root})"))
        try:
            caps = pick_converter(guest_os).convert(session, guest_os, vm, opts.convert)
        except ConversionError as exc:
            # A guest tool or filesystem check that failed on a source whose reads fail: the
            # disk is what to name, not the tool.
            unreadable = session.unreadable()
            if unreadable is None:
                raise
            raise unreadable from exc
        sink(StageEvent("trim", "discarding unused blocks"))
        trim_filesystems(session, oses)
    estimates = [measure(o, opts.out_format) for o in overlays]
    outputs = target.setup(vm, [o.virtual_size for o in overlays])
    resume.discard_claims([out.path for out in outputs], sink)
    check_free_space(outputs, estimates)
    # Verifying reads the overlay again, and with it every block of its backing disk: a
    # remote source would send the whole disk a second time, so its copies are not verified.
    verify = opts.verify_copy and not remote
    if verify:
        sink(StageEvent("copy", "copying disks, then comparing each copy with its disk"))
    else:
        why = "--no-verify-copy" if not opts.verify_copy else "a remote source is read once"
        sink(StageEvent("copy", f"copying disks (not verified: {why})"))
    jobs = _copy_jobs(vm, overlays, outputs, opts, verify)
    journal = None
    files = [_label(d.endpoint.uri) for d in vm.disks]
    facts = resume.facts(source, vm, target, files) if opts.resume_key is not None else None
    if facts is not None:
        # Written before the first byte is copied: a run killed now leaves a resumable copy.
        assert opts.resume_key is not None
        journal = Journal(workdir / JOURNAL)
        resume.save(resume.ResumeState(
            workdir, opts.resume_key, vm, guest_os, caps, tuple(overlays), tuple(outputs), *facts
        ))  # fmt: skip
    copy_disks(jobs, sink, journal)
    resume.forget(workdir)  # from here an interruption removes everything again
    sink(StageEvent("finalize", "creating the guest on the target"))
    result = target.finalize(vm, guest_os, caps, outputs)
    return ConversionResult(vm=vm, os=guest_os, caps=caps, target=result, copy_verified=verify)
