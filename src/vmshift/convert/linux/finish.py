"""Last touches: SELinux labels, caches and udev rules that remember the old machine.

SELinux: files written through libguestfs carry no SELinux label, and an enforcing guest may
refuse to read an unlabelled fstab or initramfs. The guest is asked to relabel itself on first
boot (/.autorelabel, honoured by RHEL/Fedora's selinux-autorelabel, SUSE and Debian's
selinux-basics): one extra reboot on the new machine, instead of running setfiles over the whole
filesystem here, which under TCG costs minutes and needs the guest's policy to load in the
appliance. The guest stays in its own SELinux mode throughout.

Network naming rules (70-persistent-net.rules) belong to network.py and are left alone here.
"""

from __future__ import annotations

import re

from vmshift.convert.linux import devices
from vmshift.convert.linux.context import LinuxGuest

STEP = "finish"

SELINUX_CONFIG = "/etc/selinux/config"
AUTORELABEL = "/.autorelabel"
# udev's persistent CD-ROM names pin /dev/cdrom to the old controller's path; on the new one
# udev would call the drive cdrom1. Without the file it writes a fresh one at first boot.
CD_RULES = "/etc/udev/rules.d/70-persistent-cd.rules"
UDEV_RULES = "/etc/udev/rules.d/*.rules"
NET_RULES = "/etc/udev/rules.d/70-persistent-net.rules"
_PINNED_DISK = re.compile(r'KERNEL\s*==\s*"(?:sd|hd|xvd)[a-z*?\[]')


def run(guest: LinuxGuest) -> None:
    _selinux(guest)
    devices.remove_caches(guest, STEP)
    _udev_rules(guest)


def selinux_mode(config: str) -> str | None:
    """SELINUX= of /etc/selinux/config: enforcing, permissive, disabled; None when unset."""
    mode = None
    for line in config.splitlines():
        m = re.match(r"\s*SELINUX\s*=\s*[\"']?(\w+)", line)
        if m:
            mode = m[1].lower()
    return mode


def _selinux(guest: LinuxGuest) -> None:
    config = devices.read(guest, SELINUX_CONFIG)
    if config is None or selinux_mode(config) not in ("enforcing", "permissive"):
        return
    g = guest.g
    if g.exists(AUTORELABEL):
        return
    g.touch(AUTORELABEL)
    guest.note(STEP, "relabel at first boot: files written here carry no label", AUTORELABEL)


def _udev_rules(guest: LinuxGuest) -> None:
    g = guest.g
    if g.is_file(CD_RULES):
        # udev reads only *.rules: the backup is inert.
        guest.set_aside(CD_RULES, STEP, "CD-ROM names pinned to the old controller")
    for path in devices.existing(guest, (), (UDEV_RULES,)):
        if path == NET_RULES:
            continue
        text = devices.read(guest, path) or ""
        if any(_PINNED_DISK.search(line) for line in text.splitlines() if not line.startswith("#")):
            guest.warn(
                f"{path} matches disks by their kernel names (sdX/hdX/xvdX), which change on "
                "the new machine: check its rules after conversion"
            )
