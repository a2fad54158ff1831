"""Rename block devices: sdX/hdX/xvdX in the guest's files become the converted guest's names.

A guest that names its disks by kernel name (old VMware installs: root=/dev/sda1) stops booting
when the disks move to virtio-blk and become vdX. Every file that names a disk is edited:
fstab (UUID= where the filesystem has a unique one, else the new name), crypttab, the kernel
command line wherever it is kept (/etc/default/grub, the generated grub.cfg, BLS entries, grubenv,
grub1's menu.lst, SUSE's /etc/sysconfig/bootloader, /etc/kernel/cmdline), grub's device.map, LVM
filters, the resume device of the initramfs. The kernel command line gets new names, not UUID=:
a kernel booted without an initramfs cannot resolve UUID=.

Caches that remember device names or bus IDs (blkid, LVM's .cache and its devices file) are
removed; LVM and blkid rebuild them on the new machine.

The name mapping itself is devmap.py's (pure, unit-tested). consoles.py reuses the file lists
and the edit helpers here.
"""

from __future__ import annotations

import functools
import logging
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vmshift.convert.linux import devmap
from vmshift.convert.linux.context import LinuxGuest
from vmshift.model.vm import DiskEndpoint, SourceDisk

log = logging.getLogger(__name__)

STEP = "devices"

# Files that hold a kernel command line (or a bootloader's view of the disks) as free text.
CMDLINE_FILES = (
    "/etc/default/grub",
    "/etc/sysconfig/grub",  # RHEL 7: usually a link to /etc/default/grub
    "/etc/kernel/cmdline",  # kernel-install writes new BLS entries from it
    "/etc/sysconfig/bootloader",  # SUSE: DEFAULT_APPEND, FAILSAFE_APPEND
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/boot/grub/menu.lst",
    "/boot/grub/grub.conf",
    "/etc/grub.conf",
    "/etc/lilo.conf",
    "/boot/extlinux/extlinux.conf",
    "/boot/syslinux/syslinux.cfg",
)
CMDLINE_GLOBS = (
    "/boot/efi/EFI/*/grub.cfg",
    "/boot/efi/EFI/*/grub.conf",
    "/boot/loader/entries/*.conf",
    "/boot/efi/loader/entries/*.conf",
)
GRUBENV_FILES = ("/boot/grub/grubenv", "/boot/grub2/grubenv")
GRUBENV_GLOBS = ("/boot/efi/EFI/*/grubenv",)
# More files that name disks (not kernel command lines).
DEVICE_FILES = (
    "/boot/grub/device.map",
    "/boot/grub2/device.map",
    "/etc/initramfs-tools/conf.d/resume",  # RESUME=/dev/sda5
    "/etc/uswsusp.conf",  # resume device = /dev/sda5
)
DEVICE_GLOBS = ("/boot/efi/EFI/*/device.map", "/etc/dracut.conf.d/*.conf")
LVM_CONFIGS = ("/etc/lvm/lvm.conf", "/etc/lvm/lvmlocal.conf")
# Caches of device names and what they hold; their tools rebuild them.
CACHES = (
    "/etc/blkid.tab",
    "/etc/blkid.tab.old",
    "/etc/blkid/blkid.tab",
    "/etc/blkid/blkid.tab.old",
    "/etc/lvm/cache/.cache",
)
# LVM >= 2.03.12 only looks at the PVs listed here, by WWID or serial when the disk had one:
# virtio-blk disks have neither, so the root VG would vanish. Without the file LVM scans all
# devices; `vgimportdevices -a` recreates it on the new machine.
LVM_DEVICES_FILE = "/etc/lvm/devices/system.devices"
_APPLIANCE_DEVICE = re.compile(r"^(?P<disk>/dev/(?:sd|vd|hd|xvd)[a-z]+)(?P<part>\d+)?$")
_FSTAB_TYPES_WITHOUT_UUID_SPEC = {"crypto_LUKS", "LVM2_member", "linux_raid_member", "unknown", ""}


@dataclass(frozen=True)
class _Volume:
    appliance: str  # /dev/sda1 inside the appliance (= source order)
    target: str  # /dev/vda1 on the converted guest
    fstype: str
    uuid: str


