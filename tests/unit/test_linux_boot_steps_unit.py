"""The pure parts of the kernel, initramfs and bootloader steps: version order, kernel ranking,
the initramfs-tools modules file, grub2/grub legacy/grubenv text."""

from __future__ import annotations

from typing import Any

import pytest

from vmshift.convert.linux import bootloader as bl
from vmshift.convert.linux import initramfs, kernel
from vmshift.convert.linux.context import LinuxGuest
from vmshift.formats import grub, kmod
from vmshift.model.inspection import (
    Bootloader,
    DriverPresence,
    LinuxDetails,
    LinuxKernel,
    OperatingSystem,
)
from vmshift.model.vm import SourceVM

from .fake_guestfs import FakeG

MOD, BUILTIN, ABSENT = DriverPresence.MODULE, DriverPresence.BUILTIN, DriverPresence.ABSENT


def kern(
    version: str,
    blk: DriverPresence = MOD,
    net: DriverPresence = MOD,
    scsi: DriverPresence = MOD,
    vmlinuz: str | None = None,
) -> LinuxKernel:
    return LinuxKernel(
        version=version,
        path=f"/boot/{vmlinuz or 'vmlinuz-' + version}",
        initramfs=f"/boot/initrd.img-{version}",
        virtio_blk=blk,
        virtio_net=net,
        virtio_scsi=scsi,
        initramfs_virtio_blk=False,
        initramfs_virtio_net=False,
        initramfs_virtio_scsi=False,
    )


# --- versions and kernel ranking ---------------------------------------------------------------


def test_version_order_is_numeric_and_rpm_like() -> None:
    ordered = [
        "5.14.0-70.el9",
        "5.14.0-284.30.1.el9_2.x86_64",
        "5.14.0-362.8.1.el9_3.x86_64",
        "6.1.0-9-amd64",
        "6.1.0-18-amd64",
        "6.1.0-50-amd64",
        "6.1.0-100-amd64",
        "6.10.0-1-amd64",
    ]
    shuffled = [ordered[i] for i in (3, 7, 0, 5, 1, 6, 2, 4)]
    assert sorted(shuffled, key=kernel.version_key) == ordered


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0~rc1", "1.0"),
        ("1.0", "1.0^git1"),
        ("1.0^git1", "1.0.1"),
        ("1.0a", "1.0.1"),  # a number is newer than letters
        ("2.6.18-398.el5", "2.6.18-419.el5"),
        ("1.0", "1.0.0"),
    ],
)
def test_version_pairs(older: str, newer: str) -> None:
    assert kernel.version_key(older) < kernel.version_key(newer)


def test_best_kernel_prefers_newest_with_virtio() -> None:
    ks = [kern("6.1.0-18-amd64"), kern("6.1.0-50-amd64"), kern("6.1.0-9-amd64")]
    best = kernel.best_kernel(ks, block_bus="virtio-blk", default_name="vmlinuz-6.1.0-9-amd64")
    assert best is not None and best.version == "6.1.0-50-amd64"


def test_best_kernel_skips_kernels_without_the_disk_driver() -> None:
    ks = [kern("6.1.0-50-amd64", blk=ABSENT), kern("6.1.0-18-amd64")]
    assert kernel.best_kernel(ks, block_bus="virtio-blk", default_name=None) == ks[1]
    no_scsi = [kern("6.1.0-18-amd64", scsi=ABSENT)]
    assert kernel.best_kernel(no_scsi, block_bus="virtio-scsi", default_name=None) is None
    assert kernel.best_kernel([], block_bus="virtio-blk", default_name=None) is None


def test_best_kernel_demotes_debug_and_kernels_without_virtio_net() -> None:
    debug = kern("5.14.0-362.8.1.el9_3.x86_64+debug")
    plain = kern("5.14.0-284.30.1.el9_2.x86_64")
    assert kernel.best_kernel([debug, plain], block_bus="virtio-blk", default_name=None) == plain
    no_net = kern("6.1.0-50-amd64", net=ABSENT)
    with_net = kern("6.1.0-18-amd64")
    picked = kernel.best_kernel([no_net, with_net], block_bus="virtio-blk", default_name=None)
    assert picked == with_net


def test_best_kernel_excludes_xen_pv_only_kernels() -> None:
    xen = kern("2.6.18-419.el5xen")
    normal = kern("2.6.18-398.el5")
    assert kernel.best_kernel([xen, normal], block_bus="virtio-blk", default_name=None) == normal


