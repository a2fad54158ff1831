"""Block device renaming (devmap.py) and the console/X/SELinux text transforms of the Linux
conversion, on config files as real installers and tools write them."""

from __future__ import annotations

import pytest

from vmshift.convert.linux import devmap
from vmshift.convert.linux.consoles import (
    FOREIGN_X_DRIVERS,
    cmdline_consoles,
    inittab_consoles,
    only_foreign_devices,
    securetty_ttys0,
    x_devices,
)
from vmshift.convert.linux.finish import selinux_mode
from vmshift.model.vm import Controller, DiskEndpoint, Removable, SourceDisk

_EP = DiskEndpoint("/tmp/disk.img", "raw", 1 << 30)


def disk(controller: Controller, bus: int = 0, unit: int = 0) -> SourceDisk:
    return SourceDisk(_EP, controller, bus, unit)


SCSI2 = [disk(Controller.SCSI, 0, 0), disk(Controller.SCSI, 0, 1)]
VDA = {"sda": "vda", "sdb": "vdb", "hda": "vda", "xvda": "vda"}


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "distro", "major", "prefix"),
    [
        ("rhel", "rhel", 5, "hd"),
        ("rhel", "centos", 4, "hd"),
        ("rhel", "rhel", 6, "sd"),
        ("suse", "sles", 10, "hd"),
        ("suse", "sles", 15, "sd"),
        ("debian", "debian", 5, "hd"),
        ("debian", "debian", 12, "sd"),
        ("debian", "ubuntu", 6, "hd"),
        ("debian", "ubuntu", 8, "sd"),
    ],
)
def test_ide_prefix_follows_the_move_to_libata(
    family: str, distro: str, major: int, prefix: str
) -> None:
    assert devmap.ide_prefix(family, distro, major) == prefix


def test_vmware_scsi_disks_become_virtio_blk_in_order() -> None:
    mapping = devmap.device_map(SCSI2, "virtio-blk")
    assert mapping == {"sda": "vda", "sdb": "vdb", "xvda": "vda", "xvdb": "vdb"}


def test_virtio_scsi_and_sata_targets_keep_sd_names() -> None:
    for bus in ("virtio-scsi", "sata"):
        mapping = devmap.device_map(SCSI2, bus)
        assert devmap.renames(mapping) == {"xvda": "sda", "xvdb": "sdb"}


def test_modern_ide_disks_are_sd_in_probe_order() -> None:
    disks = [disk(Controller.IDE, 0, 0), disk(Controller.IDE, 1, 0)]
    assert devmap.device_map(disks, "virtio-blk")["sdb"] == "vdb"


def test_old_ide_disks_are_named_by_their_place_on_the_cable() -> None:
    # ide0:0 -> hda, ide1:0 -> hdc (hdb is the primary slave, absent here)
    disks = [disk(Controller.IDE, 0, 0), disk(Controller.IDE, 1, 0)]
    mapping = devmap.device_map(disks, "virtio-blk", ide="hd")
    assert mapping["hda"] == "vda"
    assert mapping["hdc"] == "vdb"
    assert "hdb" not in mapping


def test_mixed_old_ide_and_scsi_follow_the_controllers() -> None:
    disks = [disk(Controller.IDE, 0, 0), disk(Controller.SCSI, 0, 0)]
    mapping = devmap.device_map(disks, "virtio-blk", ide="hd", used={"hda", "sda", "sdb"})
    assert mapping["hda"] == "vda"
    assert mapping["sda"] == "vdb"
    # Both families were predicted: a name outside them is not guessed by position.
    assert "sdb" not in mapping


def test_names_the_guest_uses_are_mapped_by_position_when_unpredicted() -> None:
    disks = [disk(Controller.UNKNOWN), disk(Controller.UNKNOWN)]
    mapping = devmap.device_map(disks, "virtio-blk", used={"hdb", "cciss/c0d0", "sdc"})
    assert mapping["hdb"] == "vdb"
    assert mapping["cciss/c0d0"] == "vda"
    assert "sdc" not in mapping  # a third disk the converted guest will not have


def test_xen_names_alias_every_disk() -> None:
    disks = [disk(Controller.IDE), disk(Controller.IDE, 0, 1)]
    mapping = devmap.device_map(disks, "virtio-blk")
    assert mapping["xvda"] == "vda"
    assert mapping["xvdb"] == "vdb"


