"""Discard unused blocks in the overlay before copying, so deleted files are not copied.

The overlay is a qcow2 opened with discard enabled: fstrim inside the guest filesystems turns
free space into unallocated (zero) clusters, which the copier then skips.

The converters leave the guest's filesystems mounted, and synced (their last step): the
journal is committed, so the blocks conversion freed (removed packages, replaced files) are
free on disk, and fstrim discards them where they are mounted. Only the filesystems nothing
mounted (a data disk, a partition no fstab names) are then mounted one by one. Trimming in
place saves a mount and an unmount per filesystem, about 0.3 s each under TCG
(docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from vmshift.guest.probes import blkid_tags, plain_devices
from vmshift.guest.session import GuestSession
from vmshift.model.inspection import OperatingSystem

log = logging.getLogger(__name__)

TRIMMABLE = {"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "ntfs", "f2fs"}


def trim_filesystems(session: GuestSession, oses: Sequence[OperatingSystem]) -> None:
    g = session.g
    mounted: dict[str, str] = dict(g.mountpoints())  # device -> mountpoint, as conversion left
    # Outermost first: the order does not matter to fstrim, only to the log's readability.
    for device, mountpoint in sorted(mounted.items(), key=lambda item: len(item[1])):
        _fstrim(g, device, mountpoint)
    g.umount_all()
    for device, fstype in sorted(_filesystems(session, oses).items()):
        if device in mounted or fstype not in TRIMMABLE:
            continue
        try:
            g.mount(device, "/")
        except RuntimeError as exc:
            log.info("not trimming %s: cannot mount it: %s", device, exc)
            continue
        try:
            _fstrim(g, device, "/")
        finally:
            g.umount_all()


def _fstrim(g: Any, device: str, mountpoint: str) -> None:
    try:
        g.fstrim(mountpoint)
        log.info("trimmed free space on %s", device)
    except RuntimeError as exc:
        # Some filesystems or drivers cannot discard; the copy is just bigger.
        log.info("fstrim on %s failed: %s", device, exc)


def _filesystems(session: GuestSession, oses: Sequence[OperatingSystem]) -> dict[str, str]:
    """The inspected OSes' filesystems, plus any other partition's (data disks).

    Not list_filesystems: it runs parted, sfdisk and the LVM, md and LDM scans again, ~10 s
    under TCG. Only a logical volume that no OS mounts goes untrimmed; the
    copy of it is then bigger, never wrong.
    """
    found = {fs.device: fs.type for os in oses for fs in os.filesystems}
    for dev in plain_devices(session.g):
        # blkid's answer from inspection's probes: nothing new is run for most devices.
        kind = blkid_tags(session.g, dev, session.probes).get("TYPE")
        if dev not in found and kind:  # none: an LVM PV's table, a BIOS boot partition ...
            found[dev] = kind
    return found
