"""Remove other hypervisors' guest software, and what it leaves that would break a KVM boot.

Packages go with the guest's own tool, offline in the appliance: `dpkg --purge` on Debian (not
apt-get: apt would also remove whatever depends on them, a metapackage like ubuntu-server; dpkg
refuses instead and the package stays, which is harmless on KVM), `rpm -e --nodeps --allmatches`
on RHEL and SUSE. A temporary /usr/sbin/policy-rc.d keeps maintainer scripts from starting or
stopping services. Installs that bypassed the package manager are undone with their own
uninstallers (VMware's vmware-uninstall-tools.pl, VirtualBox's uninstall.sh, Parallels'
`install -r`), run first because VirtualBox's restores configuration files it saved at install
time. Then: vendor repositories are disabled, module aliases for VMware/Xen drivers point at the
drivers of the new hardware, mounts of the old hypervisor's shared folders are disabled, and
systemd/SysV links left pointing at removed units are deleted.

A removal that fails is a warning: the software is inert on KVM. Only a guest left without a
kernel is an error.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Any

from vmshift.convert.linux.context import BACKUP_SUFFIX, LinuxGuest
from vmshift.convert.linux.tools_text import (
    TextEdit,
    disable_apt_list,
    disable_deb822,
    disable_hypervisor_mounts,
    disable_ini_repos,
    dpkg_installed,
    drop_xen_initrd_modules,
    is_citrix_package,
    restore_gettys,
    rewrite_aliases,
    shell_values,
    vmware_locations,
    xen_module_lines,
)
from vmshift.errors import ConversionError
from vmshift.model.inspection import ForeignKind

STEP = "tools_removal"
POLICY_RC_D = "/usr/sbin/policy-rc.d"
VMWARE_UNINSTALLER = "/usr/bin/vmware-uninstall-tools.pl"
VMWARE_LOCATIONS = "/etc/vmware-tools/locations"
VBOX_CONFIG = "/var/lib/VBoxGuestAdditions/config"
PARALLELS_INSTALLER = "/usr/lib/parallels-tools/install"
MODPROBE_FILES = (
    "/etc/conf.modules",
    "/etc/modules.conf",
    "/etc/modprobe.conf",
    "/etc/modprobe.conf.local",
)
UNIT_LINK_DIRS = ("/etc/systemd/system", "/etc/systemd/system/*.*", "/etc/rc.d/rc?.d", "/etc/rc?.d")
BLOCK_MODULES = {
    "virtio-blk": "virtio_blk",
    "virtio-scsi": "virtio_scsi",
    "sata": "ahci",
    "ide": "ata_piix",
}


def remove_foreign_software(guest: LinuxGuest) -> None:
    foreign = guest.os.foreign_software
    kinds = {f.kind for f in foreign}
    _run_uninstallers(guest)
    packages = list(dict.fromkeys(f.name for f in foreign if f.evidence.startswith("package ")))
    removed = _remove_packages(guest, packages) if packages else []
    if ForeignKind.VMWARE in kinds or guest.g.exists(VMWARE_LOCATIONS):
        _remove_vmware_tarball(guest, still_installed=[p for p in packages if p not in removed])
    if any(is_citrix_package(p) for p in removed):
        _edit(guest, "/etc/inittab", restore_gettys, "re-enabled gettys Citrix tools disabled")
    _disable_repositories(guest)
    kernels = guest.os.linux.kernels if guest.os.linux else ()
    rewrite_driver_aliases(guest, virtio=any(k.supports_virtio for k in kernels))
    if guest.family == "suse":
        _edit(guest, "/etc/sysconfig/kernel", drop_xen_initrd_modules, "Xen PV drivers")
    _edit(guest, "/etc/fstab", disable_hypervisor_mounts, "shared-folder mounts")
    _remove_dangling_links(guest)
    _check_kernels_left(guest)


# --- packages ------------------------------------------------------------------------------


def _remove_packages(guest: LinuxGuest, packages: list[str]) -> list[str]:
    """Remove packages with the guest's own tool; return those that are gone."""
    if guest.os.package_format == "deb":
        return _dpkg_purge(guest, packages)
    if guest.os.package_format == "rpm":
        return _rpm_erase(guest, packages)
    guest.warn(f"cannot remove {', '.join(packages)}: unknown package format")
    return []