def test_nvme_and_virtio_blk_sources() -> None:
    disks = [disk(Controller.NVME), disk(Controller.VIRTIO_BLK)]
    mapping = devmap.device_map(disks, "sata")
    assert mapping["nvme0n1"] == "sda"
    assert mapping["vda"] == "sdb"


def test_old_ide_cdrom_is_named_by_its_udev_link() -> None:
    cdrom = Removable("cdrom", Controller.IDE, 1, 0)
    mapping = devmap.device_map(
        [disk(Controller.IDE)], "virtio-blk", ide="hd", removables=[cdrom], used={"hdc"}
    )
    assert mapping["hdc"] == "cdrom"
    assert devmap.rename_devices("/dev/hdc /media/cdrom auto ro,noauto 0 0", mapping) == (
        "/dev/cdrom /media/cdrom auto ro,noauto 0 0"
    )


def test_device_names_found_in_text() -> None:
    text = "root=/dev/sda1 resume=/dev/xvdb2 /dev/nvme0n1p3 /dev/cciss/c0d0p1 /dev/mapper/vg-root"
    assert devmap.device_names(text) == {"sda", "xvdb", "nvme0n1", "cciss/c0d0"}
    assert devmap.device_names("# was /dev/sdc1\n/dev/sda1 / ext4\n", comments=False) == {"sda"}


def test_device_path() -> None:
    assert devmap.device_path("vda", 1) == "/dev/vda1"
    assert devmap.device_path("nvme0n1", 2) == "/dev/nvme0n1p2"
    assert devmap.device_path("vdb") == "/dev/vdb"


# --- free-text renaming ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("/dev/sda1", "/dev/vda1"),
        ("/dev/sda", "/dev/vda"),
        ("/dev/hda2", "/dev/vda2"),
        ("/dev/xvda3", "/dev/vda3"),
        ("root=/dev/sda1 ro", "root=/dev/vda1 ro"),
        ("resume=/dev/sdb2 quiet", "resume=/dev/vdb2 quiet"),
        ('"/dev/sda1"', '"/dev/vda1"'),
        ("/dev/sdaa1", "/dev/sdaa1"),  # the 27th disk, not sda
        ("/mnt/dev/sda1", "/mnt/dev/sda1"),  # a path that merely contains /dev/sda
        ("x/dev/sda1", "x/dev/sda1"),
        ("/dev/sda/root", "/dev/sda/root"),  # an LV of a VG named sda
        ("/dev/sdc1", "/dev/sdc1"),  # not in the map
        ("/dev/mapper/vg-root", "/dev/mapper/vg-root"),
        ("/dev/disk/by-uuid/1234", "/dev/disk/by-uuid/1234"),
        ("root (hd0,0)", "root (hd0,0)"),  # grub1's own disk names stay
        ("set root='hd0,msdos1'", "set root='hd0,msdos1'"),
        ("/dev/sdap1", "/dev/sdap1"),
    ],
)
def test_rename_devices_whole_names_only(before: str, after: str) -> None:
    assert devmap.rename_devices(before, VDA) == after


def test_rename_devices_partition_styles() -> None:
    mapping = {"nvme0n1": "vda", "cciss/c0d1": "vdb", "sda": "nvme0n1"}
    assert devmap.rename_devices("/dev/nvme0n1p2 /dev/cciss/c0d1p1", mapping) == (
        "/dev/vda2 /dev/vdb1"
    )
    assert devmap.rename_devices("/dev/sda3", mapping) == "/dev/nvme0n1p3"


def test_rename_devices_swaps_without_chaining() -> None:
    assert devmap.rename_devices("/dev/sda1 /dev/sdb1", {"sda": "sdb", "sdb": "sda"}) == (
        "/dev/sdb1 /dev/sda1"
    )


GRUB_CFG = """\
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-/dev/sda1' {
\tload_video
\tinsmod gzio
\tif [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
\tinsmod part_msdos
\tinsmod ext2
\tset root='hd0,msdos1'
\tif [ x$feature_platform_search_hint = xy ]; then
\t  search --no-floppy --fs-uuid --set=root --hint-bios=hd0,msdos1 --hint-efi=hd0,msdos1 --hint-baremetal=ahci0,msdos1  6f3c1b0e-3ad0-4a8e-9f3c-8d39d1a3f2a1
\telse
\t  search --no-floppy --fs-uuid --set=root 6f3c1b0e-3ad0-4a8e-9f3c-8d39d1a3f2a1
\tfi
\techo\t'Loading Linux 6.1.0-18-amd64 ...'
\tlinux\t/boot/vmlinuz-6.1.0-18-amd64 root=/dev/sda1 ro console=tty0 console=ttyS0,115200 resume=/dev/sda5
\techo\t'Loading initial ramdisk ...'
\tinitrd\t/boot/initrd.img-6.1.0-18-amd64
}
"""  # noqa: E501


