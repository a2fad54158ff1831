"""GuestSession.unreadable's reading of the appliance's kernel log: a read error names the
guest's disk, found through guestfsd's by-id links, whatever name the kernel gave it."""

from __future__ import annotations

from pathlib import Path

from vmshift.blockio.imageinfo import ImageInfo
from vmshift.guest.session import AttachedDisk, read_error

KERNEL_LOG = """\
[    3.098060]  sdb: sdb1 sdb2 sdb3
[    3.103174] sd 0:0:1:0: [sda] Attached SCSI disk
[    3.799365] EXT4-fs (sda): mounting ext2 file system using the ext4 subsystem
[   13.593122] sd 0:0:0:0: [sdb] tag#201 CDB: Read(10) 28 00 00 0a 88 00 00 00 08 00
[   13.593309] I/O error, dev sdb, sector 690176 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2
[   13.676417] Buffer I/O error on dev sdb3, logical block 36864, async page read
"""
# The appliance's root probed first: the kernel called the guest's first disk sdb.
BY_ID = """\
total 0
lrwxrwxrwx 1 root root  9 Dec  7 19:10 scsi-0QEMU_QEMU_HARDDISK_appliance -> ../../sda
lrwxrwxrwx 1 root root  9 Dec  7 19:10 scsi-0QEMU_QEMU_HARDDISK_hd0 -> ../../sdb
lrwxrwxrwx 1 root root 10 Dec  7 19:10 scsi-0QEMU_QEMU_HARDDISK_hd0-part3 -> ../../sdb3
lrwxrwxrwx 1 root root  9 Dec  7 19:10 scsi-0QEMU_QEMU_HARDDISK_hd1 -> ../../sdc
"""


def disks(n: int) -> list[AttachedDisk]:
    return [
        AttachedDisk(
            ImageInfo(Path(f"/work/disk{i}.overlay.qcow2"), "qcow2", 1 << 30, None),
            readonly=False,
            appliance_device=f"/dev/sd{'abc'[i]}",
            label=f"disk{i}.img",
        )
        for i in range(n)
    ]


def test_the_kernel_s_sdb_is_libguestfs_s_first_disk() -> None:
    error = read_error(KERNEL_LOG, BY_ID, disks(2))
    assert error is not None
    assert str(error) == "disk0.img: I/O error at sector 690176: the source disk cannot be read"


def test_errors_on_the_appliance_s_own_disk_or_none_at_all_are_not_the_source_s() -> None:
    on_root = KERNEL_LOG.replace("dev sdb, sector", "dev sda, sector")
    assert read_error(on_root, BY_ID, disks(2)) is None
    assert read_error(KERNEL_LOG.split("[   13.5", maxsplit=1)[0], BY_ID, disks(2)) is None
    assert read_error(KERNEL_LOG, "", disks(2)) is None  # no links: nothing is blamed