def rename_block_devices(guest: LinuxGuest) -> None:
    """Make every guest file that names a disk name the converted guest's disk instead."""
    g = guest.g
    appliance = [str(d) for d in g.list_devices()]
    # The converted guest gets the source disks in order; vm.disks says what they were on.
    disks = list(guest.vm.disks) or [SourceDisk(DiskEndpoint(d, "raw", 0)) for d in appliance]
    ide = devmap.ide_prefix(guest.family, guest.os.distro, guest.os.major_version)
    text_files = kernel_cmdline_files(guest) + existing(guest, DEVICE_FILES, DEVICE_GLOBS)
    envs = grubenv_files(guest)
    lvm = existing(guest, LVM_CONFIGS)
    fstab = existing(guest, ("/etc/fstab",))  # [] or [its real path]
    crypttab = existing(guest, ("/etc/crypttab",))
    every = (*fstab, *crypttab, *text_files, *envs, *lvm)
    texts = {path: read(guest, path) or "" for path in every}
    used = set().union(*(devmap.device_names(t) for t in texts.values()))
    mapping = devmap.device_map(
        disks, guest.block_bus, ide=ide, removables=guest.vm.removables, used=used
    )
    changes = devmap.renames(mapping)
    log.info("block device map: %s", ", ".join(f"{s} -> {d}" for s, d in sorted(mapping.items())))
    _warn_unknown(guest, texts, mapping)

    targets = devmap.target_names(len(disks), guest.block_bus, ide)
    volumes = _volumes(guest, appliance, targets)
    for path in fstab:
        _fstab(guest, path, texts[path], mapping, volumes)
    if changes:
        rename = functools.partial(devmap.rename_devices, mapping=changes)
        luks = {v.target: v.uuid for v in volumes if v.fstype == "crypto_LUKS"}
        for path in crypttab:
            new = devmap.rewrite_crypttab(texts[path], changes, luks)
            _save(guest, path, texts[path], new, _what(texts[path], changes))
        for path in text_files:
            _save(guest, path, texts[path], rename(texts[path]), _what(texts[path], changes))
        for path in envs:
            edit_grubenv(
                guest, path, rename, STEP, "device names changed in kernelopts", block=texts[path]
            )
        for path in lvm:
            new = devmap.rewrite_lvm_filters(texts[path], changes)
            _save(guest, path, texts[path], new, "filters: patterns for the new disk names added")
    remove_caches(guest, STEP)
    if existing(guest, (LVM_DEVICES_FILE,)):
        guest.set_aside(LVM_DEVICES_FILE, STEP, "LVM devices file lists the PVs by old disk IDs")


def _save(guest: LinuxGuest, path: str, old: str, new: str, what: str) -> None:
    if new != old:
        guest.write(path, new, STEP, what)


# --- what the guest has --------------------------------------------------------------------


def existing(guest: LinuxGuest, paths: Iterable[str], globs: Iterable[str] = ()) -> list[str]:
    """The regular files among paths and glob matches, symlinks resolved, each once.

    One lstatnslist per directory instead of an is_file per path: each appliance round trip
    counts under TCG, and most of the candidates do not exist."""
    g = guest.g
    candidates = list(paths)
    for pattern in globs:
        try:
            candidates.extend(sorted(str(p) for p in g.glob_expand(pattern)))
        except RuntimeError:
            continue
    by_dir: dict[str, list[str]] = {}
    for path in candidates:
        parent, _, name = path.rpartition("/")
        by_dir.setdefault(parent or "/", []).append(name)
    kinds: dict[str, int] = {}
    for parent, names in by_dir.items():
        try:
            stats = g.lstatnslist(parent, names)
        except RuntimeError:
            continue
        for name, st in zip(names, stats, strict=False):
            if int(st["st_ino"]) != -1:
                kinds[f"{parent.rstrip('/')}/{name}"] = stat.S_IFMT(int(st["st_mode"]))
    seen: dict[str, None] = {}
    for path in candidates:
        kind = kinds.get(path)
        if kind == stat.S_IFREG:
            seen.setdefault(path, None)
        elif kind == stat.S_IFLNK:
            try:
                if g.is_file(path, followsymlinks=True):
                    seen.setdefault(str(g.realpath(path)), None)
            except RuntimeError:
                continue
    return list(seen)


def read(guest: LinuxGuest, path: str) -> str | None:
    """A guest file's text, None if it is not a readable file."""
    return guest.read(path)


def kernel_cmdline_files(guest: LinuxGuest) -> list[str]:
    """Bootloader files and kernel command line settings (grubenv aside: see grubenv_files)."""
    return existing(guest, CMDLINE_FILES, CMDLINE_GLOBS)