def _dpkg_purge(guest: LinuxGuest, packages: list[str]) -> list[str]:
    g = guest.g
    if not g.is_file("/usr/bin/dpkg", followsymlinks=True):
        guest.warn(f"the guest has no dpkg: {', '.join(packages)} left installed")
        return []
    own_policy = g.is_symlink(POLICY_RC_D) or g.exists(POLICY_RC_D) or not g.is_dir("/usr/sbin")
    if not own_policy:
        # 101: "action forbidden"; invoke-rc.d and deb-systemd-invoke then leave services be.
        g.write(POLICY_RC_D, b"#!/bin/sh\nexit 101\n")
        g.chmod(0o755, POLICY_RC_D)
    argv = ["/usr/bin/dpkg", "--purge", *packages]
    if g.is_file("/usr/bin/env", followsymlinks=True):
        # debconf would try a dialog frontend first; there is no terminal in the appliance.
        env = ["DEBIAN_FRONTEND=noninteractive", "DEBCONF_NONINTERACTIVE_SEEN=true"]
        argv = ["/usr/bin/env", *env, *argv]
    error = None
    try:
        guest.run(argv)
    except ConversionError as exc:
        error = exc
    finally:
        if not own_policy:
            g.rm_f(POLICY_RC_D)
    installed = dpkg_installed(guest.read("/var/lib/dpkg/status") or "")
    return _account(guest, packages, [p for p in packages if p in installed], error)


def _rpm_erase(guest: LinuxGuest, packages: list[str]) -> list[str]:
    g = guest.g
    rpm = next((p for p in ("/usr/bin/rpm", "/bin/rpm") if g.is_file(p, followsymlinks=True)), "")
    if not rpm:
        guest.warn(f"the guest has no rpm: {', '.join(packages)} left installed")
        return []
    # Berkeley DB environment files of the source's last run make rpm hang or fail.
    for stale in guest.glob("/var/lib/rpm/__db.*"):
        g.rm_f(stale)
    erase = [rpm, "-e", "--nodeps", "--allmatches"]
    try:
        guest.run([*erase, *packages])
        return _account(guest, packages, [], None)
    except ConversionError as exc:
        error: Exception = exc
    left = _rpm_installed(guest, rpm, packages)
    still = left
    if left:
        # A scriptlet that cannot run offline (it wants the old hypervisor or a running
        # systemd) is the usual cause: the files still go; dangling unit links are cleaned up.
        try:
            guest.run([*erase, "--noscripts", *left])
        except ConversionError as exc:
            error = exc
        still = _rpm_installed(guest, rpm, left)
        for name in left:
            if name not in still:
                guest.note(STEP, f"removed package {name} without its scriptlets (they failed)")
    return _account(guest, [p for p in packages if p not in left] + still, still, error)


def _rpm_installed(guest: LinuxGuest, rpm: str, packages: list[str]) -> list[str]:
    # rpm -q exits non-zero when any is missing and says so on stdout: let the shell swallow
    # the status, keep the answer. rpm by full path: busybox's sh prefers its own rpm applet.
    try:
        out = guest.run(["/bin/sh", "-c", '"$@"; exit 0', "sh", rpm, "-q", *packages])
    except ConversionError:
        return packages
    return [p for p in packages if f"package {p} is not installed" not in out]


def _account(
    guest: LinuxGuest, asked: list[str], left: list[str], error: Exception | None
) -> list[str]:
    """Note what went, warn about what stayed; return what went."""
    for name in asked:
        if name not in left:
            guest.note(STEP, f"removed package {name}")
    if left:
        why = f": {error}" if error else ""
        guest.warn(f"could not remove {', '.join(left)} (inert on KVM; remove it later){why}")
    return [p for p in asked if p not in left]


# --- installs outside the package manager --------------------------------------------------


