"""The libguestfs handle of one conversion: launched once, shared by inspection and conversion.

Guest filesystems are only ever touched inside the libguestfs appliance, never mounted on the
host kernel: the filesystems are untrusted and may be crafted to exploit a kernel driver.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmshift.blockio.imageinfo import ImageInfo
from vmshift.blockio.overlay import CLUSTER_SIZE
from vmshift.errors import EnvironmentProblem, InspectionError, SourceError
from vmshift.guest.accel import detect_accelerator
from vmshift.guest.appliance import pvh_appliance
from vmshift.guest.probes import Probes
from vmshift.model.devnames import scsi_disk_name

log = logging.getLogger(__name__)

# The kernel's line for a failed read or write of a disk ("I/O error, dev sda, sector 2048").
_IO_ERROR = re.compile(r"I/O error, dev (sd[a-z]+), sector (\d+)")
# guestfsd's link to libguestfs's drive N (the order drives were added) and its kernel name.
_DRIVE_LINK = re.compile(r"scsi-0QEMU_QEMU_HARDDISK_hd(\d+) -> \.\./\.\./(sd[a-z]+)$", re.M)


@dataclass(frozen=True)
class AttachedDisk:
    image: ImageInfo
    readonly: bool
    appliance_device: str  # /dev/sda, /dev/sdb ... inside the appliance
    label: str  # how to name this disk to the user: the source file, not an overlay


def _import_guestfs() -> Any:
    try:
        import guestfs
    except ImportError as exc:
        raise EnvironmentProblem(
            "the libguestfs Python binding (python3-guestfs) is not importable",
            hint="run 'make setup', or create the venv with --system-site-packages",
        ) from exc
    return guestfs


class ListingsOnce:
    """A launched libguestfs handle whose two device listings are asked once.

    list_devices and list_partitions each wait for udev in the appliance (0.2 s apiece under
    TCG), and LUKS unlocking, inspection, conversion and fstrim each ask them again. Nothing
    vmshift does in a session adds a disk or changes a partition table (opened LUKS volumes
    and logical volumes are in neither list), so the first answers stand. Everything else
    goes to the handle."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._lists: dict[str, list[str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def _once(self, name: str) -> list[str]:
        if name not in self._lists:
            self._lists[name] = [str(d) for d in getattr(self._handle, name)()]
        return list(self._lists[name])

    def list_devices(self) -> list[str]:
        return self._once("list_devices")

    def list_partitions(self) -> list[str]:
        return self._once("list_partitions")


class GuestSession:
    """One launched libguestfs appliance with a guest's disks attached."""

    def __init__(
        self,
        handle: Any,
        disks: Sequence[AttachedDisk],
        accelerator: str,
        scratch: Path | None = None,
    ) -> None:
        self.g = handle
        self.disks = tuple(disks)
        self.accelerator = accelerator
        # Where host-side temporary files of inspection and conversion go (hive copies,
        # archives for the guest): the run's work directory, or None for $TMPDIR.
        self.scratch = scratch
        # blkid's answers, device by device, shared by LUKS unlocking and inspection.
        self.probes: Probes = {}

    def close(self) -> None:
        try:
            self.g.shutdown()
        except RuntimeError as exc:
            log.debug("appliance shutdown: %s", exc)
        self.g.close()

    def device_to_disk(self, device: str) -> AttachedDisk | None:
        """The attached disk that holds an appliance device such as /dev/sdb2."""
        try:
            whole = self.g.part_to_dev(device)
        except RuntimeError:
            whole = device
        for disk in self.disks:
            if disk.appliance_device == whole:
                return disk
        return None

    def unreadable(self) -> SourceError | None:
        """The error for a disk the appliance failed to read, or None. Asked when inspection
        or conversion fails: a source whose reads fail looks like a disk without an OS, a
        damaged filesystem or a broken guest tool, and only the appliance's kernel log tells
        them apart."""
        try:
            kernel_log = str(self.g.debug("sh", ["dmesg"]))
            links = str(self.g.debug("sh", ["ls -l /dev/disk/by-id"]))
        except RuntimeError as exc:
            log.debug("cannot read the appliance's kernel log: %s", exc)
            return None
        return read_error(kernel_log, links, self.disks)


def read_error(kernel_log: str, by_id: str, disks: Sequence[AttachedDisk]) -> SourceError | None:
    """The first read error the kernel logged on one of `disks`. The kernel names disks in
    the order its probes finish, so its sdb may be libguestfs's /dev/sda; the by-id links
    (`ls -l /dev/disk/by-id`), named for libguestfs's drive numbers, say which is which."""
    drives = {m.group(2): int(m.group(1)) for m in _DRIVE_LINK.finditer(by_id)}
    for m in _IO_ERROR.finditer(kernel_log):
        index = drives.get(m.group(1))
        if index is not None and index < len(disks):
            return SourceError(
                f"{disks[index].label}: I/O error at sector {m.group(2)}:"
                " the source disk cannot be read"
            )
    log.debug("no read error on the guest's disks in the appliance's kernel log")
    return None


