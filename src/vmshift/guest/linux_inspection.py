"""Inspection of a plain Debian- or RHEL-family guest without libguestfs's inspect_os.

inspect_os probes every block device with parted, sfdisk and sgdisk, starts augeas (which
loads every lens it has) to read one fstab (and on RHEL more files), and runs `file` on
/bin/bash: about 7 of the 8.5 s inspection took on the real Debian guest under TCG, and 13 of
the phony RHEL guest's, where each program started in the appliance costs 0.15 s and more.
Here the same answers come from one blkid per device (shared with the rest of inspection), a
read-only mount per filesystem and a few small reads.

The answers must be libguestfs's own, so that nothing downstream (conversion, the report,
`vmshift inspect --json`) can tell which path ran: the rules follow libguestfs 1.48's
inspection step by step (formats/release_files.py holds its file parsing, formats/rpmdb.py
its package listing of an rpm database), and tests/integration/test_inspect_fastpath.py
compares both paths on every Debian- and RHEL-family test guest. The path is taken only for
the layouts those rules cover:

- block devices holding ext2/3/4, xfs, vfat or swap, on partitions, whole disks or LVM
  logical volumes (no md RAID, no LUKS, no btrfs, no NTFS: other OSes and subvolumes);
- exactly one Linux root, every other filesystem plainly not an OS (no /etc, /bin or /share
  at its top, no Windows or DOS directory), whose release files make it Debian or Ubuntu, or
  RHEL, CentOS, Rocky or Fedora by a complete os-release;
- for the RHEL family, an rpm database in sqlite form (/var/lib/rpm/rpmdb.sqlite, its
  write-ahead log empty): RHEL 9 and Fedora 33+; older Berkeley DB ones are left to librpm;
- an fstab whose devices are UUID=, LABEL=, /dev/sdXN-style names, /dev/root or logical
  volumes, with no crypttab or mdadm.conf to consult;
- an x86_64, i386 or aarch64 ELF /bin/bash (or ls, echo, rm, sh) for the architecture;
- a hostname in /etc/HOSTNAME or /etc/hostname, or in neither with no
  /etc/sysconfig/network (which libguestfs reads with augeas).

Anything else, or anything read that these rules do not settle, raises `Unsure`, and
inspection asks libguestfs's inspect_os as before (the reason is logged).
"""

from __future__ import annotations

import logging
import re
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from vmshift.formats.release_files import (
    DEB_DISTROS,
    RPM_DISTROS,
    Release,
    Unsure,
    dpkg_packages,
    drive_index,
    elf_arch,
    fstab_entries,
    lines,
    osinfo,
    package_manager,
    shell_unquote,
)
from vmshift.formats.rpmdb import RpmdbError, rpm_packages
from vmshift.guest.linux_facts import read_guest_file
from vmshift.guest.probes import (
    Probes,
    blkid_tags,
    each_mounted,
    listed,
    plain_devices,
    try_call,
)
from vmshift.guest.root_facts import RootFacts
from vmshift.model.inspection import Application

log = logging.getLogger(__name__)

FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "vfat", "swap"}
# Marks of a /boot that libguestfs calls "Grub /boot", not a root, before any other test.
_GRUB_BOOT = ("/grub/menu.lst", "/grub/grub.conf", "/grub2/grub.cfg")
# Files by which libguestfs tells FreeBSD, NetBSD, OpenBSD, Hurd and Minix roots.
_OTHER_ROOTS = ("/etc/freebsd-update.conf", "/netbsd", "/bsd", "/hurd/console", "/service/vm")
# Top-level directories of Windows and DOS system volumes (compared in lower case).
_OTHER_SYSTEMS = {"windows", "winnt", "win32", "win", "reactos", "fdos", "dos", "hurd"}
_RELEASE_FILES_NOT_READ = (
    "/etc/lsb-release",
    "/etc/oracle-release",
    "/etc/centos-release",
    "/etc/altlinux-release",
    "/etc/redhat-release",
)
_ARCH_BINARIES = ("/bin/bash", "/bin/ls", "/bin/echo", "/bin/rm", "/bin/sh")
_XDEV = re.compile(r"^/dev/(h|s|v|xv)d([a-z]+)(\d*)$")
_OPENBSD_DUID = re.compile(r"^[0-9a-f]{16}\.[a-z]")
_SMALL = 64 << 10  # release and hostname files bigger than this are left to libguestfs
_AUGEAS_MAX = 100 * 1000  # libguestfs does not read a bigger fstab
MAX_PACKAGE_DB = 300 << 20
RPMDB = "/var/lib/rpm/rpmdb.sqlite"
# Other rpm database backends (Berkeley DB, ndb): librpm reads them, this module does not.
_OTHER_RPMDBS = ("/var/lib/rpm/Packages", "/var/lib/rpm/Packages.db")