def test_grub2_cfg() -> None:
    out = devmap.rename_devices(GRUB_CFG, VDA)
    assert "root=/dev/vda1 ro console=tty0 console=ttyS0,115200 resume=/dev/vda5" in out
    assert "'gnulinux-simple-/dev/sda1'" in out  # an id, not a path: /dev/sda1 inside a word
    assert out.replace("/dev/vda1 ro", "/dev/sda1 ro").replace("/dev/vda5", "/dev/sda5") == (
        GRUB_CFG
    )


MENU_LST = """\
default=0
timeout=5
splashimage=(hd0,0)/grub/splash.xpm.gz
hiddenmenu
## ## End Default Options ##
# kopt=root=/dev/hda2 ro
# groot=(hd0,0)
title CentOS (2.6.18-398.el5xen)
\troot (hd0,0)
\tkernel /xen.gz-2.6.18-398.el5
\tmodule /vmlinuz-2.6.18-398.el5xen ro root=/dev/VolGroup00/LogVol00 console=xvc0
\tmodule /initrd-2.6.18-398.el5xen.img
title CentOS (2.6.18-398.el5)
\troot (hd0,0)
\tkernel /vmlinuz-2.6.18-398.el5 ro root=/dev/hda2 resume=/dev/hda3
\tinitrd /initrd-2.6.18-398.el5.img
"""


def test_grub1_menu_lst_including_debian_magic_comments() -> None:
    out = devmap.rename_devices(MENU_LST, VDA)
    assert "# kopt=root=/dev/vda2 ro" in out  # update-grub reads it
    assert "kernel /vmlinuz-2.6.18-398.el5 ro root=/dev/vda2 resume=/dev/vda3" in out
    assert "root=/dev/VolGroup00/LogVol00" in out
    assert "splashimage=(hd0,0)/grub/splash.xpm.gz" in out
    assert out.count("root (hd0,0)") == 2


def test_bls_entry_options() -> None:
    entry = (
        "title Red Hat Enterprise Linux (5.14.0-362.8.1.el9_3.x86_64) 9.3 (Plow)\n"
        "version 5.14.0-362.8.1.el9_3.x86_64\nlinux /vmlinuz-5.14.0-362.8.1.el9_3.x86_64\n"
        "initrd /initramfs-5.14.0-362.8.1.el9_3.x86_64.img $tuned_initrd\n"
        "options root=/dev/sda3 ro crashkernel=1G-4G:192M,4G-64G:256M resume=/dev/sda2 rhgb quiet\n"
        "grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rhel\n"
    )
    out = devmap.rename_devices(entry, VDA)
    assert "options root=/dev/vda3 ro crashkernel=1G-4G:192M,4G-64G:256M resume=/dev/vda2 " in out
    assert out.count("\n") == entry.count("\n")


def test_default_grub_and_suse_bootloader() -> None:
    default = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="resume=/dev/sdb1 splash"\n'
    assert devmap.rename_devices(default, VDA) == default.replace("/dev/sdb1", "/dev/vdb1")
    suse = (
        'LOADER_TYPE="grub2"\n'
        'DEFAULT_APPEND="resume=/dev/sda2 splash=silent quiet showopts"\n'
        'FAILSAFE_APPEND="ide=nodma apm=off noresume edd=off"\n'
    )
    assert "resume=/dev/vda2 splash" in devmap.rename_devices(suse, VDA)


def test_device_map_file() -> None:
    text = "(fd0)\t/dev/fd0\n(hd0)\t/dev/sda\n(hd1)\t/dev/sdb\n"
    assert devmap.rename_devices(text, VDA) == "(fd0)\t/dev/fd0\n(hd0)\t/dev/vda\n(hd1)\t/dev/vdb\n"


# --- fstab and crypttab ---------------------------------------------------------------------

