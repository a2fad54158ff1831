"""The P2V image's system layer: a Debian bookworm kernel and the programs the client runs,
chosen out of a debootstrap tree (minbase plus PACKAGES), and the pure-Python packages of
its console UI copied from this vmshift's own environment (the versions it is tested with).

It is the slow part (debootstrap, then xz over ~100 MB), so it is built once per recipe and
kept in the cache directory when one is given: the key covers this file, the staging code,
the mirror and the UI packages' versions. Nothing of vmshift itself is in it (image.py adds
vmshift, /init and the settings as a second archive), so a changed client costs seconds.

What goes in is a whitelist, not a pruned tree: each program with the libraries it loads,
Python's standard library without its tests, GUI, databases and tooling, kernel modules for
disks, common NICs, USB keyboards and storage, and loop (partclone reads the devices itself:
no filesystem is ever mounted, so no filesystem driver is needed). Busybox provides the
shell, the DHCP client and the rest of a rescue shell's commands.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from vmshift.p2v.image_pack import pack
from vmshift.p2v.image_stage import ImageError, Stage, chroot_run, size_of

Progress = Callable[[str], None]

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
PACKAGES = (
    "linux-image-amd64", "kmod", "busybox", "python3", "openssh-client", "nbdkit", "partclone",
    "fdisk", "xfsprogs", "iproute2",
)  # fmt: skip
PROGRAMS = (
    "usr/bin/python3", "usr/bin/python3.11", "usr/bin/ssh", "usr/bin/ssh-keyscan",
    "usr/bin/ssh-keygen", "usr/bin/nbdkit", "usr/sbin/xfs_logprint", "usr/sbin/losetup",
    "usr/sbin/blkid", "usr/sbin/sfdisk", "usr/bin/lsblk", "usr/bin/setsid", "usr/bin/ip",
    "usr/bin/kmod", "usr/sbin/modprobe", "usr/sbin/insmod", "usr/sbin/rmmod", "usr/sbin/lsmod",
    "usr/sbin/depmod", "usr/sbin/modinfo", "usr/bin/busybox", "etc/ssh/ssh_config",
)  # fmt: skip
# usedmap.py's maps of used blocks.
PARTCLONE = ("ext2", "ext3", "ext4", "xfs", "btrfs", "ntfs", "vfat", "exfat")
NBDKIT = (
    "usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-file-plugin.so",
    "usr/lib/x86_64-linux-gnu/nbdkit/filters/nbdkit-extentlist-filter.so",
    "usr/lib/x86_64-linux-gnu/nbdkit/filters/nbdkit-log-filter.so",
)
PYTHON = "usr/lib/python3.11"
PYTHON_SKIP = frozenset({
    "__pycache__", "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "pydoc_data",
    "ensurepip", "distutils", "venv", "sqlite3", "dbm", "curses", "unittest", "wsgiref",
    "config-3.11-x86_64-linux-gnu", "__phello__", "turtle.py", "antigravity.py", "this.py",
    "_pydecimal.py", "doctest.py", "EXTERNALLY-MANAGED",
})  # fmt: skip
DYNLOAD_SKIP = re.compile(
    r"^(_sqlite3|_dbm|_curses|_curses_panel|_ctypes_test|_test\w*|_xxtestfuzz|xxlimited\w*|nis|"
    r"ossaudiodev|audioop|_lsprof|_xxsubinterpreters|_codecs_(cn|hk|jp|kr|tw|iso2022))\."
)
# Kernel modules, as paths below kernel/ (their dependencies follow).
MODULES = (
    # Disks: SATA/PATA, SAS/SCSI RAID and HBAs, NVMe, virtual, MMC/eMMC, USB; loop.
    "drivers/ata/*", "drivers/scsi/sd_mod.ko", "drivers/scsi/sr_mod.ko",
    "drivers/scsi/virtio_scsi.ko", "drivers/scsi/vmw_pvscsi.ko", "drivers/scsi/hv_storvsc.ko",
    "drivers/scsi/hpsa.ko", "drivers/scsi/3w-*", "drivers/scsi/arcmsr/*",
    "drivers/scsi/aacraid/*", "drivers/scsi/megaraid/*", "drivers/scsi/megaraid.ko",
    "drivers/scsi/mpt3sas/*", "drivers/scsi/mpi3mr/*", "drivers/scsi/smartpqi/*",
    "drivers/scsi/isci/*", "drivers/scsi/mvsas/*", "drivers/scsi/pm8001/*",
    "drivers/scsi/sym53c8xx_2/*", "drivers/message/fusion/*", "drivers/nvme/host/nvme.ko",
    "drivers/block/virtio_blk.ko", "drivers/block/loop.ko", "drivers/virtio/*",
    "drivers/mmc/core/*", "drivers/mmc/host/sdhci*", "drivers/mmc/host/cqhci.ko",
    "drivers/mmc/host/rtsx_pci_sdmmc.ko", "drivers/usb/host/*hci*",
    "drivers/usb/storage/usb-storage.ko", "drivers/usb/storage/uas.ko",
    # USB keyboards, for the UI.
    "drivers/hid/hid.ko", "drivers/hid/hid-generic.ko", "drivers/hid/usbhid/*",
    # NICs that work without firmware files: Intel, Realtek, Broadcom tg3, virtual ones.
    "drivers/net/ethernet/intel/e1000/*", "drivers/net/ethernet/intel/e1000e/*",
    "drivers/net/ethernet/intel/igb/*", "drivers/net/ethernet/intel/igc/*",
    "drivers/net/ethernet/intel/ixgbe/*", "drivers/net/ethernet/realtek/r8169.ko",
    "drivers/net/ethernet/realtek/8139*", "drivers/net/phy/realtek.ko",
    "drivers/net/ethernet/broadcom/tg3.ko", "drivers/net/ethernet/amd/pcnet32.ko",
    "drivers/net/ethernet/atheros/alx/*", "drivers/net/ethernet/marvell/sky2.ko",
    "drivers/net/virtio_net.ko", "drivers/net/vmxnet3/*", "drivers/net/hyperv/*",
)  # fmt: skip
# busybox commands left out: the kernel runs our /init, and image.py has its own poweroff
# and reboot (a file cannot replace a symlink of an earlier archive).
BUSYBOX_SKIP = ("init", "linuxrc", "poweroff", "reboot", "halt")
UI_DISTRIBUTIONS = ("textual",)  # the console UI; rich and the rest follow from it
SITE = "usr/lib/python3/dist-packages"  # Debian's python3 looks here
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?[^;]*(?:;(.*))?$")
DIRECTORIES = ("dev", "proc", "sys", "run", "root", "mnt", "var/tmp", "etc")


@dataclass(frozen=True)
class SystemLayer:
    directory: Path
    kernel: Path  # vmlinuz
    archive: Path  # system.cpio.xz
    facts: dict[str, Any]  # facts.json: versions and sizes
    reused: bool


def distributions(names: Iterable[str] = UI_DISTRIBUTIONS) -> list[metadata.Distribution]:
    """names and what they require (with the extras asked for), as installed here; a
    requirement not installed here is not needed here (a marker for another Python)."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(name, frozenset[str]()) for name in names]
    while pending:
        name, extras = pending.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            found[key] = dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if not found:
                raise ImageError(f"{name} is not installed here: the image's UI needs it") from None
            continue
        for req in dist.requires or ():
            m = _REQUIREMENT.match(req)
            if m is None:
                continue
            extra = re.search(r"extra\s*==\s*[\"']([^\"']+)[\"']", m.group(3) or "")
            if extra is None or extra.group(1) in extras:
                wanted = frozenset(e.strip() for e in (m.group(2) or "").split(",") if e.strip())
                pending.append((m.group(1), wanted))
    return sorted(found.values(), key=lambda d: str(d.metadata["Name"]).lower())