def test_best_kernel_breaks_ties_with_the_current_default() -> None:
    a = kern("6.1.0-18-amd64")
    b = kern("6.1.0-18-amd64", vmlinuz="vmlinuz-6.1.0-18-amd64.old")
    for default in (a, b):
        name = default.path.rsplit("/", 1)[-1]
        assert kernel.best_kernel([a, b], block_bus="virtio-blk", default_name=name) == default


def fake_guest(g: Any, kernels: tuple[LinuxKernel, ...], loader: Bootloader) -> LinuxGuest:
    os = OperatingSystem(
        root="/dev/sda1", type="linux", distro="debian", product_name="Debian 12",
        product_variant="unknown", major_version=12, minor_version=5, arch="x86_64",
        hostname="h", package_format="deb", package_manager="apt", osinfo="debian12",
        firmware="bios", mountpoints={"/": "/dev/sda1"}, filesystems=(), applications=(),
        foreign_software=(), linux=LinuxDetails(kernels, loader, ()),
    )  # fmt: skip
    return LinuxGuest(g=g, os=os, vm=SourceVM.__new__(SourceVM), family="debian")


GRUB_CFG = """\
### BEGIN /etc/grub.d/00_header ###
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
else
   set default="0"
fi
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  fi
}
### BEGIN /etc/grub.d/10_linux ###
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux $menuentry_id_option 'gnulinux-simple-u1' {
	load_video
	insmod ext2
	set root='hd0,msdos1'
	echo	'Loading Linux 6.1.0-50-amd64 ...'
	linux	/boot/vmlinuz-6.1.0-50-amd64 root=/dev/sda1 ro console=ttyS0,115200
	initrd	/boot/initrd.img-6.1.0-50-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-u1' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-50-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-50-amd64-advanced-u1' {
		linux	/boot/vmlinuz-6.1.0-50-amd64 root=/dev/sda1 ro console=ttyS0,115200
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-50-amd64 (recovery mode)' --class debian $menuentry_id_option 'gnulinux-6.1.0-50-amd64-recovery-u1' {
		linux	/boot/vmlinuz-6.1.0-50-amd64 root=/dev/sda1 ro single
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)' --class debian $menuentry_id_option 'gnulinux-6.1.0-18-amd64-recovery-u1' {
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro single
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-18-amd64-advanced-u1' {
		linux	/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro console=ttyS0,115200
	}
}
menuentry 'Memory test (memtest86+x64.bin)' {
	linux16	/boot/memtest86+x64.bin
}
"""  # noqa: E501


def test_choose_kernel_records_the_choice_and_reads_the_default() -> None:
    ks = (kern("6.1.0-18-amd64"), kern("6.1.0-50-amd64"), kern("5.10.0-custom", blk=ABSENT))
    g = FakeG({"/boot/grub/grub.cfg": GRUB_CFG, "/etc/default/grub": "GRUB_DEFAULT=0\n"})
    guest = fake_guest(g, ks, Bootloader("grub2", "bios", "/boot/grub/grub.cfg"))
    assert bl.default_kernel_name(guest) == "vmlinuz-6.1.0-50-amd64"
    assert kernel.choose_kernel(guest) is ks[1]
    assert guest.kernel is ks[1]
    (change,) = guest.changes
    assert change.step == "kernel" and "6.1.0-50-amd64" in change.what
    assert change.path == "/boot/vmlinuz-6.1.0-50-amd64"


def test_choose_kernel_none_when_no_kernel_has_virtio() -> None:
    ks = (kern("5.10.0-custom", blk=ABSENT, net=ABSENT, scsi=ABSENT),)
    guest = fake_guest(FakeG({}), ks, Bootloader("unknown", "bios", None))
    assert kernel.choose_kernel(guest) is None
    assert guest.kernel is None
    assert "no installed kernel" in guest.changes[0].what


def test_default_kernel_from_the_vmlinuz_link_without_a_known_bootloader() -> None:
    g = FakeG({}, {"/vmlinuz": "boot/vmlinuz-6.1.0-18-amd64"})
    guest = fake_guest(g, (), Bootloader("unknown", "bios", None))
    assert bl.default_kernel_name(guest) == "vmlinuz-6.1.0-18-amd64"


# --- initramfs ---------------------------------------------------------------------------------


