"""Phony Linux guests: a few MiB of the right files on small disks, built in about 30 s, that
libguestfs inspection recognises fully (like libguestfs's own test-data/phony-guests).

- debian: Debian 12 on VMware, fstab and grub naming /dev/sda1; vmdk
- ubuntu: Ubuntu 22.04, virtio built into the kernel, netplan, Hyper-V tools; vhdx
- rhel: RHEL 9.3, two kernels and a rescue one, BLS, ifcfg + NM keyfile; qcow2 with /boot, swap
- suse: SLES 15 SP5, wicked, rpm database in /usr/lib/sysimage; vdi
- debian-lvm: root on LV vg0/root, /boot on its own partition; qcow2
- debian-uefi: GPT with an ESP on /boot/efi, systemd-networkd; raw
- debian-twodisks: /var (with the dpkg database) on a second disk; raw + qcow2
- nokernel: Debian 11 whose only kernel has no virtio at all; qcow2
- empty: one ext4 partition and no operating system; raw

Every guest can run its distribution's tools through libguestfs g.command: a static busybox is
its /bin/sh and stubs stand in for dracut, grub2-mkconfig, grubby, rpm, update-initramfs,
update-grub, grub-mkconfig and dpkg, logging each call to /var/log/vmshift-stub-calls.log
(stub_tools.py documents the format and what each stub leaves behind).

The recipes live in linux_deb.py and linux_rpm.py; each states what it built as an ExpectedOS
whose libguestfs-derived values were checked against real inspection by
tests/integration/test_linux_guests_build.py.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.guests import (
    disks,
    initramfs_image,
    kernel_files,
    linux_deb,
    linux_files,
    linux_rpm,
    recipe,
    rpmdb,
    stub_tools,
)
from tests.guests.cache import cached_dir, source_version
from tests.guests.disks import DiskJob, DiskSpec, Volume
from tests.guests.manifest import BuiltGuest
from tests.guests.recipe import Recipe


def empty() -> Recipe:
    job = DiskJob("empty", (DiskSpec("empty", 64, "dos"),), (Volume("/", "ext4", 0, 1),))
    return Recipe(job, None)


# Debian first: its fstab names /dev/sda1, which resolves right when its disk is added first.
RECIPES: tuple[Callable[[], Recipe], ...] = (
    linux_deb.debian,
    linux_deb.ubuntu,
    linux_rpm.rhel,
    linux_rpm.suse,
    linux_deb.debian_lvm,
    linux_deb.debian_uefi,
    linux_deb.debian_twodisks,
    linux_deb.nokernel,
    empty,
)

# Editing any of these rebuilds the cached guests.
_SOURCES = (
    __file__,
    disks.__file__,
    initramfs_image.__file__,
    kernel_files.__file__,
    linux_deb.__file__,
    linux_files.__file__,
    linux_rpm.__file__,
    recipe.__file__,
    rpmdb.__file__,
    stub_tools.__file__,
)


def build_all() -> dict[str, BuiltGuest]:
    """Every phony Linux guest (and `empty`), built once into the test cache, keyed by name.

    Ordered as RECIPES: adding the disks of several guests to one handle in this order keeps
    the /dev/sdX names in their fstabs right."""
    recipes = [make() for make in RECIPES]
    jobs = [r.job for r in recipes]
    where = cached_dir(
        "linux-guests", source_version(*_SOURCES), lambda d: disks.build_disks(jobs, d)
    )
    return {
        r.job.name: BuiltGuest(
            name=r.job.name,
            disks=tuple(where / d.filename for d in r.job.disks),
            oses=(r.expected,) if r.expected else (),
        )
        for r in recipes
    }
