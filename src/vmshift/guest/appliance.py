"""Start the libguestfs appliance sooner: its kernel booted uncompressed (PVH), an initrd that
loads only the modules the appliance needs, and a root whose /init makes udev replay only the
devices the appliance uses.

Under TCG about a quarter of the appliance's start (3 of 11-12 s on the machine in
docs/benchmarks.md) is SeaBIOS loading the compressed kernel and the kernel decompressing itself
(xz on Debian). QEMU boots an uncompressed ELF vmlinux directly at its PVH entry point when the
kernel has one (CONFIG_PVH, as Debian's has). So once libguestfs has built its supermin
appliance (kernel, initrd and root in CACHEDIR/.guestfs-UID/appliance.d), vmshift keeps an
uncompressed copy of that kernel beside it and hands libguestfs a fixed appliance (README.fixed)
made of that copy, a slimmer copy of the initrd and a link to the same root.

Supermin's initrd insmods, one by one before it mounts the root, every module its appliance
might need (52 on Debian 12); the ones for devices libguestfs never gives the appliance cost
about 1 s under TCG. The copy leaves those out, only where every module kept still has what
it depends on (their .modinfo says), and keeps the original initrd otherwise. The ones the
kernel asks for itself (fuse when ntfs-3g opens /dev/fuse, a filesystem at its mount) still
load from the root's /lib/modules.

The copy is named by a digest of libguestfs's kernel and initrd, not by their times: libguestfs
touches its appliance's files at each ordinary launch (virt-v2v's, or another tool's), and a
copy named by time would be made again after each of those. Anything missing or not
PVH-capable: None, and libguestfs starts as usual (which also builds its appliance for the
next run).

libguestfs's /init (in the root image) starts udev and has it replay the "add" event of every
device the kernel found, then waits for all of them: 4-5 s under TCG, nearly all of it for
devices nothing in the appliance uses (PCI functions, CPUs, memory blocks, consoles, input).
What the appliance needs from udev are the block devices (by-uuid links, device-mapper and LVM
nodes) and the virtio-serial port guestfsd talks through (/dev/virtio-ports/...); events that
appear later (an LV activated, an md array started) are handled whatever was replayed. So the
copy's root is a sparse copy of libguestfs's (about 650 MB, made once with cp and debugfs)
whose /init replays those two subsystems only; where that cannot be made (no debugfs, an
/init that does not read as expected), the copy links libguestfs's root instead. The copy is
named by the root's superblock too, which supermin's mke2fs makes anew (a random UUID) at
each rebuild.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from vmshift.formats.bzimage import has_pvh_entry, vmlinux
from vmshift.formats.cpio import CpioEntry, CpioError, newc_archive, read_archive
from vmshift.formats.initramfs import InitramfsError
from vmshift.formats.kmod import modinfo, module_name

log = logging.getLogger(__name__)

PREFIX = "vmshift-pvh-"
_PARTS = ("kernel", "initrd", "root")
# Changed whenever what is made from libguestfs's files changes, so that older copies go
# (the list of modules left out is part of the copy's digest too).
_RECIPE = b"vmshift fixed appliance 3: PVH kernel, slim initrd, root replaying block devices\n"
# libguestfs's /init line that replays every device, and what the copy's says instead.
UDEV_REPLAY = "udevadm trigger"
UDEV_REPLAY_USED = "udevadm trigger --subsystem-match=block --subsystem-match=virtio-ports"
_DEBUGFS = ("/usr/sbin/debugfs", "/sbin/debugfs")
_SUPERBLOCK = slice(1024, 2048)  # an ext2 superblock: its UUID and times, new at each mke2fs
# Modules for devices libguestfs's appliance does not have: its disks and its root are on
# virtio-scsi and it talks to the library over virtio-serial; no persistent memory, balloon,
# input, crypto or virtio-fs device, no IDE or virtio-blk disk, and vmshift starts it without
# a network (a session that needs one must start libguestfs's usual appliance: neither this
# initrd nor the root's narrowed udev replay would bring up its interface).
_NOT_NEEDED = frozenset({
    "libnvdimm", "nfit", "nd_btt", "nd_pmem", "nd_virtio", "virtio_pmem", "virtio_mem",
    "virtio_balloon", "virtio_input", "virtio_crypto", "crypto_engine", "virtio_net",
    "net_failover", "failover", "virtiofs", "fuse", "virtio_mmio", "virtio_dma_buf",
    "ata_piix", "libata", "virtio_blk", "crc_itu_t", "crc7", "crc8",
})  # fmt: skip


def pvh_appliance(cachedir: str, uid: int) -> Path | None:
    """A fixed appliance booting libguestfs's own kernel uncompressed, or None."""
    if platform.machine() != "x86_64":
        return None
    base = Path(cachedir) / f".guestfs-{uid}"
    built = base / "appliance.d"
    try:
        if not all((built / p).is_file() for p in _PARTS):
            return None
        kernel = (built / "kernel").read_bytes()
        initrd = (built / "initrd").read_bytes()
        with (built / "root").open("rb") as f:
            superblock = f.read(_SUPERBLOCK.stop)[_SUPERBLOCK]
        recipe = _RECIPE + " ".join(sorted(_NOT_NEEDED)).encode()
        parts = (recipe, kernel, initrd, superblock, str((built / "root").stat().st_size).encode())
        digest = hashlib.sha256(b"\0".join(parts)).hexdigest()
        final = base / f"{PREFIX}{digest[:24]}"
        if (final / "README.fixed").is_file():
            return final
        _make(built, kernel, initrd, final)
        _remove_others(base, final.name)
    except (OSError, InitramfsError) as exc:
        log.info("the appliance boots its compressed kernel: %s", exc)
        return None
    return final if (final / "README.fixed").is_file() else None


