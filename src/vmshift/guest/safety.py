"""Checks a converter makes before it changes anything in the guest, as virt-v2v makes them.

**Filesystems** (`check_filesystems`, before the first read-write mount): every filesystem of
the OS being converted is checked without being repaired. vmshift never repairs a guest
filesystem: a repair is the owner's decision, made on the source, and a conversion that quietly
carried one into the copy would hide that the source is damaged. A filesystem is refused as
dirty when:
- ext2/3/4: its superblock records errors (the kernel or an earlier fsck found corruption:
  state "... with errors"), or a full read-only check (`e2fsck -f -n`, what virt-v2v runs)
  reports problems, or, where no full check can run, it has no journal and was not unmounted
  cleanly. A journal that only needs replaying after an unclean shutdown is not dirty: the
  guest's kernel replays it at its next mount, and mounting replays it into the overlay first
  (inspection's read-only mount already did; so does virt-v2v).
  The full check: libguestfs >= 1.56 has `e2fsck(forceno=True)`; 1.48 (Debian 12) only has
  repairing modes (-p, -y), so vmshift runs the appliance's own `e2fsck -f -n` through
  libguestfs's `debug sh` call, which runs a command in the appliance (not in the guest).
  Where neither exists, the superblock is all that is checked, and -v says so.
- xfs: `xfs_repair -n` reports problems (after a read-only mount replays the log), when the
  appliance has xfs tools.
- ntfs: `ntfs-3g.probe --readwrite` refuses it: hibernated or Fast Startup (14), not cleanly
  unmounted or marked dirty by Windows (15), inconsistent (13). A hibernated Windows system
  volume is refused by the Windows converter first, in Windows' own words.
- btrfs: a read-only scrub finds errors, where libguestfs has `btrfs_scrub_full` (>= 1.56).
Every dirty filesystem is named in the one error line, with what was found.

**Free space** (`check_guest_free_space`, right after the read-write mount, before the first
write): virt-v2v's figures (convert/convert.ml, check_guest_free_space): 100 MiB on / (files,
drivers and guest agents are installed there), 50 MiB on /boot (the initramfs is rebuilt
there, typically 20-30 MiB), 10 MiB on any other mounted filesystem, and 100 free inodes
where the filesystem counts them. (virt-v2v applies its 50 MiB to / when there is no separate
/boot and then asks 10 MiB of a separate /boot; vmshift asks 100 MiB of / and 50 MiB of /boot,
whichever holds it.) Free means free to root, as the conversion writes as root.

**Work directory** (`check_workdir_space`, before the overlays are made): its filesystem must
have 1 GiB free, virt-v2v's floor for its temporary directory (v2v/v2v.ml,
check_host_free_space): the overlays hold every change made to the guest. The overlay of a disk
read over the network (an NBD endpoint: vSphere, SSH) also keeps every block the appliance
reads (copy-on-read), which no source reports in advance: 110 MiB for the benchmark's Debian
guest (docs/benchmarks.md), more for Windows (hives, driver stores), so such a source needs
another 1 GiB.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmshift.errors import ConversionError, EnvironmentProblem
from vmshift.guest.session import GuestSession
from vmshift.model.inspection import OperatingSystem

log = logging.getLogger(__name__)

MIB = 1 << 20
ROOT_NEEDS = 100 * MIB
BOOT_NEEDS = 50 * MIB
OTHER_NEEDS = 10 * MIB
INODES_NEEDED = 100
WORKDIR_FLOOR = 1 << 30
REMOTE_READS = 1 << 30

EXT = {"ext2", "ext3", "ext4"}
NTFS_PROBE = {
    13: "ntfs-3g finds it inconsistent (run chkdsk on the source)",
    14: "Windows is hibernated on it, or was shut down with Fast Startup on",
    15: "it was not cleanly unmounted, or Windows marked it dirty (run chkdsk on the source)",
}
_STATUS = "vmshift-e2fsck-status="
# e2fsck -n lines that are not findings: banner, passes, the "no" answers, the summary.
_E2FSCK_NOISE = re.compile(
    r"e2fsck \d|Pass \d|\w[\w ]*\? no$|Warning: skipping journal recovery|.*: \*+ WARNING|"
    r".*: \d+/\d+ files |" + re.escape(_STATUS)
)


@dataclass(frozen=True)
class Finding:
    device: str
    fstype: str
    mountpoint: str | None
    what: str

    def __str__(self) -> str:
        where = f", the guest's {self.mountpoint}" if self.mountpoint else ""
        return f"{self.device} ({self.fstype}{where}): {self.what}"


def check_filesystems(session: GuestSession, os: OperatingSystem) -> None:
    """Refuse the guest when a filesystem of this OS is dirty or corrupt; repair nothing."""
    g = session.g
    g.umount_all()
    mounted_at = {dev: mp for mp, dev in os.mountpoints.items()}
    findings: list[Finding] = []
    for fs in os.filesystems:
        what = _check(session, fs.device, fs.type)
        if what:
            findings.append(Finding(fs.device, fs.type, mounted_at.get(fs.device), what))
    if findings:
        raise ConversionError(
            "; ".join(str(f) for f in findings),
            hint="repair it on the source (boot the guest and let fsck or chkdsk run, or shut "
            "it down cleanly), then convert again; vmshift does not repair guest filesystems",
        )


def _check(session: GuestSession, device: str, fstype: str) -> str | None:
    g = session.g
    try:
        if fstype in EXT:
            return _check_ext(g, device, _kernel_node(session, device))
        if fstype == "xfs":
            return _check_xfs(g, device)
        if fstype == "ntfs":
            status = int(g.ntfs_3g_probe(True, device))
            if status:
                return NTFS_PROBE.get(status, f"ntfs-3g cannot mount it read-write ({status})")
        if fstype == "btrfs":
            return _check_btrfs(g, device)
    except RuntimeError as exc:
        return f"it cannot be checked: {exc}"
    finally:
        g.umount_all()
    return None


def _check_ext(g: Any, device: str, node: str) -> str | None:
    sb = dict(g.tune2fs_l(device))
    features = sb.get("Filesystem features", "").split()
    if "needs_recovery" in features:
        g.mount_ro(device, "/")  # the kernel replays the journal into the overlay
        g.umount_all()
        sb = dict(g.tune2fs_l(device))
    state = sb.get("Filesystem state", "").strip()
    details: list[str] = []
    if "error" in state:
        recorded = f"superblock state '{state}'"
        if sb.get("FS Error count"):
            recorded += f", {sb['FS Error count'].strip()} errors recorded"
        if sb.get("First error function"):
            recorded += f", the first in {sb['First error function'].strip()}"
        details.append(recorded)
    full = _e2fsck_readonly(g, device, node)
    if full:
        details.append(f"e2fsck -n: {full}")
    if details:
        return f"the filesystem has errors ({'; '.join(details)})"
    if full is None and "has_journal" not in features and "not clean" in state:
        return "it was not unmounted cleanly: the guest is running, or went down uncleanly"
    return None


def _e2fsck_readonly(g: Any, device: str, node: str) -> str | None:
    """`e2fsck -f -n`: "" when clean, what it found when not, None when it cannot run here;
    RuntimeError when e2fsck itself fails. node: the device as the appliance's kernel names
    it, for `debug sh`."""
    if "forceno" in inspect.signature(g.e2fsck).parameters:
        try:
            g.e2fsck(device, forceno=True)
        except RuntimeError as exc:
            return _findings(str(exc)) or str(exc)
        return ""
    dev = shlex.quote(node)
    script = (
        f"if test -b {dev}; then e2fsck -f -n {dev} 2>&1; echo {_STATUS}$?; "
        f"else echo {_STATUS}nodev; fi"
    )
    try:
        output = str(g.debug("sh", [script]))
    except RuntimeError as exc:
        output = f"{exc} {_STATUS}nodev"
    status = output.rsplit(_STATUS, 1)[-1].strip()
    if status == "nodev":
        log.info("%s: no read-only e2fsck here (%s): superblock checked", device, output)
        return None
    if status == "0":
        return ""
    if status.isdigit() and int(status) & 4:
        return _findings(output) or "errors left uncorrected"
    raise RuntimeError(f"e2fsck -n failed ({status}): {_findings(output) or output.strip()}")


def _kernel_node(session: GuestSession, device: str) -> str:
    """The appliance kernel's node of a libguestfs device name. libguestfs names the disks
    sda, sdb ... in the order they were added, whatever letters the kernel gave them (it can
    give the appliance's own disk sda), and its direct backend gives the index-th disk the
    serial hd<index>; LVs and device-mapper names are the kernel's own."""
    for index, disk in enumerate(session.disks):
        whole = disk.appliance_device
        part = device.removeprefix(whole)
        if device.startswith(whole) and (part == "" or part.isdigit()):
            node = f"/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_hd{index}"
            return f"{node}-part{part}" if part else node
    return device


def _findings(output: str) -> str:
    """The first problems e2fsck reports, on one line."""
    lines = (" ".join(line.split()) for line in output.splitlines())
    found = [line.rstrip(".") for line in lines if line and not _E2FSCK_NOISE.match(line)]
    return ", ".join(found[:2])


def _check_xfs(g: Any, device: str) -> str | None:
    if not g.feature_available(["xfs"]):
        log.info("%s: the appliance has no xfs tools: not checked", device)
        return None
    g.mount_ro(device, "/")  # only the kernel replays an XFS log
    g.umount_all()
    if int(g.xfs_repair(device, nomodify=True, noprefetch=True)) != 0:
        return "xfs_repair -n found errors"
    return None


def _check_btrfs(g: Any, device: str) -> str | None:
    if not hasattr(g, "btrfs_scrub_full"):
        log.info("%s: this libguestfs has no read-only btrfs scrub: not checked", device)
        return None
    g.mount_ro(device, "/")
    try:
        g.btrfs_scrub_full("/", readonly=True)
    except RuntimeError as exc:
        return f"btrfs scrub found errors: {exc}"
    return None


def check_guest_free_space(g: Any, os: OperatingSystem) -> None:
    """Refuse when a mounted filesystem of the guest has too little room to convert in."""
    short = list(_shortfalls(g, os))
    if short:
        raise ConversionError(
            "; ".join(short),
            hint="make room in the guest (old kernels, logs, caches) or grow the filesystem "
            "on the source, then convert again",
        )


def _shortfalls(g: Any, os: OperatingSystem) -> Iterator[str]:
    mounted: dict[str, str] = dict(g.mountpoints())  # device -> mountpoint, as mounted now
    has_boot = "/boot" in mounted.values()
    for device, mp in sorted(mounted.items(), key=lambda item: item[1]):
        need, why = _needs(mp, os.type, has_boot)
        try:
            st = g.statvfs(mp)
        except RuntimeError as exc:
            log.info("cannot statvfs %s: %s", mp, exc)
            continue
        free = st["bfree"] * st["frsize"]
        where = f"the guest's {mp} ({device})"
        if free < need:
            yield (
                f"{where} has {free / MIB:.1f} MiB free; converting it needs "
                f"{need // MIB} MiB ({why})"
            )
        if st["files"] > 0 and st["ffree"] < INODES_NEEDED:
            yield f"{where} has {st['ffree']} free inodes; converting it needs {INODES_NEEDED}"


def _needs(mountpoint: str, os_type: str, has_boot: bool) -> tuple[int, str]:
    if mountpoint == "/":
        if os_type == "windows":
            return ROOT_NEEDS, "drivers and first-boot scripts are installed there"
        if has_boot:
            return ROOT_NEEDS, "packages and files are changed there"
        return ROOT_NEEDS, "packages and files are changed and the initramfs rebuilt there"
    if mountpoint == "/boot":
        return BOOT_NEEDS, "the initramfs is rebuilt there"
    return OTHER_NEEDS, "files may be written there"


def check_workdir_space(parent: Path | None, *, remote: bool) -> None:
    """Refuse to start when the work directory's filesystem cannot hold what the overlays may
    grow to (parent None: the temporary directory, as the work directory is made there)."""
    base = parent if parent is not None else Path(tempfile.gettempdir())
    need = WORKDIR_FLOOR + (REMOTE_READS if remote else 0)
    try:
        st = os.statvfs(base)
    except OSError as exc:
        raise EnvironmentProblem(
            f"{base}: cannot hold the work directory: {exc.strerror}",
            hint="point --workdir (or TMPDIR) at an existing directory",
        ) from exc
    free = st.f_bavail * st.f_frsize
    if free < need:
        what = "the overlays of the guest's disks"
        if remote:
            what += " and the blocks the appliance reads from the remote source"
        raise EnvironmentProblem(
            f"{base}: not enough free space for the work directory: {free / MIB:.0f} MiB free, "
            f"{need // MIB} MiB needed ({what})",
            hint="point --workdir (or TMPDIR) at a filesystem with more room",
        )