DEBIAN_FSTAB = """\
# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
# / was on /dev/sda1 during installation
/dev/sda1       /               ext4    errors=remount-ro 0       1
# swap was on /dev/sda5 during installation
/dev/sda5       none            swap    sw              0       0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
/dev/sdb1       /srv            xfs     defaults        0       2
"""


def test_debian_fstab_gets_uuids_and_new_names() -> None:
    uuids = {"/dev/vda1": "6f3c1b0e-3ad0-4a8e-9f3c-8d39d1a3f2a1", "/dev/vda5": "9a1e-swap"}
    out = devmap.rewrite_fstab(DEBIAN_FSTAB, VDA, uuids)
    assert out == DEBIAN_FSTAB.replace(
        "/dev/sda1       /", "UUID=6f3c1b0e-3ad0-4a8e-9f3c-8d39d1a3f2a1       /"
    ).replace("/dev/sda5       none", "UUID=9a1e-swap       none").replace(
        "/dev/sdb1       /srv", "/dev/vdb1       /srv"
    )
    assert "# / was on /dev/sda1 during installation" in out  # still true


def test_rhel5_fstab_labels_stay() -> None:
    fstab = (
        "/dev/VolGroup00/LogVol00 /                       ext3    defaults        1 1\n"
        "LABEL=/boot             /boot                   ext3    defaults        1 2\n"
        "tmpfs                   /dev/shm                tmpfs   defaults        0 0\n"
        "devpts                  /dev/pts                devpts  gid=5,mode=620  0 0\n"
        "sysfs                   /sys                    sysfs   defaults        0 0\n"
        "proc                    /proc                   proc    defaults        0 0\n"
        "/dev/hda3               swap                    swap    defaults        0 0\n"
        "nfs.example.com:/export /mnt/nfs                nfs     defaults        0 0\n"
    )
    out = devmap.rewrite_fstab(fstab, VDA, {})
    assert out == fstab.replace("/dev/hda3 ", "/dev/vda3 ")


def test_fstab_bus_paths_become_uuids_by_mountpoint() -> None:
    fstab = (
        "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:1:0-part1 /data xfs defaults 0 0\n"
        "/dev/disk/by-id/scsi-36000c29a8b3e1f2c4d5e6f708192a3b4-part1 /logs ext4 defaults 0 2\n"
        "/dev/disk/by-id/dm-name-vg0-home /home ext4 defaults 0 2\n"
        "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:2:0-part1 /gone ext4 defaults 0 2\n"
    )
    out = devmap.rewrite_fstab(fstab, VDA, {}, {"/data": "D", "/logs": "L", "/home": "H"})
    assert out.splitlines() == [
        "UUID=D /data xfs defaults 0 0",
        "UUID=L /logs ext4 defaults 0 2",
        "/dev/disk/by-id/dm-name-vg0-home /home ext4 defaults 0 2",  # device-mapper: stable
        "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:2:0-part1 /gone ext4 defaults 0 2",
    ]


def test_fstab_odd_lines_survive() -> None:
    fstab = "\n   \n# only a comment /dev/sda1\n/dev/sda1\n/dev/sda2 /x\tvfat\tumask=0077 0 1\n"
    out = devmap.rewrite_fstab(fstab, VDA, {"/dev/vda2": "AB12-CD34"})
    assert (
        out
        == "\n   \n# only a comment /dev/sda1\n/dev/vda1\nUUID=AB12-CD34 /x\tvfat\tumask=0077 0 1\n"
    )


def test_crypttab_luks_by_uuid_plain_swap_by_name() -> None:
    crypttab = (
        "# <target name> <source device> <key file> <options>\n"
        "sda5_crypt /dev/sda5 none luks,discard\n"
        "cswap /dev/sda6 /dev/urandom swap,cipher=aes-xts-plain64,size=256\n"
        "home UUID=0b7c9f6e-1111-2222-3333-444455556666 none luks\n"
    )
    out = devmap.rewrite_crypttab(crypttab, VDA, {"/dev/vda5": "luks-uuid"})
    assert out.splitlines()[1:] == [
        "sda5_crypt UUID=luks-uuid none luks,discard",
        "cswap /dev/vda6 /dev/urandom swap,cipher=aes-xts-plain64,size=256",
        "home UUID=0b7c9f6e-1111-2222-3333-444455556666 none luks",
    ]