def system_key(mirror: str) -> str:
    digest = hashlib.sha256(mirror.encode())
    for module in ("image_system.py", "image_stage.py", "image_pack.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    for dist in distributions():
        digest.update(f"{dist.metadata['Name']}=={dist.version}\n".encode())
    return digest.hexdigest()[:12]


def system_layer(cache: Path | None, workdir: Path, mirror: str, progress: Progress) -> SystemLayer:
    """The layer from the cache, or built (into the cache when there is one)."""
    key = system_key(mirror)
    final = cache / f"p2v-system-{key}" if cache is not None else workdir / "system"
    if cache is not None and (final / "facts.json").exists():
        progress(f"system layer: reusing {final}")
        return _layer(final, reused=True)
    out = final if cache is None else cache / f".p2v-system-{key}.tmp-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        debs = cache / "debootstrap-debs" if cache is not None else None
        _build(out, workdir, mirror, debs, progress)
        if cache is not None and not (final / "facts.json").exists():
            shutil.rmtree(final, ignore_errors=True)
            out.rename(final)
    finally:
        if out != final:
            shutil.rmtree(out, ignore_errors=True)
    return _layer(final, reused=False)


def _layer(directory: Path, reused: bool) -> SystemLayer:
    facts = json.loads((directory / "facts.json").read_text())
    return SystemLayer(directory, directory / "vmlinuz", directory / "system.cpio.xz", facts,
                       reused)  # fmt: skip


def debootstrap(tree: Path, mirror: str, debs: Path | None, progress: Progress) -> None:
    progress(f"debootstrap {SUITE} (minbase, {len(PACKAGES)} packages) from {mirror}")
    argv = ["debootstrap", "--arch=amd64", "--variant=minbase", "--components=main",
            f"--include={','.join(PACKAGES)}"]  # fmt: skip
    if debs is not None:
        debs.mkdir(parents=True, exist_ok=True)
        argv.append(f"--cache-dir={debs}")
    # INITRD=No: the kernel package makes no initramfs of its own (the image is ours).
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "INITRD": "No",
           "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}  # fmt: skip
    log = tree.parent / "debootstrap.log"
    rc = run_group([*argv, SUITE, str(tree), mirror], env, log)
    unmount_under(tree)
    if rc != 0:
        said = log.read_text(errors="replace").strip().splitlines() or ["?"]
        raise ImageError(f"debootstrap failed (exit {rc}): {said[-1]}")


def run_group(argv: list[str], env: dict[str, str], log: Path) -> int:
    """argv in a process group of its own, its output to log; its exit status. However this
    ends (an interrupt too), nothing of the group is left running: debootstrap's dpkg and
    its maintainer scripts would go on writing into a tree being removed."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        return proc.wait()
    finally:
        for signum, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
            deadline = time.monotonic() + grace
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signum)
                while time.monotonic() < deadline:
                    proc.poll()  # reaps the leader; the rest are reparented and reaped
                    os.killpg(proc.pid, 0)
                    time.sleep(0.1)


def unmount_under(path: Path) -> None:
    """Unmount what a debootstrap that died left mounted in the tree (its /proc, /sys)."""
    root = path.resolve()
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]))
            if point == root or root in point.parents:
                points.append(point)
    for point in sorted(points, key=lambda p: len(p.parts), reverse=True):
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)


def _build(out: Path, workdir: Path, mirror: str, debs: Path | None, progress: Progress) -> None:
    tree, root = workdir / "tree", workdir / "root"
    debootstrap(tree, mirror, debs, progress)
    kernels = sorted(p.name for p in (tree / "usr/lib/modules").iterdir())
    if len(kernels) != 1:
        raise ImageError(f"expected one kernel in the Debian tree, found {kernels}")
    version = kernels[0]
    progress("staging the programs, their libraries and Python")
    stage = Stage(tree, root)
    for name in DIRECTORIES:
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    files = [stage.copy(p) for p in PROGRAMS + NBDKIT]
    files += [stage.copy(f"usr/sbin/partclone.{fs}") for fs in PARTCLONE]
    files += stage.copy_tree(PYTHON, _python_skip)
    libraries = stage.libraries(files)
    stage.copy("usr/lib/x86_64-linux-gnu/libgcc_s.so.1")  # glibc dlopens it (thread exit)
    progress(f"kernel {version}: modules for disks, NICs, USB keyboards and loop")
    modules = stage.modules(version, MODULES)
    chroot_run(root, ["/usr/sbin/depmod", version])
    applets = stage.busybox_links("usr/bin/busybox", BUSYBOX_SKIP)
    dists = distributions()
    progress("the console UI's Python packages: "
             + ", ".join(f"{d.metadata['Name']} {d.version}" for d in dists))  # fmt: skip
    for dist in dists:
        copy_distribution(dist, root / SITE)
    shutil.copyfile(tree / f"boot/vmlinuz-{version}", out / "vmlinuz")
    python = ["/usr/bin/python3", "-c", "import sys; print(sys.version.split()[0])"]
    facts: dict[str, Any] = {
        "kernel": version,
        "python": chroot_run(root, python).strip(),
        "debian": {p: _version(tree, p) for p in PACKAGES},
        "python_packages": {d.metadata["Name"]: d.version for d in dists},
        "modules": modules,
        "libraries": libraries,
        "busybox_applets": applets,
        "root_bytes": size_of(root),
    }
    shutil.rmtree(tree)
    progress(f"system layer: compressing {facts['root_bytes'] >> 20} MiB (xz)")
    facts["archive_bytes"] = pack(root, out / "system.cpio.xz")
    shutil.rmtree(root)
    (out / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")


def _python_skip(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    if name in PYTHON_SKIP:
        return True
    return "/lib-dynload/" in path and DYNLOAD_SKIP.match(name) is not None


def _version(tree: Path, package: str) -> str:
    return chroot_run(tree, ["/usr/bin/dpkg-query", "-W", "-f", "${Version}", package]).strip()


def copy_distribution(dist: metadata.Distribution, site: Path) -> None:
    """An installed pure-Python distribution's files (no caches, no scripts) below site."""
    for entry in dist.files or ():
        rel = entry.as_posix()
        if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
            continue
        if rel.endswith(".so"):
            raise ImageError(f"{dist.metadata['Name']} has compiled code ({rel}): the image "
                             "takes only pure-Python packages")  # fmt: skip
        source = Path(str(dist.locate_file(entry)))
        if source.is_file():
            dest = site / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
