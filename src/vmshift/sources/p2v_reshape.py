"""A P2V disk's new partition layout (p2v/layout.py), made on the conversion server.

The used data is first staged into a local qcow2 (`qemu-img convert` from the forwarded
export, which reads only what the client marks as data), so that nothing is sent twice;
then filesystems to be shrunk are shrunk offline in an appliance on the staged copy (e2fsck
-f and resize2fs, or ntfsresize); then virt-resize copies the staged disk into the new layout,
growing the partitions and filesystems that grow, shrinking the partitions whose filesystems
were shrunk, and leaving out deleted ones. The conversion then reads the result as a local
disk. Everything lives in the run's work directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vmshift import process
from vmshift.blockio.imageinfo import probe_image_as
from vmshift.errors import SourceError
from vmshift.guest.accel import detect_accelerator
from vmshift.guest.session import open_session
from vmshift.p2v.layout import Layout
from vmshift.p2v.machine import Disk

log = logging.getLogger(__name__)

SLACK = 1 << 20  # the new disk's size is rounded up by this: virt-resize aligns partitions


def _appliance_env() -> dict[str, str]:
    """virt-resize's environment: libguestfs under TCG where the host has no usable KVM (as
    vmshift's own appliances), the fixed appliance if the server set one."""
    env = dict(os.environ)
    if not detect_accelerator().is_kvm:
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


def _shrink_filesystems(staged: Path, disk: Disk, shrinks: list[tuple[int, int]]) -> None:
    parts = {p.number: p for p in disk.partitions}
    image = probe_image_as(staged, "qcow2")
    with open_session([image], readonly=False, labels=[disk.name]) as session:
        g = session.g
        for number, size in shrinks:
            device = f"/dev/sda{number}"  # the only disk in the appliance
            name, fstype = parts[number].name, parts[number].fstype
            try:
                if fstype in ("ext2", "ext3", "ext4"):
                    # e2fsck -f -p: resize2fs wants a forced check first; a filesystem with
                    # problems preening cannot fix is refused, not repaired by guesswork.
                    # (correct and forceall together are an error in libguestfs.)
                    g.e2fsck(device, correct=True)
                    g.resize2fs_size(device, size)
                elif fstype == "ntfs":
                    g.ntfsresize(device, size=size)
                else:
                    raise SourceError(f"{name}: {fstype} cannot be shrunk")
            except RuntimeError as exc:  # the tool's several lines, on one
                why = " ".join(str(exc).split())
                raise SourceError(f"{name}: shrinking its {fstype} failed: {why}") from exc
        g.sync()


def reshape(uri: str, disk: Disk, layout: Layout, workdir: Path) -> tuple[Path, int]:
    """The disk at uri in its new layout: (a qcow2 in workdir, its size)."""
    sizes = {p.number: p.size for p in disk.partitions}
    for number in (*(n for n, _ in layout.resize), *layout.delete):
        if number not in sizes or number < 1:
            raise SourceError(f"{disk.name}: no partition {number} to change")
    staged = workdir / f"p2v-{disk.name}-staged.qcow2"
    out = workdir / f"p2v-{disk.name}-resized.qcow2"
    try:
        try:
            process.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", uri, str(staged)])
        except process.CommandFailed as exc:
            raise SourceError(f"{disk.name}: staging its used data failed: {exc.message}") from exc
        shrinks = [(n, size) for n, size in layout.resize if size < sizes[n]]
        if shrinks:
            _shrink_filesystems(staged, disk, shrinks)
        new_size = layout.new_size(disk.size, sizes) + SLACK
        process.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out), str(new_size)])
        _virt_resize(staged, out, disk, layout, shrinks)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        staged.unlink(missing_ok=True)  # as large as the used data: not kept
    return out, new_size


def _virt_resize(
    staged: Path, out: Path, disk: Disk, layout: Layout, shrinks: list[tuple[int, int]]
) -> None:
    """virt-resize staged into out's new layout: each resized partition's filesystem is made
    to fill it ("expanded"), the shrunk ones' too (already shrunk to their size)."""
    sizes = {p.number: p.size for p in disk.partitions}
    argv = ["virt-resize", "--machine-readable", "--format", "qcow2", "--output-format", "qcow2",
            "--no-extra-partition"]  # fmt: skip
    ntfs = {p.number for p in disk.partitions if p.fstype == "ntfs"}
    if any(n in ntfs for n, _ in shrinks):
        # ntfsresize leaves a volume it shrank marked for a check by Windows' chkdsk, and
        # virt-resize's own ntfsresize (the expansion) refuses such a volume without this
        argv.append("--ntfsresize-force")
    changes = []
    for number, size in layout.resize:
        option = "--resize-force" if size < sizes[number] else "--resize"
        changes += [option, f"/dev/sda{number}={size >> 20}M"]
    for number in layout.delete:
        changes += ["--delete", f"/dev/sda{number}"]
    log.info("new layout of %s: %s", disk.name, " ".join(changes))
    try:
        process.run([*argv, *changes, str(staged), str(out)], env=_appliance_env())
    except process.CommandFailed as exc:
        why = _virt_resize_error(exc.stderr) or exc.message
        raise SourceError(f"{disk.name}: the new partition layout failed: {why}") from exc


def _virt_resize_error(stderr: str) -> str | None:
    """virt-resize's own error, on one line: its `virt-resize: error:` line and those that
    continue it (libguestfs quotes the failing tool's several lines), not its advice to run
    it again with -v -x."""
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("virt-resize: error:"):
            said = [line.removeprefix("virt-resize: error:").strip()]
            for more in lines[index + 1 :]:
                if not more.strip():
                    break
                said.append(more.strip())
            return " ".join(said)
    return None