def test_renamed_path_is_exact() -> None:
    assert devmap.renamed_path("/dev/sda1", VDA) == "/dev/vda1"
    assert devmap.renamed_path("/dev/sda1x", VDA) is None
    assert devmap.renamed_path("UUID=abc", VDA) is None


# --- grubenv --------------------------------------------------------------------------------


def _grubenv(*lines: str) -> str:
    head = "# GRUB Environment Block\n" + "".join(f"{line}\n" for line in lines)
    return head + "#" * (1024 - len(head))


def test_grubenv_kernelopts_keep_the_block_size() -> None:
    block = _grubenv("saved_entry=abc-5.14.0", "kernelopts=root=/dev/sda3 ro resume=/dev/sda2")
    out = devmap.rewrite_grubenv(block, lambda t: devmap.rename_devices(t, VDA))
    assert out is not None and len(out) == 1024
    assert "kernelopts=root=/dev/vda3 ro resume=/dev/vda2\n#" in out
    assert devmap.rewrite_grubenv(block, lambda t: t) == block


def test_grubenv_that_would_overflow_is_refused() -> None:
    block = _grubenv("kernelopts=" + "x" * 980)
    assert devmap.rewrite_grubenv(block, lambda t: t + "y" * 60) is None


# --- LVM ------------------------------------------------------------------------------------

LVM_CONF = """\
devices {
\tdir = "/dev"
\tscan = [ "/dev" ]
\t# filter = [ "a|.*|" ]
\t# global_filter = [ "a|/dev/sda|" ]
\tfilter = [ "a|^/dev/sda[0-9]*$|", "a|/dev/sd[a-z]2|",
\t           "r|.*|" ]  # only the system disk
\tglobal_filter = [ "a|/dev/sd.*|", "r/sdc/", "r|.*|" ]
\tobtain_device_list_from_udev = 1
}
"""


def test_lvm_filters_gain_twins_for_the_new_names() -> None:
    out = devmap.rewrite_lvm_filters(LVM_CONF, VDA)
    assert out == LVM_CONF.replace(
        '"a|^/dev/sda[0-9]*$|",', '"a|^/dev/sda[0-9]*$|", "a|^/dev/vda[0-9]*$|",'
    ).replace('"a|/dev/sd[a-z]2|",', '"a|/dev/sd[a-z]2|", "a|/dev/vd[a-z]2|",').replace(
        '"a|/dev/sd.*|",', '"a|/dev/sd.*|", "a|/dev/vd.*|",'
    )
    # sdc is not a disk of the guest: its reject rule gets no twin; comments are untouched.
    assert '"r/sdc/", "r|.*|"' in out
    assert '# global_filter = [ "a|/dev/sda|" ]' in out
    assert devmap.rewrite_lvm_filters(out, VDA) == out  # a second run adds nothing


def test_lvm_filter_bare_names_and_no_change_cases() -> None:
    conf = 'devices {\n    filter = [ "a/sda/", "r/.*/" ]\n}\n'
    assert devmap.rewrite_lvm_filters(conf, VDA) == conf.replace('"a/sda/",', '"a/sda/", "a/vda/",')
    assert devmap.rewrite_lvm_filters(conf, {"sda": "sda"}) == conf
    accept_all = 'devices {\n    filter = [ "a|.*|" ]\n}\n'
    assert devmap.rewrite_lvm_filters(accept_all, VDA) == accept_all
    unclosed = 'devices {\n    filter = [ "a|/dev/sda|"\n'
    assert devmap.rewrite_lvm_filters(unclosed, VDA) == unclosed


def test_translate_filter_pattern() -> None:
    assert devmap.translate_filter_pattern('"a|/dev/hd.*|"', VDA) == '"a|/dev/vd.*|"'
    assert devmap.translate_filter_pattern('"a|/dev/disk/by-id/usb-sdcard|"', VDA) == (
        '"a|/dev/disk/by-id/usb-sdcard|"'
    )


# --- consoles, X, SELinux -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("ro root=/dev/vda1 console=hvc0", "ro root=/dev/vda1 console=ttyS0"),
        ("console=xvc0 quiet", "console=ttyS0 quiet"),
        (
            'GRUB_CMDLINE_LINUX="console=hvc0 console=ttyS0,115200"',
            'GRUB_CMDLINE_LINUX="console=ttyS0,115200"',
        ),
        ("console=tty0 console=hvc0 console=ttyS0", "console=tty0 console=ttyS0"),
        ("console=hvc01", "console=hvc01"),
        ("xconsole=hvc0", "xconsole=hvc0"),
        ("console=tty0", "console=tty0"),
    ],
)
def test_kernel_console_moves_to_ttys0(before: str, after: str) -> None:
    assert cmdline_consoles(before) == after