def _run_uninstallers(guest: LinuxGuest) -> None:
    g = guest.g
    if g.is_file(VMWARE_UNINSTALLER, followsymlinks=True):
        if g.is_file(VMWARE_LOCATIONS, followsymlinks=True):
            # Without these answers the uninstaller restores the initrds it saved at install
            # time, for every kernel; the initramfs step builds the right one afterwards.
            answers = "".join(
                f"remove_answer RESTORE_RAMDISK_{key}\n" for key in ("CMD", "KERNELS", "ONECALL")
            )
            g.write_append(VMWARE_LOCATIONS, answers.encode())
        argv = [VMWARE_UNINSTALLER]
        if guest.family == "suse":
            argv = ["/usr/bin/env", f"rootdev={guest.os.root}", VMWARE_UNINSTALLER]
        _uninstall(guest, "VMware Tools", argv)
    vbox = _vbox_uninstaller(guest)
    if vbox:
        _uninstall(guest, "VirtualBox Guest Additions", [vbox])
    if g.is_file(PARALLELS_INSTALLER, followsymlinks=True):
        _uninstall(guest, "Parallels Tools", [PARALLELS_INSTALLER, "-r"])


def _uninstall(guest: LinuxGuest, what: str, argv: list[str]) -> None:
    try:
        guest.run(argv)
    except ConversionError as exc:
        guest.warn(f"{what} were installed outside the package manager; uninstalling failed: {exc}")
        return
    guest.note(STEP, f"uninstalled {what} ({shlex.join(argv)})")


def _vbox_uninstaller(guest: LinuxGuest) -> str | None:
    candidates = []
    for value in shell_values(guest.read(VBOX_CONFIG) or "", "INSTALL_DIR"):
        if value.startswith("/") and posixpath.normpath(value) == value.rstrip("/"):
            candidates.append(f"{value.rstrip('/')}/uninstall.sh")
    candidates += guest.glob("/opt/VBoxGuestAdditions-*/uninstall.sh")
    return next((c for c in candidates if guest.g.is_file(c, followsymlinks=True)), None)


def _remove_vmware_tarball(guest: LinuxGuest, still_installed: list[str]) -> None:
    """What the VMware Tools tarball left when its uninstaller was missing or failed: the
    files its install database lists, then its configuration directory."""
    g = guest.g
    text = guest.read(VMWARE_LOCATIONS)
    if text is None:
        return
    if any(p.startswith(("open-vm-tools", "vmware-tools", "VMwareTools")) for p in still_installed):
        guest.note(STEP, "VMware Tools files kept: a VMware package still uses them")
        return
    files, dirs = vmware_locations(text)
    gone, versions = 0, set()
    for path in files:
        if g.is_symlink(path) or g.is_file(path):
            g.rm_f(path)
            gone += 1
            module_dir = re.match(r"/(?:usr/)?lib/modules/([^/]+)/", path)
            if module_dir:
                versions.add(module_dir.group(1))
    for path in sorted(dirs, key=lambda d: -d.count("/")):
        if g.is_dir(path) and not g.ls(path):
            g.rmdir(path)
    g.rm_rf("/etc/vmware-tools")
    guest.note(STEP, f"removed VMware Tools tarball install ({gone} files)", "/etc/vmware-tools")
    for version in sorted(versions):
        # Its vmxnet/vmhgfs modules are gone: keep modules.dep true for modprobe and dracut.
        try:
            guest.run(["depmod", "-a", version])
        except ConversionError as exc:
            guest.warn(f"depmod for {version} failed after removing VMware modules: {exc}")


# --- configuration left behind -------------------------------------------------------------


def _disable_repositories(guest: LinuxGuest) -> None:
    targets = [(p, disable_ini_repos) for p in guest.glob("/etc/yum.repos.d/*.repo")] + [
        (p, disable_ini_repos) for p in guest.glob("/etc/zypp/repos.d/*.repo")
    ]
    targets += [(p, disable_apt_list) for p in ["/etc/apt/sources.list"]]
    targets += [(p, disable_apt_list) for p in guest.glob("/etc/apt/sources.list.d/*.list")]
    targets += [(p, disable_deb822) for p in guest.glob("/etc/apt/sources.list.d/*.sources")]
    for path, edit in targets:
        text = guest.read(path)
        if text is None:
            continue
        new, disabled = edit(text, "vmware" in path.rsplit("/", 1)[-1].lower())
        if disabled:
            write_config(guest, path, new, STEP, f"disabled VMware repo {', '.join(disabled)}")


