"""The state shared by the Linux conversion steps."""

from __future__ import annotations

import logging
import posixpath
import shlex
from dataclasses import dataclass, field
from typing import Any

from vmshift.errors import ConversionError
from vmshift.guest.linux_facts import glob_paths, read_guest_file
from vmshift.model.caps import Change
from vmshift.model.inspection import LinuxKernel, OperatingSystem
from vmshift.model.vm import SourceVM

log = logging.getLogger("vmshift.convert.linux")

DEBIAN_FAMILY = {"debian", "ubuntu", "linuxmint", "kalilinux"}
RHEL_FAMILY = {
    "rhel", "centos", "fedora", "rocky", "almalinux", "oraclelinux", "scientificlinux",
    "redhat-based", "circle", "openeuler", "amazonlinux",
}  # fmt: skip
SUSE_FAMILY = {"sles", "suse-based", "opensuse", "sled"}

BACKUP_SUFFIX = ".vmshift-orig"
# Files read whole from the guest: configuration, module indexes, initramfs images.
MAX_READ = 512 << 20
# Directories whose every file a tool reads (ifupdown's `source dir/*`, initscripts,
# NetworkManager, module-init-tools): a backup beside the file would be read as one more
# configuration, so backups of their files are kept under BACKUP_ROOT instead.
BACKUP_ROOT = "/var/lib/vmshift/orig"
READ_WHOLE = (
    "/etc/sysconfig/network-scripts",
    "/etc/sysconfig/network",
    "/etc/NetworkManager/system-connections",
    "/etc/network/interfaces.d",
    "/etc/modprobe.d",
)


def backup_of(path: str) -> str:
    """Where the original of a guest file is kept: beside it unless its directory is read whole."""
    if posixpath.dirname(path) in READ_WHOLE:
        return BACKUP_ROOT + path
    return path + BACKUP_SUFFIX


def family_of(os: OperatingSystem) -> str:
    """debian, rhel or suse: which tools and file layouts the guest uses."""
    if os.distro in DEBIAN_FAMILY:
        return "debian"
    if os.distro in RHEL_FAMILY:
        return "rhel"
    if os.distro in SUSE_FAMILY:
        return "suse"
    if os.package_format == "deb":
        return "debian"
    if os.package_format == "rpm":
        return "rhel"
    raise ConversionError(f"vmshift cannot convert {os.distro} guests ({os.product_name}) yet")


@dataclass
class LinuxGuest:
    """The guest being converted: a libguestfs handle with its filesystems mounted read-write."""

    g: Any
    os: OperatingSystem
    vm: SourceVM
    family: str
    block_bus: str = "virtio-blk"  # the bus the converted guest's disks will sit on
    kernel: LinuxKernel | None = None  # chosen by the kernel step
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def note(self, step: str, what: str, path: str | None = None) -> None:
        self.changes.append(Change(step, what, path))
        log.info("%s: %s%s", step, what, f" ({path})" if path else "")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    def run(self, argv: list[str]) -> str:
        """Run a command inside the guest (chroot in the appliance); return its output."""
        log.info("in guest: %s", shlex.join(argv))
        try:
            out: str = self.g.command(argv)
        except RuntimeError as exc:
            raise ConversionError(f"{shlex.join(argv)} failed in the guest: {exc}") from exc
        return out

    def read(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", errors="surrogateescape")

    def glob(self, pattern: str) -> list[str]:
        """The guest paths matching pattern, sorted."""
        return glob_paths(self.g, pattern)

    def read_bytes(self, path: str, limit: int = MAX_READ) -> bytes | None:
        """A guest file's bytes; None if it is not a readable regular file or is over limit."""
        return read_guest_file(self.g, path, limit)

    def keep_original(self, path: str) -> str:
        """Copy a guest file to its backup place unless a backup is there already."""
        backup = backup_of(path)
        if self.g.is_file(path, followsymlinks=True) and not self.g.exists(backup):
            self.g.mkdir_p(posixpath.dirname(backup))
            # Plain cp: cp -a fails on vfat (the ESP), which cannot hold owners and modes;
            # cp still keeps the mode bits, so a 0600 keyfile's backup stays 0600.
            self.g.cp(path, backup)
        return backup

    def write(self, path: str, text: str, step: str, what: str) -> None:
        """Replace a guest file's content, keeping a copy of its first version (backup_of)."""
        try:
            self.keep_original(path)
            self.g.write(path, text.encode("utf-8", errors="surrogateescape"))
        except RuntimeError as exc:
            raise ConversionError(f"cannot rewrite {path} in the guest: {exc}") from exc
        self.note(step, what, path)

    def set_aside(self, path: str, step: str, why: str) -> None:
        """Move a file that must stop taking effect to its backup place (inert there)."""
        backup = backup_of(path)
        self.g.mkdir_p(posixpath.dirname(backup))
        self.g.mv(path, backup)
        self.note(step, f"{why}: moved to {backup}", path)