@dataclass(frozen=True)
class _Devices:
    disks: list[str]  # list_devices: the guest's disks in order
    partitions: set[str]
    lvs: list[str]  # /dev/VG/LV


def inspect_linux(g: Any, probes: Probes) -> RootFacts | None:
    """The guest's one root when it is a Linux layout this module covers, else None
    (libguestfs's inspect_os must answer). Leaves nothing mounted."""
    try:
        return _inspect(g, probes)  # each filesystem is unmounted once looked at
    except (Unsure, RuntimeError) as exc:  # RuntimeError: an appliance call failed
        log.info("Linux inspection declined: %s", exc)
        return None


def _inspect(g: Any, probes: Probes) -> RootFacts:
    disks = listed(g.list_devices)
    partitions = listed(g.list_partitions)
    # What the appliance holds, told by blkid before anything is mounted: a guest this module
    # does not cover (Windows' NTFS, md, LUKS, btrfs) is declined at its first such device.
    found: list[tuple[str, str]] = []
    lvm = False
    for dev in plain_devices(g):
        kind = _kind(g, dev, probes)
        lvm = lvm or kind == "LVM2_member"
        if kind in FILESYSTEMS:
            found.append((dev, kind))
    lvs = listed(g.lvs) if lvm else []
    found += [(lv, kind) for lv in lvs if (kind := _kind(g, lv, probes)) in FILESYSTEMS]
    devices = _Devices(disks, set(partitions), lvs)
    roots: list[RootFacts] = []
    # Logical volumes, then partitions from the last: the root is usually there, and /boot or
    # an ESP first, so another distro is declined after mounting only its root.
    candidates = [dev for dev, kind in reversed(found) if kind != "swap"]
    with closing(each_mounted(g, candidates)) as mounted:
        for dev in mounted:
            if _is_linux_root(g, dev):
                if roots:
                    raise Unsure(f"two Linux roots, {roots[0].root} and {dev}")
                roots.append(_root(g, dev, devices, probes))
    if not roots:
        raise Unsure("no Linux root found")
    return roots[0]


def _kind(g: Any, dev: str, probes: Probes) -> str:
    """blkid's TYPE: a filesystem this module reads, LVM2_member, or "" for nothing it can
    hold; Unsure for anything else."""
    kind = blkid_tags(g, dev, probes).get("TYPE", "")
    if kind and kind != "LVM2_member" and kind not in FILESYSTEMS:
        raise Unsure(f"{dev} holds {kind}")
    return kind


def _is_linux_root(g: Any, dev: str) -> bool:
    """Whether the filesystem mounted at / is a Linux root as libguestfs tells one; Unsure
    where it might call it another OS's root, or a /usr to merge into a root."""
    if any(g.is_file(path) for path in _GRUB_BOOT):
        return False
    if any(g.is_file(path) for path in _OTHER_ROOTS):
        raise Unsure(f"{dev} has the files of a BSD, Hurd or Minix root")
    usr_bin = g.is_symlink("/bin") and g.readlink("/bin") == "usr/bin"
    if (
        g.is_dir("/etc")
        and (g.is_dir("/bin") or usr_bin)
        and (g.is_file("/etc/fstab") or g.is_file("/etc/hosts"))
    ):
        return True
    if g.is_dir("/etc") or g.is_dir("/bin") or g.is_dir("/share"):
        raise Unsure(f"{dev} looks like part of an OS (a /usr, a CoreOS root)")
    names = {name.lower() for name in listed(lambda: g.ls("/"))}
    if names & _OTHER_SYSTEMS:
        raise Unsure(f"{dev} looks like a Windows or DOS system volume")
    return False


