"""Discard unused blocks in the overlay before copying, so deleted files are not copied.

The overlay is a qcow2 opened with discard enabled: fstrim inside the guest filesystems turns
free space into unallocated (zero) clusters, which the copier then skips.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from vmshift.guest.probes import blkid_tags, plain_devices
from vmshift.guest.session import GuestSession
from vmshift.model.inspection import OperatingSystem

log = logging.getLogger(__name__)

TRIMMABLE = {"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "ntfs", "f2fs"}


def trim_filesystems(session: GuestSession, oses: Sequence[OperatingSystem]) -> None:
    g = session.g
    g.umount_all()
    for device, fstype in sorted(_filesystems(session, oses).items()):
        if fstype not in TRIMMABLE:
            continue
        try:
            g.mount(device, "/")
        except RuntimeError as exc:
            log.info("not trimming %s: cannot mount it: %s", device, exc)
            continue
        try:
            g.fstrim("/")
            log.info("trimmed free space on %s", device)
        except RuntimeError as exc:
            # Some filesystems or drivers cannot discard; the copy is just bigger.
            log.info("fstrim on %s failed: %s", device, exc)
        finally:
            g.umount_all()


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