INITTAB = """\
id:3:initdefault:
si::sysinit:/etc/rc.d/rc.sysinit
1:2345:respawn:/sbin/mingetty tty1
# co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav
co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav
"""


def test_inittab_getty_moves_to_ttys0() -> None:
    assert inittab_consoles(INITTAB) == INITTAB.replace(
        "co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n",
        "co:2345:respawn:/sbin/agetty ttyS0 9600 vt100-nav\n",
    ).replace("# co:2345:respawn:/sbin/agetty ttyS0", "# co:2345:respawn:/sbin/agetty xvc0")
    with_serial = INITTAB + "S0:2345:respawn:/sbin/agetty ttyS0 115200 vt100\n"
    out = inittab_consoles(with_serial)
    assert "#co:2345:respawn:/sbin/agetty xvc0 9600 vt100-nav\n" in out
    assert out.count("ttyS0") == 1


def test_securetty() -> None:
    assert securetty_ttys0("console\nvc/1\ntty1\nhvc0\n") == "console\nvc/1\ntty1\nhvc0\nttyS0\n"
    assert securetty_ttys0("tty1\nxvc0") == "tty1\nxvc0\nttyS0\n"
    assert securetty_ttys0("tty1\nttyS0\nhvc0\n") == "tty1\nttyS0\nhvc0\n"
    assert securetty_ttys0("tty1\n") == "tty1\n"


XORG_CONF = """\
Section "ServerLayout"
\tIdentifier     "X.org Configured"
\tScreen      0  "Screen0" 0 0
EndSection

Section "InputDevice"
\tIdentifier  "Mouse0"
\tDriver      "vmmouse"
EndSection

Section "Device"
\tIdentifier  "Card0"
\tDriver      "vmware"
\tVendorName  "VMware Inc"
\tBoardName   "SVGA II Adapter"
\tBusID       "PCI:0:15:0"
EndSection

Section "Device"
\tIdentifier  "Card1"
\tDriver      "intel"
EndSection
"""


def test_xorg_conf_device_moves_to_modesetting() -> None:
    out = x_devices(XORG_CONF, FOREIGN_X_DRIVERS, "modesetting")
    assert out == XORG_CONF.replace('"vmware"', '"modesetting"').replace(
        "\tVendorName", "\t#VendorName"
    ).replace("\tBoardName", "\t#BoardName").replace("\tBusID", "\t#BusID")


def test_xorg_conf_without_modesetting_lets_x_choose() -> None:
    out = x_devices(XORG_CONF, FOREIGN_X_DRIVERS, None)
    assert '#\tDriver      "vmware"' in out
    assert 'Driver      "intel"' in out and 'Driver      "vmmouse"' in out


def test_snippets_that_only_force_a_foreign_driver() -> None:
    snippet = 'Section "Device"\n    Identifier "vmware"\n    Driver "vmwgfx"\nEndSection\n'
    assert only_foreign_devices(snippet, FOREIGN_X_DRIVERS)
    mixed = snippet + 'Section "InputClass"\n    Identifier "x"\nEndSection\n'
    assert not only_foreign_devices(mixed, FOREIGN_X_DRIVERS)
    assert not only_foreign_devices("# nothing\n", FOREIGN_X_DRIVERS)
    assert not only_foreign_devices(snippet.replace("vmwgfx", "fbdev"), FOREIGN_X_DRIVERS)
    assert only_foreign_devices(snippet.replace("vmwgfx", "fbdev"), FOREIGN_X_DRIVERS | {"fbdev"})


@pytest.mark.parametrize(
    ("config", "mode"),
    [
        ("# SELINUX=disabled\nSELINUX=enforcing\nSELINUXTYPE=targeted\n", "enforcing"),
        ("SELINUX=permissive\n", "permissive"),
        ("SELINUX=disabled\n", "disabled"),
        ("SELINUXTYPE=targeted\n", None),
    ],
)
def test_selinux_mode(config: str, mode: str | None) -> None:
    assert selinux_mode(config) == mode