def _root(g: Any, dev: str, devices: _Devices, probes: Probes) -> RootFacts:
    release = Release()
    _read_release(g, release)
    distro = release.distro
    if distro not in DEB_DISTROS and distro not in RPM_DISTROS:
        raise Unsure(f"{dev}: distro {distro or 'unknown'}")
    assert release.product_name is not None
    major, minor = release.version or (0, 0)
    has_dnf = distro == "fedora" and g.is_file("/usr/bin/dnf", followsymlinks=True)
    manager = package_manager(distro, major, has_dnf)
    if manager is None:
        raise Unsure(f"{dev}: {distro} {major} has no package manager libguestfs names")
    if distro in RPM_DISTROS:
        _check_rpmdb(g)
    fstab = _fstab(g, dev, devices, probes)
    if fstab:
        mountpoints = {mp: device for device, mp in fstab if mp.startswith("/")}
        filesystems = tuple(device for device, _ in fstab)
    else:
        mountpoints, filesystems = {"/": dev}, (dev,)
    return RootFacts(
        root=dev,
        type="linux",
        distro=distro,
        product_name=release.product_name,
        product_variant="unknown",
        major_version=major,
        minor_version=minor,
        arch=_arch(g),
        hostname=_hostname(g),
        package_format="deb" if distro in DEB_DISTROS else "rpm",
        package_manager=manager,
        osinfo=osinfo(distro, major, minor),
        mountpoints=mountpoints,
        filesystems=filesystems,
        inspect_os=False,
    )


def _small_lines(g: Any, path: str) -> list[str]:
    data = read_guest_file(g, path, _SMALL)
    if data is None or b"\r" in data:
        raise Unsure(f"{path} is not a small text file")
    return lines(data)


def _read_release(g: Any, release: Release) -> None:
    """The release files in libguestfs's order, as far as a Debian-family guest goes (an
    os-release that does not settle the distro is as far as the RHEL family goes)."""
    os_release = "/etc/os-release"
    if g.is_file(os_release, followsymlinks=True) and release.read_os_release(
        _small_lines(g, os_release)
    ):
        return
    for path in _RELEASE_FILES_NOT_READ:
        if g.is_file(path, followsymlinks=True):
            raise Unsure(f"{path} would be read")
    debian_version = "/etc/debian_version"
    if g.is_file(debian_version, followsymlinks=True) and release.read_generic(
        "debian", _small_lines(g, debian_version)[0]
    ):
        return
    raise Unsure("no release file that settles the distro")


def _arch(g: Any) -> str:
    for path in _ARCH_BINARIES:
        if g.is_file(path, followsymlinks=True):
            arch = elf_arch(try_call(g.pread, path, 64, 0) or b"")
            if arch is None:
                raise Unsure(f"{path}: not an ELF binary of a known architecture")
            return arch
    raise Unsure("no binary to tell the architecture by")


def _hostname(g: Any) -> str:
    for path in ("/etc/HOSTNAME", "/etc/hostname"):
        data = read_guest_file(g, path, _SMALL)
        # Its first line that is neither empty nor a comment.
        kept = [ln for ln in lines(data or b"") if ln and not ln.startswith("#")]
        if kept:
            return kept[0]
    if g.is_file("/etc/sysconfig/network"):
        raise Unsure("/etc/sysconfig/network would be read for the hostname")
    return "unknown"