def test_module_names() -> None:
    text = "kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz\n"
    text += "kernel/drivers/virtio/virtio_pci.ko\nkernel/fs/ext4/ext4.ko.zst:\n"
    assert kmod.module_names(text) == {"virtio_blk", "virtio_pci", "ext4"}
    assert kmod.module_name("usr/lib/modules/6.1/kernel/net/virtio_net.ko.gz") == "virtio_net"
    assert kmod.module_name("usr/lib/modules/6.1/modules.dep") is None


def test_add_modules_appends_only_what_is_missing() -> None:
    text = "# List of modules\n#virtio_blk\nvmw_pvscsi\nvirtio-pci   # dash or underscore\next4"
    new, added = initramfs.add_modules(text, initramfs.VIRTIO_DRIVERS)
    assert added == ["virtio_blk", "virtio_scsi", "virtio_net"]
    assert new.startswith(text + "\n# Added by vmshift")
    assert new.endswith("virtio_blk\nvirtio_scsi\nvirtio_net\n")
    again, none = initramfs.add_modules(new, initramfs.VIRTIO_DRIVERS)
    assert again == new and none == []
    assert initramfs.add_modules("", ["virtio_blk"])[0].endswith("\nvirtio_blk\n")


def test_needed_drivers_depend_on_the_bus() -> None:
    assert initramfs.needed_drivers("virtio-blk") == ("virtio_pci", "virtio_blk")
    assert initramfs.needed_drivers("virtio-scsi") == ("virtio_pci", "virtio_blk", "virtio_scsi")


# --- grub2 -------------------------------------------------------------------------------------


def test_parse_menu_reads_entries_submenus_and_kernels() -> None:
    menu = grub.parse_menu(GRUB_CFG)
    assert [e.title for e in menu] == [
        "Debian GNU/Linux",
        "Advanced options for Debian GNU/Linux",
        "Memory test (memtest86+x64.bin)",
    ]
    assert menu[0].linux == "/boot/vmlinuz-6.1.0-50-amd64" and menu[0].id == "gnulinux-simple-u1"
    assert menu[1].children is not None and len(menu[1].children) == 4
    assert menu[1].children[1].is_recovery and not menu[1].children[0].is_recovery
    assert menu[2].linux == "/boot/memtest86+x64.bin" and menu[2].id is None


@pytest.mark.parametrize(
    ("value", "linux"),
    [
        ("0", "/boot/vmlinuz-6.1.0-50-amd64"),
        ("1>3", "/boot/vmlinuz-6.1.0-18-amd64"),
        ("gnulinux-advanced-u1>gnulinux-6.1.0-18-amd64-advanced-u1",
         "/boot/vmlinuz-6.1.0-18-amd64"),
        ("Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux 6.1.0-18-amd64",
         "/boot/vmlinuz-6.1.0-18-amd64"),
        ("Memory test (memtest86+x64.bin)", "/boot/memtest86+x64.bin"),
        ("1", None),  # a submenu boots nothing itself
        ("7", None),
        ("no-such-id", None),
    ],
)  # fmt: skip
def test_resolve_entry(value: str, linux: str | None) -> None:
    entry = grub.resolve_entry(grub.parse_menu(GRUB_CFG), value)
    assert (entry.linux if entry else None) == linux


def test_entry_ref_prefers_top_level_and_skips_recovery() -> None:
    menu = grub.parse_menu(GRUB_CFG)
    assert grub.entry_ref(menu, "vmlinuz-6.1.0-50-amd64") == "gnulinux-simple-u1"
    ref = grub.entry_ref(menu, "vmlinuz-6.1.0-18-amd64")
    assert ref == "gnulinux-advanced-u1>gnulinux-6.1.0-18-amd64-advanced-u1"
    assert grub.entry_ref(menu, "vmlinuz-9.9") is None


def test_grub_default_get_and_set() -> None:
    text = '# GRUB_DEFAULT=saved\nGRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="quiet"\n'
    assert grub.grub_default(text) == "0"
    new = grub.set_grub_default(text, "a>b")
    assert new == text.replace("\nGRUB_DEFAULT=0\n", '\nGRUB_DEFAULT="a>b"\n')
    assert grub.grub_default(new) == "a>b"
    assert grub.grub_default("GRUB_TIMEOUT=1\n") == "0"
    assert (
        grub.set_grub_default("GRUB_TIMEOUT=1", "saved") == 'GRUB_DEFAULT="saved"\nGRUB_TIMEOUT=1\n'
    )
    assert grub.grub_default("GRUB_DEFAULT=saved\n") == "saved"


