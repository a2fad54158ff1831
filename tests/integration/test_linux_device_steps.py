"""The devices, consoles and finish steps of the Linux conversion on real appliance runs.

Each guest is converted once per module (one appliance launch each, on a qcow2 overlay so the
cached image is never written): the phony Debian (root by /dev/sda1) and RHEL (BLS, /boot and
swap partitions, LVM and SELinux files added before the steps run), and the real Debian 12
VMware guest. The tests then compare the files the steps left with what they must be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.guests import linux_deb, linux_rpm
from tests.guests.linux_files import machine_id
from tests.guests.manifest import BuiltGuest
from vmshift.blockio.imageinfo import probe_image
from vmshift.convert.linux import consoles, devices, finish
from vmshift.convert.linux.context import LinuxGuest, family_of
from vmshift.guest.inspect import mount_os
from vmshift.guest.session import open_session
from vmshift.model.caps import Change
from vmshift.model.inspection import Filesystem, OperatingSystem
from vmshift.model.vm import Controller, DiskEndpoint, Firmware, SourceDisk, SourceVM

pytestmark = pytest.mark.slow

Prepare = Callable[[Any], None]


@dataclass
class Converted:
    before: dict[str, str | None]  # files as the steps found them (after prepare)
    after: dict[str, str | None]
    exists: dict[str, bool]  # after the steps
    links: dict[str, str | None]
    changes: list[Change]
    warnings: list[str]
    seconds: float

    def changed_paths(self, step: str) -> list[str]:
        return [c.path for c in self.changes if c.step == step and c.path]


def _vm(name: str, disks: int, model: str) -> SourceVM:
    return SourceVM(
        name=name,
        memory=1 << 30,
        vcpus=1,
        topology=None,
        firmware=Firmware.BIOS,
        disks=tuple(
            SourceDisk(
                DiskEndpoint(f"/nonexistent/{name}-{i}.vmdk", "vmdk", 1 << 30),
                Controller.SCSI,
                0,
                i,
                controller_model=model,
                name=f"sd{chr(ord('a') + i)}",
            )
            for i in range(disks)
        ),
        origin="vmware",
    )


def _read(g: Any, path: str) -> str | None:
    if not g.is_file(path, followsymlinks=True):
        return None
    return bytes(g.read_file(path)).decode("utf-8", errors="surrogateescape")


def _convert(
    image: Path, workdir: Path, vm: SourceVM, prepare: Prepare, paths: list[str]
) -> Converted:
    """Run the three steps on an overlay of image and read back `paths`."""
    workdir.mkdir(parents=True, exist_ok=True)
    overlay = workdir / "overlay.qcow2"
    fmt = probe_image(image, check=False).format
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", fmt, str(overlay)],
        check=True,
    )
    start = time.monotonic()
    with open_session([probe_image(overlay, check=False)], readonly=False) as session:
        g = session.g
        os_ = _light_inspection(g)
        mount_os(g, os_.mountpoints, readonly=False)
        prepare(g)
        before = {p: _read(g, p) for p in paths}
        guest = LinuxGuest(g=g, os=os_, vm=vm, family=family_of(os_), block_bus="virtio-blk")
        devices.rename_block_devices(guest)
        consoles.fix(guest)
        finish.run(guest)
        after = {p: _read(g, p) for p in paths}
        exists = {p: bool(g.exists(p)) for p in paths}
        links = {p: str(g.readlink(p)) if g.is_symlink(p) else None for p in paths}
        g.sync()
        g.umount_all()
    return Converted(
        before, after, exists, links, guest.changes, guest.warnings, time.monotonic() - start
    )


def _light_inspection(g: Any) -> OperatingSystem:
    """The part of inspect_session these steps read (distro, version, mountpoints,
    filesystems), without the kernel, initramfs and package inspection that would double
    the time of each launch under TCG."""
    (root,) = g.inspect_os()
    filesystems = tuple(
        Filesystem(dev, g.vfs_type(dev), None, g.vfs_uuid(dev) or None, None, None)
        for dev in sorted(g.inspect_get_filesystems(root))
    )
    return OperatingSystem(
        root=root,
        type="linux",
        distro=g.inspect_get_distro(root),
        product_name=g.inspect_get_product_name(root),
        product_variant="",
        major_version=g.inspect_get_major_version(root),
        minor_version=g.inspect_get_minor_version(root),
        arch="x86_64",
        hostname="",
        package_format=g.inspect_get_package_format(root),
        package_manager=g.inspect_get_package_management(root),
        osinfo="",
        firmware="bios",
        mountpoints=dict(g.inspect_get_mountpoints(root)),
        filesystems=filesystems,
        applications=(),
        foreign_software=(),
    )


def _write(g: Any, path: str, text: str) -> None:
    g.mkdir_p(path.rsplit("/", 1)[0] or "/")
    g.write(path, text.encode())


# --- phony Debian: root by /dev/sda1, Xen consoles and VMware X added ------------------------

DEB_DEFAULT_GRUB = """\
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="resume=/dev/sda5 console=hvc0"
# GRUB_DISABLE_LINUX_UUID=true
"""
DEB_INITTAB = """\
id:2:initdefault:
1:2345:respawn:/sbin/getty 38400 tty1
co:2345:respawn:/sbin/agetty hvc0 9600 vt100-nav
"""
DEB_XORG = """\
Section "Device"
\tIdentifier  "Card0"
\tDriver      "vmware"
\tBusID       "PCI:0:15:0"
EndSection
"""
DEB_X_VMWARE = 'Section "Device"\n\tIdentifier "vmware"\n\tDriver "vmwgfx"\nEndSection\n'
DEB_X_KEYBOARD = 'Section "InputClass"\n\tIdentifier "kbd"\n\tOption "XkbLayout" "de"\nEndSection\n'
SERIAL_GETTY = "/lib/systemd/system/serial-getty@.service"
WANTS = "/etc/systemd/system/getty.target.wants"
MODESETTING = "/usr/lib/xorg/modules/drivers/modesetting_drv.so"


def _prepare_debian(g: Any) -> None:
    _write(g, "/etc/default/grub", DEB_DEFAULT_GRUB)
    _write(g, "/boot/grub/device.map", "(hd0)\t/dev/sda\n")
    _write(g, "/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/sda5\n")
    _write(g, "/etc/inittab", DEB_INITTAB)
    _write(g, "/etc/securetty", "console\ntty1\nhvc0\n")
    _write(g, SERIAL_GETTY, "[Unit]\nDescription=Serial Getty on %I\n")
    g.mkdir_p(WANTS)
    g.ln_s(SERIAL_GETTY, f"{WANTS}/serial-getty@hvc0.service")
    _write(g, "/etc/X11/xorg.conf", DEB_XORG)
    _write(g, "/etc/X11/xorg.conf.d/20-vmware.conf", DEB_X_VMWARE)
    _write(g, "/etc/X11/xorg.conf.d/40-keyboard.conf", DEB_X_KEYBOARD)
    _write(g, MODESETTING, "\x7fELF")
    _write(g, "/etc/blkid.tab", '<device DEVNO="0x0801">/dev/sda1</device>\n')
    _write(g, "/etc/lvm/cache/.cache", "persistent_filter_cache { }\n")
    _write(g, "/etc/udev/rules.d/70-persistent-cd.rules", 'SUBSYSTEM=="block", SYMLINK+="cdrom"\n')
    _write(g, "/etc/udev/rules.d/70-persistent-net.rules", 'NAME="ens192"\n')
    _write(g, "/etc/udev/rules.d/99-data.rules", 'KERNEL=="sdb1", SYMLINK+="data"\n')


DEB_PATHS = [
    "/etc/fstab",
    "/etc/fstab.vmshift-orig",
    "/boot/grub/grub.cfg",
    "/etc/default/grub",
    "/etc/default/grub.vmshift-orig",
    "/boot/grub/device.map",
    "/etc/initramfs-tools/conf.d/resume",
    "/etc/inittab",
    "/etc/securetty",
    f"{WANTS}/serial-getty@hvc0.service",
    f"{WANTS}/serial-getty@ttyS0.service",
    "/etc/X11/xorg.conf",
    "/etc/X11/xorg.conf.d/20-vmware.conf",
    "/etc/X11/xorg.conf.d/20-vmware.conf.vmshift-orig",
    "/etc/X11/xorg.conf.d/40-keyboard.conf",
    "/etc/blkid.tab",
    "/etc/lvm/cache/.cache",
    "/etc/udev/rules.d/70-persistent-cd.rules",
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/.autorelabel",
]


@pytest.fixture(scope="module")
def debian(
    linux_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> Converted:
    (image,) = linux_guests["debian"].disks
    work = tmp_path_factory.mktemp("debian")
    return _convert(image, work, _vm("debian", 1, "pvscsi"), _prepare_debian, DEB_PATHS)


def test_debian_fstab_names_root_by_uuid(debian: Converted) -> None:
    root_uuid = linux_deb.debian().job.formatted().uuids["/"]
    before = debian.before["/etc/fstab"]
    assert before is not None and "/dev/sda1\t/\t" in before
    assert debian.after["/etc/fstab"] == before.replace("/dev/sda1\t/", f"UUID={root_uuid}\t/")
    assert "# / was on /dev/sda1 during installation" in before  # the comment stays
    assert debian.after["/etc/fstab.vmshift-orig"] == before


def test_debian_grub_cfg_boots_from_vda(debian: Converted) -> None:
    before = debian.before["/boot/grub/grub.cfg"]
    assert before is not None and "root=/dev/sda1 ro quiet" in before
    assert debian.after["/boot/grub/grub.cfg"] == before.replace("root=/dev/sda1", "root=/dev/vda1")


def test_debian_kernel_command_line_files(debian: Converted) -> None:
    assert debian.after["/etc/default/grub"] == DEB_DEFAULT_GRUB.replace(
        "resume=/dev/sda5 console=hvc0", "resume=/dev/vda5 console=ttyS0"
    )
    assert debian.after["/etc/default/grub.vmshift-orig"] == DEB_DEFAULT_GRUB
    assert debian.after["/boot/grub/device.map"] == "(hd0)\t/dev/vda\n"
    assert debian.after["/etc/initramfs-tools/conf.d/resume"] == "RESUME=/dev/vda5\n"


def test_debian_consoles_move_to_ttys0(debian: Converted) -> None:
    assert debian.after["/etc/inittab"] == DEB_INITTAB.replace("agetty hvc0", "agetty ttyS0")
    assert debian.after["/etc/securetty"] == "console\ntty1\nhvc0\nttyS0\n"
    assert not debian.exists[f"{WANTS}/serial-getty@hvc0.service"]
    assert debian.links[f"{WANTS}/serial-getty@ttyS0.service"] == SERIAL_GETTY


def test_debian_x_uses_modesetting(debian: Converted) -> None:
    assert debian.after["/etc/X11/xorg.conf"] == DEB_XORG.replace(
        '"vmware"', '"modesetting"'
    ).replace("\tBusID", "\t#BusID")
    assert not debian.exists["/etc/X11/xorg.conf.d/20-vmware.conf"]
    assert debian.after["/etc/X11/xorg.conf.d/20-vmware.conf.vmshift-orig"] == DEB_X_VMWARE
    assert debian.after["/etc/X11/xorg.conf.d/40-keyboard.conf"] == DEB_X_KEYBOARD


def test_debian_caches_and_rules(debian: Converted) -> None:
    assert not debian.exists["/etc/blkid.tab"]
    assert not debian.exists["/etc/lvm/cache/.cache"]
    assert not debian.exists["/etc/udev/rules.d/70-persistent-cd.rules"]
    assert debian.after["/etc/udev/rules.d/70-persistent-net.rules"] == 'NAME="ens192"\n'
    assert not debian.exists["/.autorelabel"]  # no SELinux
    assert any("99-data.rules" in w for w in debian.warnings), debian.warnings


def test_debian_every_change_is_recorded(debian: Converted) -> None:
    changed = set(debian.changed_paths("devices"))
    assert changed == {
        "/etc/fstab",
        "/boot/grub/grub.cfg",
        "/etc/default/grub",
        "/boot/grub/device.map",
        "/etc/initramfs-tools/conf.d/resume",
        "/etc/blkid.tab",
        "/etc/lvm/cache/.cache",
    }
    assert {
        "/etc/default/grub",
        "/etc/inittab",
        "/etc/securetty",
        "/etc/X11/xorg.conf",
        "/etc/X11/xorg.conf.d/20-vmware.conf",
    } <= set(debian.changed_paths("consoles"))
    assert "/etc/udev/rules.d/70-persistent-cd.rules" in debian.changed_paths("finish")


# --- phony RHEL: BLS, grubenv, /boot and swap by device name, LVM, SELinux -------------------

RHEL_LVM_CONF = """\
devices {
\t# filter = [ "a|.*|" ]
\tfilter = [ "a|^/dev/sda[0-9]*$|", "r|.*|" ]
}
"""


def _rhel_facts() -> tuple[dict[str, str], str]:
    return linux_rpm.rhel().job.formatted().uuids, machine_id("rhel93-esx")


def _prepare_rhel(g: Any) -> None:
    uuids, _ = _rhel_facts()
    root, swap = uuids["/"], uuids["swap"]
    _write(
        g,
        "/etc/fstab",
        f"UUID={root} / ext4 defaults 1 1\n/dev/sda1 /boot ext4 defaults 1 2\n"
        "/dev/sda2 none swap defaults 0 0\n",
    )
    _write(g, "/etc/crypttab", "cswap /dev/sda2 /dev/urandom swap\n")
    for entry in g.glob_expand("/boot/loader/entries/*.conf"):
        text = bytes(g.read_file(entry)).decode()
        text = text.replace(f"root=UUID={root}", "root=/dev/sda3")
        text = text.replace(f"resume=UUID={swap}", "resume=/dev/sda2 console=hvc0")
        _write(g, entry, text)
    grub = bytes(g.read_file("/etc/default/grub")).decode()
    _write(g, "/etc/default/grub", grub.replace(f"resume=UUID={swap}", "resume=/dev/sda2"))
    g.ln_s("../default/grub", "/etc/sysconfig/grub")
    env = "# GRUB Environment Block\nkernelopts=root=/dev/sda3 ro resume=/dev/sda2\n"
    _write(g, "/boot/grub2/grubenv", env + "#" * (1024 - len(env)))
    _write(g, "/etc/kernel/cmdline", "root=/dev/sda3 ro resume=/dev/sda2\n")
    _write(g, "/etc/lvm/lvm.conf", RHEL_LVM_CONF)
    _write(
        g,
        "/etc/lvm/devices/system.devices",
        "IDTYPE=sys_wwid IDNAME=naa.6000c29 DEVNAME=/dev/sda2\n",
    )
    _write(g, "/etc/lvm/cache/.cache", "cache\n")
    _write(g, "/etc/blkid/blkid.tab", "cache\n")
    _write(g, "/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n")


def _rhel_entries() -> list[str]:
    _, mid = _rhel_facts()
    versions = ("5.14.0-362.8.1.el9_3.x86_64", "5.14.0-284.30.1.el9_2.x86_64", "0-rescue")
    return [f"/boot/loader/entries/{mid}-{v}.conf" for v in versions]


RHEL_PATHS = [
    "/etc/fstab",
    "/etc/crypttab",
    "/etc/default/grub",
    "/boot/grub2/grubenv",
    "/etc/kernel/cmdline",
    "/etc/lvm/lvm.conf",
    "/etc/lvm/devices/system.devices",
    "/etc/lvm/devices/system.devices.vmshift-orig",
    "/etc/lvm/cache/.cache",
    "/etc/blkid/blkid.tab",
    "/.autorelabel",
    *_rhel_entries(),
]


@pytest.fixture(scope="module")
def rhel(
    linux_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> Converted:
    (image,) = linux_guests["rhel"].disks
    work = tmp_path_factory.mktemp("rhel")
    return _convert(image, work, _vm("rhel", 1, "lsilogic"), _prepare_rhel, RHEL_PATHS)


def test_rhel_fstab_boot_and_swap_by_uuid(rhel: Converted) -> None:
    uuids, _ = _rhel_facts()
    assert rhel.after["/etc/fstab"] == (
        f"UUID={uuids['/']} / ext4 defaults 1 1\nUUID={uuids['/boot']} /boot ext4 defaults 1 2\n"
        f"UUID={uuids['swap']} none swap defaults 0 0\n"
    )
    # Plain dm-crypt swap is re-keyed at every boot: no stable UUID, so only the new name.
    assert rhel.after["/etc/crypttab"] == "cswap /dev/vda2 /dev/urandom swap\n"


def test_rhel_bls_entries_and_command_lines(rhel: Converted) -> None:
    for entry in _rhel_entries():
        before = rhel.before[entry]
        assert before is not None and "root=/dev/sda3" in before, entry
        assert rhel.after[entry] == before.replace("/dev/sda", "/dev/vda").replace(
            "console=hvc0", "console=ttyS0"
        )
    grub = rhel.before["/etc/default/grub"]
    assert grub is not None and "resume=/dev/sda2" in grub
    assert rhel.after["/etc/default/grub"] == grub.replace("/dev/sda2", "/dev/vda2")
    assert rhel.after["/etc/kernel/cmdline"] == "root=/dev/vda3 ro resume=/dev/vda2\n"
    env = rhel.after["/boot/grub2/grubenv"]
    assert env is not None and len(env) == 1024
    assert "\nkernelopts=root=/dev/vda3 ro resume=/dev/vda2\n#" in env
    # /etc/sysconfig/grub links to /etc/default/grub: edited once, through its real path.
    assert rhel.changed_paths("devices").count("/etc/default/grub") == 1


def test_rhel_lvm(rhel: Converted) -> None:
    assert rhel.after["/etc/lvm/lvm.conf"] == RHEL_LVM_CONF.replace(
        '"a|^/dev/sda[0-9]*$|",', '"a|^/dev/sda[0-9]*$|", "a|^/dev/vda[0-9]*$|",'
    )
    assert not rhel.exists["/etc/lvm/devices/system.devices"]
    assert rhel.exists["/etc/lvm/devices/system.devices.vmshift-orig"]
    assert not rhel.exists["/etc/lvm/cache/.cache"]
    assert not rhel.exists["/etc/blkid/blkid.tab"]


def test_rhel_selinux_relabels_on_first_boot(rhel: Converted) -> None:
    assert rhel.exists["/.autorelabel"]
    assert "/.autorelabel" in rhel.changed_paths("finish")
    assert rhel.warnings == []


# --- the real Debian 12 VMware guest ---------------------------------------------------------


@dataclass
class RealDebian:
    converted: Converted
    root_uuid: str  # as blkid reads it in the appliance, before any step ran


@pytest.fixture(scope="module")
def real(real_debian: BuiltGuest, tmp_path_factory: pytest.TempPathFactory) -> RealDebian:
    (image,) = real_debian.disks
    work = tmp_path_factory.mktemp("real-debian")
    uuid: list[str] = []

    def prepare(g: Any) -> None:
        uuid.append(str(g.vfs_uuid("/dev/sda1")))

    paths = ["/etc/fstab", "/boot/grub/grub.cfg", "/etc/default/grub"]
    done = _convert(image, work, _vm("real", 1, "pvscsi"), prepare, paths)
    return RealDebian(done, uuid[0])


@pytest.mark.realguest
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("debootstrap"),
    reason="building the guest needs root and debootstrap",
)
def test_real_debian_names_root_by_uuid_and_vda(real: RealDebian) -> None:
    done = real.converted
    fstab = done.after["/etc/fstab"]
    assert real.root_uuid and fstab is not None
    assert f"\nUUID={real.root_uuid}       /               ext4    errors=remount-ro" in fstab
    assert "/dev/sda" not in fstab
    grub_cfg = done.after["/boot/grub/grub.cfg"]
    assert grub_cfg is not None and "/dev/sda" not in grub_cfg
    assert "root=/dev/vda1 ro" in grub_cfg
    assert "/dev/sda" not in (done.after["/etc/default/grub"] or "")
    assert {"/etc/fstab", "/boot/grub/grub.cfg"} <= set(done.changed_paths("devices"))
    assert done.warnings == []