def slim_initrd(initrd: bytes) -> bytes:
    """Supermin's initrd without the modules in _NOT_NEEDED; InitramfsError if it is not
    one (an uncompressed cpio with /init and a /modules list) or a module kept needs one
    left out."""
    entries: list[CpioEntry] = []
    try:
        read_archive(initrd, 0, entries, keep=len(initrd))
    except CpioError as exc:
        raise InitramfsError(f"the initrd is not an uncompressed cpio archive: {exc}") from exc
    listed = [e for e in entries if e.path == "modules" and e.is_file]
    if not listed or not any(e.path == "init" for e in entries):
        raise InitramfsError("the initrd is not supermin's (no /init and /modules)")
    order = (listed[0].data or b"").decode().split()
    files = {e.path: e for e in entries}
    info: dict[str, dict[str, list[str]]] = {}
    for path in order:
        entry = files.get(path)
        if entry is None or entry.data is None:
            raise InitramfsError(f"the initrd lists {path} but does not hold it")
        try:
            info[path] = modinfo(entry.data)
        except ValueError as exc:
            raise InitramfsError(f"{path}: {exc}") from exc
    kept = [path for path in order if module_name(path) not in _NOT_NEEDED]
    _check_needs(order, kept, info)
    dropped = set(order) - set(kept)
    slim = [
        dataclasses.replace(e, data="".join(f"{p}\n" for p in kept).encode(), size=-1)
        if e.path == "modules"
        else e
        for e in entries
        if e.path not in dropped
    ]
    return newc_archive(slim)


def _check_needs(order: list[str], kept: list[str], info: dict[str, dict[str, list[str]]]) -> None:
    """InitramfsError if a module kept needs one left out: a dependency (depends=), or a soft
    dependency (softdep=, by module name or alias, as ext4's "pre: crypto-crc32c") that the
    whole initrd provides and the kept modules do not."""

    def provides(paths: list[str]) -> set[str]:
        return {str(module_name(p)) for p in paths} | {
            a.replace("-", "_") for p in paths for a in info[p].get("alias", [])
        }

    whole, slim = provides(order), provides(kept)
    for path in kept:
        needs = [d for deps in info[path].get("depends", []) for d in deps.split(",") if d]
        for soft in info[path].get("softdep", []):
            needs += [
                w for w in soft.split() if not w.endswith(":") and w.replace("-", "_") in whole
            ]
        missing = [n for n in needs if n.replace("-", "_") not in slim]
        if missing:
            raise InitramfsError(f"{path} needs {', '.join(missing)}, which is left out")