def test_grubenv_keeps_its_size_and_other_variables() -> None:
    head = "# GRUB Environment Block\nsaved_entry=old\nboot_success=1\n"
    env = head + "#" * (1024 - len(head))
    new = grub.set_grubenv(env, "saved_entry", "abc-5.14.0-362.8.1.el9_3.x86_64")
    assert len(new) == 1024
    assert grub.parse_grubenv(new) == {
        "saved_entry": "abc-5.14.0-362.8.1.el9_3.x86_64",
        "boot_success": "1",
    }
    assert len(grub.set_grubenv("", "saved_entry", "x")) == 1024
    with pytest.raises(ValueError):
        grub.set_grubenv(env, "kernelopts", "x" * 1100)


def test_bls_and_stub_detection() -> None:
    assert grub.is_bls("set default=x\nblscfg\n") and not grub.is_bls(GRUB_CFG)
    stub = (
        "search.fs_uuid 1234 root hd0,gpt2\nset prefix=($root)'/boot/grub'\n"
        "configfile $prefix/grub.cfg\n"
    )
    assert grub.is_stub(stub) and not grub.is_stub(GRUB_CFG) and not grub.is_stub("blscfg\n")
    entry = "title RHEL\nversion 5.14\nlinux /vmlinuz-5.14\ninitrd /initramfs-5.14.img\n"
    assert grub.bls_linux(entry) == "/vmlinuz-5.14"


def test_appliance_root_names_are_replaced_on_kernel_lines_only() -> None:
    fstab = (
        "# <fs> <mp>\n/dev/sda2 /boot ext4 defaults 0 2\nUUID=abcd  /  ext4 errors=remount-ro 0 1\n"
    )
    assert grub.fstab_root(fstab) == "UUID=abcd"
    assert grub.fstab_root("proc /proc proc defaults 0 0\n") is None
    fixed = grub.replace_kernel_root(GRUB_CFG, "UUID=abcd")
    assert "root=/dev/sda1" not in fixed
    assert fixed.count("root=UUID=abcd ro") == 5
    assert "set root='hd0,msdos1'" in fixed
    # Nothing else moves.
    assert fixed.replace("root=UUID=abcd", "root=/dev/sda1") == GRUB_CFG
    same = grub.replace_kernel_root(GRUB_CFG, "/dev/sda1")
    assert same == GRUB_CFG
    lvm = "\tlinux /vmlinuz root=/dev/mapper/vg-root ro\n"
    assert grub.replace_kernel_root(lvm, "/dev/vda1") == lvm


# --- grub legacy -------------------------------------------------------------------------------

MENU_LST = """\
# grub.conf generated by anaconda
#boot=/dev/sda
default 1
timeout=5
hiddenmenu
title CentOS (2.6.18-419.el5xen)
	root (hd0,0)
	kernel /xen.gz-2.6.18-419.el5
	module /vmlinuz-2.6.18-419.el5xen ro root=/dev/VolGroup00/LogVol00
title CentOS (2.6.18-419.el5)
	root (hd0,0)
	kernel (hd0,0)/vmlinuz-2.6.18-419.el5 ro root=/dev/VolGroup00/LogVol00 single
title CentOS (2.6.18-419.el5)
	root (hd0,0)
	kernel /vmlinuz-2.6.18-419.el5 ro root=/dev/VolGroup00/LogVol00
	initrd /initrd-2.6.18-419.el5.img
"""


def test_grub1_entries_and_default() -> None:
    assert grub.grub1_kernels(MENU_LST) == [
        "/xen.gz-2.6.18-419.el5",
        "/vmlinuz-2.6.18-419.el5",
        "/vmlinuz-2.6.18-419.el5",
    ]
    assert grub.grub1_default(MENU_LST) == 1
    assert grub.grub1_entry_index(MENU_LST, "vmlinuz-2.6.18-419.el5") == 2
    assert grub.grub1_entry_index(MENU_LST, "vmlinuz-9") is None
    new = grub.set_grub1_default(MENU_LST, 2)
    assert new == MENU_LST.replace("default 1\n", "default 2\n")
    assert grub.grub1_default(new) == 2


def test_grub1_default_added_when_missing() -> None:
    text = "# comment\ntimeout=5\ntitle A\n\tkernel /vmlinuz-a\ntitle B\n\tkernel /vmlinuz-b\n"
    assert grub.grub1_default(text) == 0
    new = grub.set_grub1_default(text, 1)
    assert new.startswith("# comment\ndefault=1\ntimeout=5\n")
    assert grub.grub1_default("default=saved\ntitle A\n") is None
    assert grub.grub1_default("default=3\n") == 3