def _fstab(g: Any, root: str, devices: _Devices, probes: Probes) -> list[tuple[str, str]]:
    """(device, mountpoint) of each fstab entry inspect_os keeps, in order."""
    for path in ("/etc/mdadm.conf", "/etc/mdadm/mdadm.conf"):
        if g.is_file(path, followsymlinks=True):
            raise Unsure(f"{path} would be read")
    crypttab = False
    if g.is_file("/etc/crypttab", followsymlinks=True):
        text = "\n".join(_small_lines(g, "/etc/crypttab"))
        crypttab = any(ln.strip() and not ln.strip().startswith("#") for ln in text.split("\n"))
    if not g.is_file("/etc/fstab", followsymlinks=True):
        return []
    data = read_guest_file(g, "/etc/fstab", _AUGEAS_MAX)
    if data is None:
        raise Unsure("/etc/fstab is too big or not a file")
    found = []
    for entry in fstab_entries(data.decode("utf-8", errors="surrogateescape")):
        device = _resolve(entry.spec, root, devices, probes, crypttab)
        if device is None:
            continue
        if entry.vfstype == "btrfs" or "," in entry.vfstype:
            raise Unsure(f"fstab type {entry.vfstype} for {entry.spec}")
        found.append((device, entry.mountpoint))
    if sum(1 for _, mp in found if mp == "/") > 1:
        raise Unsure("more than one fstab entry for /")
    return found


def _resolve(spec: str, root: str, devices: _Devices, probes: Probes, crypttab: bool) -> str | None:
    """The appliance device an fstab spec names; None for what inspect_os leaves out (a
    pseudo filesystem, a UUID or label no device has)."""
    for tag in ("UUID", "LABEL"):
        if spec.startswith(tag + "="):
            wanted = shell_unquote(spec[len(tag) + 1 :])
            matches = [dev for dev, tags in probes.items() if tags.get(tag) == wanted]
            if len(matches) > 1:
                raise Unsure(f"{spec} matches {', '.join(matches)}")
            return matches[0] if matches else None
    if spec.startswith(("PARTUUID=", "PARTLABEL=")):
        raise Unsure(f"fstab names {spec}")
    if spec == "/dev/root":
        return root
    if spec.startswith("/dev/mapper"):
        if crypttab:
            raise Unsure(f"{spec} may be in crypttab")
        for lv in devices.lvs:
            _, _, vg, name = lv.split("/", 3)
            if spec == "/dev/mapper/" + vg.replace("-", "--") + "-" + name.replace("-", "--"):
                return lv
        raise Unsure(f"{spec} is not a logical volume")
    m = _XDEV.match(spec)
    if m:
        index = drive_index(m.group(2))
        if m.group(3) and index < len(devices.disks):
            device = devices.disks[index] + m.group(3)
            if device in devices.partitions:
                return device
        raise Unsure(f"{spec} names no partition of the guest's disks")
    if spec in devices.lvs:
        return spec
    if spec.startswith("/dev/") or _OPENBSD_DUID.match(spec):
        raise Unsure(f"fstab names {spec}")
    return None


def _check_rpmdb(g: Any) -> None:
    """The rpm database is one applications() reads: sqlite, everything in its main file."""
    for path in _OTHER_RPMDBS:
        if g.exists(path):
            raise Unsure(f"{path}: an rpm database other than sqlite")
    if not g.is_file(RPMDB, followsymlinks=True):
        raise Unsure(f"no {RPMDB}")
    wal = RPMDB + "-wal"
    if g.exists(wal) and int(g.statns(wal)["st_size"]) > 0:
        raise Unsure(f"{wal} holds changes not yet in the database")


def applications(g: Any, package_format: str) -> tuple[Application, ...] | None:
    """The installed packages, as inspect_list_applications2 lists them (the guest's
    filesystems mounted); None when the package database cannot be read."""
    if package_format != "rpm":
        status = read_guest_file(g, "/var/lib/dpkg/status", MAX_PACKAGE_DB)
        if status is None:
            return None
        debs = sorted(dpkg_packages(status), key=lambda p: p.name)
        return tuple(Application(p.name, p.version, p.release, p.epoch) for p in debs)
    database = read_guest_file(g, RPMDB, MAX_PACKAGE_DB)
    if database is None:
        return None
    try:
        rpms = rpm_packages(database)
    except RpmdbError as exc:
        log.info("%s: %s", RPMDB, exc)
        return None
    return tuple(Application(p.name, p.version, p.release, p.epoch) for p in rpms)
