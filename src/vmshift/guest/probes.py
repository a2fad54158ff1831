"""What the appliance says of the guest's block devices, each asked once per session.

vfs_type, vfs_label, vfs_uuid and part_get_parttype each run a program in the appliance (0.15 s
and more apiece under TCG); one blkid answers all four. LUKS unlocking, inspection and
fstrim all walk the same devices, so they share these helpers and, within inspection, one
`Probes` dict of blkid's answers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any

# What blkid said of each device: a filesystem's TYPE, LABEL and UUID, a partition's
# PART_ENTRY_SCHEME, a disk's PTTYPE.
Probes = dict[str, dict[str, str]]


def blkid_tags(g: Any, dev: str, probes: Probes) -> dict[str, str]:
    """blkid's tags for a device; none for what it cannot take (a btrfs subvolume) or tell."""
    if dev not in probes:
        tags = try_call(g.blkid, dev) if dev.startswith("/dev/") else None
        probes[dev] = dict(tags or {})
    return probes[dev]


def try_call(func: Callable[..., Any], *args: Any) -> Any:
    """func(*args), or None when the appliance refuses."""
    try:
        return func(*args)
    except RuntimeError:
        return None


def listed(func: Callable[[], Any]) -> list[str]:
    """A listing call's answer (list_partitions, lvs ...), empty when it fails."""
    return [str(item) for item in try_call(func) or []]


def plain_devices(g: Any) -> list[str]:
    """Partitions, and whole disks that have none (a filesystem, LUKS volume or LVM PV straight
    on the disk)."""
    partitions = listed(g.list_partitions)
    whole = [d for d in listed(g.list_devices) if not any(p.startswith(d) for p in partitions)]
    return [*partitions, *whole]


def each_mounted(g: Any, devices: Iterable[str]) -> Generator[str, None, None]:
    """Each of `devices` that mounts, mounted read-only at / while the caller looks at it and
    unmounted before the next (what cannot be mounted is passed over, as inspect_os does).
    Use it under contextlib.closing, so that a caller that stops early unmounts too."""
    for dev in devices:
        try:
            g.mount_ro(dev, "/")
        except RuntimeError:
            continue
        try:
            yield dev
        finally:
            g.umount_all()
