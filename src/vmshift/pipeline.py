"""One conversion, in stage order:

    source -> overlay -> inspect -> convert -> (trim) -> target.setup -> copy -> target.finalize

The source is only ever read; every guest change lands in a qcow2 overlay in a private work
directory that is removed at the end, success or not. Targets check their options before the
slow work starts, and on any failure (or Ctrl-C) remove everything they made.
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

from vmshift.blockio.copier import CopyJob, copy_disks
from vmshift.blockio.imageinfo import ImageInfo
from vmshift.blockio.overlay import Overlay, SizeEstimate, create_overlay, measure
from vmshift.blockio.progress import EventSink, StageEvent, WarningEvent
from vmshift.convert.base import ConvertOptions, pick_converter
from vmshift.errors import ConversionError, TargetError
from vmshift.guest.inspect import inspect_session
from vmshift.guest.session import open_session
from vmshift.guest.trim import trim_filesystems
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM
from vmshift.sources.base import RemoteSource, ReportingSource, Source
from vmshift.targets.base import OutputDisk, Target, TargetResult
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


@dataclass(frozen=True)
class ConversionResult:
    vm: SourceVM
    os: OperatingSystem
    caps: GuestCaps
    target: TargetResult
    # Bytes read from a remote source (vSphere, SSH) per disk: what crossed the network.
    fetched: dict[str, int] = field(default_factory=dict)


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
    for dead in sweep_dead_runs(opts.workdir_parent):
        sink(WarningEvent(f"removed {dead}: the work directory of a run that was killed"))
    workdir = make_workdir(opts.workdir_parent)
    try:
        sink(StageEvent("source", "reading the source"))
        if isinstance(source, ReportingSource):
            source.report_to(sink)
        vm = _overridden(source.open(workdir), opts)
        for warning in vm.warnings:
            sink(WarningEvent(warning))
        # Everything that can be refused quickly is refused before the slow work.
        target.check(vm)
        try:
            remote = isinstance(source, RemoteSource)
            result = _convert_and_copy(vm, target, workdir, opts, sink, remote=remote)
        except Exception as exc:
            target.abort()
            # A remote source that stopped answering makes the appliance or the copy fail in
            # its own words (I/O errors, "no operating system"): say what really happened.
            lost = source.lost() if isinstance(source, RemoteSource) else None
            if lost is not None:
                raise lost from exc
            raise
        except BaseException:
            target.abort()
            raise
    finally:
        source.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(source, RemoteSource):
        result = dataclasses.replace(result, fetched=source.fetched())
        for label, size in result.fetched.items():
            log.info("%s: fetched %d bytes from the source", label, size)
    return result


def _overridden(vm: SourceVM, opts: RunOptions) -> SourceVM:
    if opts.memory:
        vm = dataclasses.replace(vm, memory=opts.memory)
    if opts.vcpus:
        vm = dataclasses.replace(vm, vcpus=opts.vcpus, topology=None)
    return vm


def _convert_and_copy(
    vm: SourceVM,
    target: Target,
    workdir: Path,
    opts: RunOptions,
    sink: EventSink,
    *,
    remote: bool = False,
) -> ConversionResult:
    overlays: list[Overlay] = [
        create_overlay(disk.endpoint, workdir, disk.name or f"disk{i}")
        for i, disk in enumerate(vm.disks)
    ]
    images = [ImageInfo(o.path, "qcow2", o.virtual_size, None) for o in overlays]
    labels = [_label(d.endpoint.uri) for d in vm.disks]
    sink(StageEvent("appliance", "starting the libguestfs appliance"))
    # A remote source's blocks are fetched over the network: what the appliance reads is kept
    # in the overlay (copy-on-read), so neither it nor the copy fetches a block twice.
    with open_session(images, readonly=False, labels=labels, copy_on_read=remote) as session:
        sink(StageEvent("inspect", "inspecting the guest"))
        oses = inspect_session(session)
        guest_os = choose_root(oses, opts.root, opts.ask_root)
        what = f"{guest_os.distro} {guest_os.major_version}.{guest_os.minor_version}"
        sink(StageEvent("convert", f"converting {guest_os.type} guest ({what}, {guest_os.root})"))
        caps = pick_converter(guest_os).convert(session, guest_os, vm, opts.convert)
        sink(StageEvent("trim", "discarding unused blocks"))
        trim_filesystems(session, oses)
    estimates = [measure(o, opts.out_format) for o in overlays]
    outputs = target.setup(vm, [o.virtual_size for o in overlays])
    check_free_space(outputs, estimates)
    sink(StageEvent("copy", "copying disks"))
    jobs = [
        CopyJob(
            o, out.path, opts.out_format, opts.preallocated, f"{vm.name}-{o.name}", opts.compressed
        )
        for o, out in zip(overlays, outputs, strict=True)
    ]
    copy_disks(jobs, sink)
    sink(StageEvent("finalize", "creating the guest on the target"))
    result = target.finalize(vm, guest_os, caps, outputs)
    return ConversionResult(vm=vm, os=guest_os, caps=caps, target=result)
