"""Discard unused blocks in the overlay before copying, so deleted files are not copied.

The overlay is a qcow2 opened with discard enabled: fstrim inside the guest filesystems turns
free space into unallocated (zero) clusters, which the copier then skips.
"""

from __future__ import annotations

import logging

from vmshift.guest.session import GuestSession

log = logging.getLogger(__name__)

TRIMMABLE = {"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "ntfs", "f2fs"}


def trim_filesystems(session: GuestSession) -> None:
    g = session.g
    g.umount_all()
    for device, fstype in sorted(g.list_filesystems().items()):
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