def _configure(g: Any, kvm: bool, readonly: bool, fast: bool) -> Path | None:
    """Set the handle up; the fixed appliance it boots (fast and one could be made), or None."""
    # libguestfs's own memsize (1280 MiB), smp (1) and kernel command line are kept: under TCG
    # neither 512-1024 MiB nor mitigations=off started it measurably sooner (about 11 s of qemu
    # CPU time each), and 2 vCPUs cost 2-3 s more CPU to start with no gain on forks or gzip.
    if not kvm:
        g.set_backend_settings(["force_tcg"])
    direct = str(g.get_backend()).startswith("direct")
    if not readonly and direct:
        # The appliance's disks say they discard in 4 KiB units, so the kernel splits a long
        # fstrim range (at 1 GiB) on 4 KiB boundaries, and the overlay cluster astride each
        # split is only ever half discarded: it stays allocated from the source, and the copy
        # reads it (64 KiB per GiB of free space, 128 MiB on a 2 TiB disk). In whole clusters,
        # every split falls on a cluster boundary.
        g.config("-global", f"scsi-hd.discard_granularity={CLUSTER_SIZE}")
    # A fixed appliance the user chose (LIBGUESTFS_PATH) is kept as it is.
    chosen = any((Path(p) / "README.fixed").is_file() for p in str(g.get_path()).split(":"))
    appliance = None
    if fast and direct and not chosen:
        appliance = pvh_appliance(str(g.get_cachedir()), os.getuid())
    if appliance is not None:
        g.set_path(str(appliance))
    return appliance


def _add_drives(
    g: Any, images: Sequence[ImageInfo], names: list[str], readonly: bool, copy_on_read: bool
) -> list[AttachedDisk]:
    attached: list[AttachedDisk] = []
    for index, image in enumerate(images):
        if readonly:
            g.add_drive_opts(str(image.path), format=image.format, readonly=True)
        else:
            # Writable drives are always overlays: let fstrim free their clusters.
            g.add_drive_opts(
                str(image.path),
                format=image.format,
                discard="besteffort",
                copyonread=copy_on_read,
            )
        device = f"/dev/{scsi_disk_name(index)}"
        attached.append(AttachedDisk(image, readonly, device, names[index]))
    return attached


@contextmanager
def open_session(
    images: Sequence[ImageInfo],
    *,
    readonly: bool = True,
    labels: Sequence[str] | None = None,
    copy_on_read: bool = False,
    scratch: Path | None = None,
) -> Iterator[GuestSession]:
    """Attach images (already checked by probe_image) and launch the appliance.

    labels name the disks in messages (an overlay is reported as the source it stands for).
    copy_on_read (writable overlays only): every cluster read from an overlay's backing file
    is written into the overlay, so it is read from the backing file once.
    scratch: the run's work directory, for libguestfs's own temporary directory and the
    session's host-side temporary files, so that a run killed outright leaves them where the
    next run's sweep of dead work directories finds them (None: $TMPDIR).
    """
    names = list(labels) if labels is not None else [str(i.path) for i in images]
    guestfs = _import_guestfs()
    accel = detect_accelerator()
    fast = True
    while True:
        g = guestfs.GuestFS(python_return_dict=True)
        appliance = _configure(g, accel.is_kvm, readonly, fast)
        if scratch is not None:
            g.set_tmpdir(str(scratch))
        log.info("launching the libguestfs appliance (%s)", accel.name.upper())
        try:
            attached = _add_drives(g, images, names, readonly, copy_on_read)
            g.launch()
            break
        except RuntimeError as exc:
            g.close()
            if appliance is not None:
                # Whatever the reason, the usual appliance is the one to try next.
                log.info("the appliance with the uncompressed kernel failed: %s", exc)
                fast = False
                continue
            raise InspectionError(
                f"the libguestfs appliance failed to start: {exc}",
                hint="run 'libguestfs-test-tool' to see why",
            ) from exc
        except BaseException:
            g.close()
            raise
    g = ListingsOnce(g)
    try:
        # Device names in the appliance follow the order drives were added, but ask to be sure.
        devices = list(g.list_devices())
        attached = [
            AttachedDisk(d.image, d.readonly, devices[i], d.label) if i < len(devices) else d
            for i, d in enumerate(attached)
        ]
        session = GuestSession(g, attached, accel.name, scratch)
    except BaseException:
        g.close()
        raise
    try:
        yield session
    finally:
        session.close()