def rewrite_driver_aliases(guest: LinuxGuest, *, virtio: bool, step: str = STEP) -> None:
    """Point `alias ethN` and `alias scsi_hostadapter` at the converted guest's drivers.

    Old mkinitrd (RHEL 5 and older, SUSE) builds the initramfs from these aliases, so a leftover
    `alias scsi_hostadapter xenblk` or `vmw_pvscsi` makes it fail or miss the root disk. The first
    scsi_hostadapter gets the new disk driver and the others are disabled: the converted guest
    has one disk controller. Idempotent: the network step calls it again once the kernel step
    has fixed the buses.
    """
    block = BLOCK_MODULES.get(guest.block_bus if virtio else "sata", "virtio_blk")
    net = "virtio_net" if virtio else "e1000"
    paths = list(MODPROBE_FILES) + guest.glob("/etc/modprobe.d/*")
    first_done = False
    for path in paths:
        text = guest.read(path)
        if text is None or path.endswith(BACKUP_SUFFIX):
            continue
        new, changes, first_done = rewrite_aliases(text, block, net, first_done)
        if changes:
            write_config(guest, path, new, step, "; ".join(changes))
        for line in xen_module_lines(new):
            guest.warn(f"{path}: cannot update '{line}', which loads a Xen driver")


def _edit(guest: LinuxGuest, path: str, edit: TextEdit, what: str) -> None:
    text = guest.read(path)
    if text is None:
        return
    new, changed = edit(text)
    if changed:
        guest.write(path, new, STEP, f"{what}: {'; '.join(changed)}")


def _remove_dangling_links(guest: LinuxGuest) -> None:
    """Unit links (systemd wants/requires/aliases, SysV rc links) whose target was removed.

    systemd only logs those, but a dangling alias hides a unit of the same name, and SysV
    boot prints an error for each S link."""
    g = guest.g
    for directory in (d for pattern in UNIT_LINK_DIRS for d in guest.glob(pattern)):
        if not g.is_dir(directory):
            continue
        names = g.ls(directory)
        removed = 0
        for name, stat in zip(names, g.lstatnslist(directory, names) if names else [], strict=True):
            path = f"{directory}/{name}"
            if stat["st_mode"] & 0o170000 != 0o120000 or not _dangling(g, path):
                continue
            g.rm(path)
            guest.note(STEP, f"removed link to a missing unit: {name}", path)
            removed += 1
        if removed and removed == len(names) and directory.endswith((".wants", ".requires")):
            g.rmdir(directory)


def _dangling(g: Any, link: str) -> bool:
    # statns follows links inside the guest's root; g.exists does not (it is true for any link).
    try:
        g.statns(link)
    except RuntimeError:
        target: str = g.readlink(link)
        return target != "/dev/null"  # a masked unit, on a guest without /dev/null
    return False


def _check_kernels_left(guest: LinuxGuest) -> None:
    kernels = guest.os.linux.kernels if guest.os.linux else ()
    if kernels and not any(guest.g.is_file(k.path, followsymlinks=True) for k in kernels):
        raise ConversionError(
            "removing the foreign hypervisor software left the guest without a kernel",
            hint="run with -v to see which uninstaller removed them",
        )


# --- helpers -------------------------------------------------------------------------------


def write_config(
    guest: LinuxGuest, path: str, text: str, step: str, what: str, *, original: str | None = None
) -> None:
    """guest.write; with `original`, the file also moves from there to `path` (an ifcfg
    renamed with its interface), keeping its owner, mode and SELinux label."""
    if original is None or original == path:
        guest.write(path, text, step, what)
        return
    g = guest.g
    guest.keep_original(original)
    if g.is_file(original) and not g.exists(path):
        g.cp_a(original, path)
    guest.write(path, text, step, what)
    g.rm_f(original)