def grubenv_files(guest: LinuxGuest) -> list[str]:
    """grub environment blocks: RHEL 8 keeps the command line there (kernelopts=)."""
    return existing(guest, GRUBENV_FILES, GRUBENV_GLOBS)


def _volumes(guest: LinuxGuest, appliance: list[str], targets: list[str]) -> list[_Volume]:
    """Every partition or whole disk that carries a filesystem, swap or LUKS header, with its
    converted name and UUID. A UUID that two devices share (a disk cloned onto another) is
    left out: UUID= would then pick either. What inspection already read is not asked again
    (list_filesystems would probe everything, LVM and md included: 20 s under TCG)."""
    g = guest.g
    known = {f.device: f for f in guest.os.filesystems}
    found: list[_Volume] = []
    for dev in [str(p) for p in g.list_partitions()] + appliance:
        m = _APPLIANCE_DEVICE.match(dev)
        if m is None or m["disk"] not in appliance:
            continue
        index = appliance.index(m["disk"])
        fs = known.get(dev)
        try:
            uuid = fs.uuid if fs is not None else str(g.vfs_uuid(dev))
            fstype = fs.type if fs is not None else (str(g.vfs_type(dev)) if uuid else "")
        except RuntimeError:
            continue
        if not uuid or index >= len(targets):
            continue
        part = int(m["part"]) if m["part"] else None
        found.append(_Volume(dev, devmap.device_path(targets[index], part), fstype, uuid))
    counts = Counter(v.uuid for v in found)
    for v in found:
        if counts[v.uuid] > 1:
            log.info("%s: UUID %s is not unique, not used", v.appliance, v.uuid)
    return [v for v in found if counts[v.uuid] == 1]


# --- edits ---------------------------------------------------------------------------------


def _fstab(
    guest: LinuxGuest, path: str, text: str, mapping: dict[str, str], volumes: list[_Volume]
) -> None:
    uuids = {v.target: v.uuid for v in volumes if v.fstype not in _FSTAB_TYPES_WITHOUT_UUID_SPEC}
    by_appliance = {v.appliance: v.uuid for v in volumes}
    mount_uuids = {
        mp: by_appliance[dev] for mp, dev in guest.os.mountpoints.items() if dev in by_appliance
    }
    new = devmap.rewrite_fstab(text, mapping, uuids, mount_uuids)
    names = ", ".join(sorted(devmap.device_names(text, comments=False))) or "bus paths"
    _save(guest, path, text, new, f"disks named by UUID= or their new names ({names})")


def edit(
    guest: LinuxGuest, path: str, transform: Callable[[str], str], step: str, what: str
) -> bool:
    """Rewrite a guest file through transform; True if it changed (and was written)."""
    text = read(guest, path)
    if text is None:
        return False
    new = transform(text)
    if new == text:
        return False
    guest.write(path, new, step, what)
    return True


def edit_grubenv(
    guest: LinuxGuest,
    path: str,
    transform: Callable[[str], str],
    step: str,
    what: str,
    *,
    block: str | None = None,
) -> bool:
    """edit() for a grub environment block, whose size must not change."""
    block = read(guest, path) if block is None else block
    if block is None:
        return False
    new = devmap.rewrite_grubenv(block, transform)
    if new is None:
        guest.warn(f"{path}: the edited variables no longer fit in the block; not changed")
        return False
    if new == block:
        return False
    guest.write(path, new, step, what)
    return True


def remove_caches(guest: LinuxGuest, step: str) -> None:
    for path in existing(guest, CACHES):
        try:
            guest.g.rm(path)
        except RuntimeError as exc:
            guest.warn(f"cannot remove {path}: {exc}")
            continue
        guest.note(step, "stale cache of device names removed", path)


def _what(old_text: str, changes: dict[str, str]) -> str:
    named = sorted(n for n in devmap.device_names(old_text) if n in changes)
    pairs = ", ".join(f"{n} -> {changes[n]}" for n in named)
    return f"device names changed ({pairs})" if pairs else "device names changed"


def _warn_unknown(guest: LinuxGuest, texts: dict[str, str], mapping: dict[str, str]) -> None:
    where: dict[str, list[str]] = {}
    for path, text in texts.items():
        for name in devmap.device_names(text, comments=False) - mapping.keys():
            where.setdefault(name, []).append(path)
    for name, paths in sorted(where.items()):
        guest.warn(
            f"/dev/{name} (named in {', '.join(paths)}) is not one of the guest's disks; "
            "it is left as it is: check it after conversion"
        )