def _make(built: Path, kernel_image: bytes, initrd: bytes, final: Path) -> None:
    kernel = vmlinux(kernel_image)
    if not has_pvh_entry(kernel):
        raise OSError("its kernel has no PVH entry point")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-" + PREFIX, dir=final.parent))
    try:
        (tmp / "kernel").write_bytes(kernel)
        try:
            (tmp / "initrd").write_bytes(slim_initrd(initrd))
        except InitramfsError as exc:
            log.info("the appliance loads all of supermin's modules: %s", exc)
            (tmp / "initrd").symlink_to(built / "initrd")
        try:
            _quick_root(built / "root", tmp / "root", tmp)
        except OSError as exc:
            log.info("the appliance replays every device at its start: %s", exc)
            (tmp / "root").unlink(missing_ok=True)
            (tmp / "root").symlink_to(built / "root")
        (tmp / "README.fixed").write_text(
            "A fixed libguestfs appliance made by vmshift: the supermin appliance's kernel, "
            "uncompressed so that QEMU boots it by PVH, its initrd without the modules "
            "for devices the appliance does not have, and its root with an /init that has "
            "udev replay only block devices and virtio-serial ports.\n"
        )
        try:
            tmp.rename(final)
        except OSError:  # another run made it first
            if not (final / "README.fixed").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def quick_init(init: str) -> str:
    """libguestfs's /init with its replay of every device narrowed to the ones the appliance
    uses; ValueError unless it has that line exactly once."""
    lines = init.split("\n")
    if lines.count(UDEV_REPLAY) != 1:
        raise ValueError(f"/init does not run {UDEV_REPLAY!r} once")
    return "\n".join(UDEV_REPLAY_USED if line == UDEV_REPLAY else line for line in lines)


def _debugfs(image: Path, *args: str) -> str:
    """debugfs's output on image; OSError when it fails or is missing."""
    tool = next((t for t in _DEBUGFS if Path(t).is_file()), None) or shutil.which("debugfs")
    if tool is None:
        raise OSError("no debugfs (e2fsprogs) to edit the appliance's root")
    try:
        done = subprocess.run(
            [tool, *args, str(image)], capture_output=True, text=True, check=False, timeout=120
        )
    except subprocess.TimeoutExpired as exc:
        raise OSError(f"debugfs {' '.join(args)} did not finish in {exc.timeout} s") from exc
    if done.returncode != 0:
        raise OSError(f"debugfs {' '.join(args)}: {done.stderr.strip()[-300:]}")
    return done.stdout


def _quick_root(root: Path, copy: Path, tmp: Path) -> None:
    """A sparse copy of libguestfs's root whose /init is quick_init's; OSError if it cannot
    be made and checked."""
    try:
        init = quick_init(_debugfs(root, "-R", "cat /init"))
    except ValueError as exc:
        raise OSError(str(exc)) from exc
    new_init = tmp / "init"
    new_init.write_text(init)
    copied = subprocess.run(
        ["cp", "--sparse=always", "--reflink=auto", str(root), str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    if copied.returncode != 0:
        raise OSError(f"cannot copy {root}: {copied.stderr.strip()}")
    commands = tmp / "debugfs-commands"
    commands.write_text(f"rm /init\nwrite {new_init} /init\nsif /init mode 0100755\n")
    _debugfs(copy, "-w", "-f", str(commands))
    if _debugfs(copy, "-R", "cat /init") != init:
        raise OSError("the copy's /init does not read back as written")
    new_init.unlink()
    commands.unlink()


def _remove_others(base: Path, keep: str) -> None:
    """Copies made for kernels libguestfs has since replaced (60+ MB each)."""
    for path in base.glob(PREFIX + "*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


__all__ = ["PREFIX", "UDEV_REPLAY_USED", "pvh_appliance", "quick_init", "slim_initrd"]
