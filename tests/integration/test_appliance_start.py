"""The fixed appliance vmshift makes from libguestfs's own (guest/appliance.py: the kernel
uncompressed for PVH, the initrd without the modules for devices the appliance lacks, the root
whose /init has udev replay only block devices and virtio-serial ports) boots, and what runs
in it has the modules and the device nodes it uses. A start that fails falls back to libguestfs's
usual appliance silently, so without this test a broken one would only cost time."""

from __future__ import annotations

import os
from pathlib import Path

import guestfs
import pytest

from vmshift.blockio.imageinfo import ImageInfo
from vmshift.guest.appliance import UDEV_REPLAY_USED, pvh_appliance
from vmshift.guest.session import open_session

pytestmark = pytest.mark.slow


def test_the_fixed_appliance_boots_with_the_modules_it_uses(tmp_path: Path) -> None:
    handle = guestfs.GuestFS(python_return_dict=True)
    cachedir = str(handle.get_cachedir())
    handle.close()
    made = pvh_appliance(cachedir, os.getuid())
    if made is None:
        pytest.skip("no fixed appliance here (libguestfs's kernel has no PVH entry point)")
    listed = (made / "initrd").read_bytes()
    assert not (made / "initrd").is_symlink(), "the initrd was not slimmed"
    assert not (made / "root").is_symlink(), "the root's /init was not changed"
    disk = tmp_path / "blank.img"
    with disk.open("wb") as f:
        f.truncate(16 << 20)
    with open_session([ImageInfo(disk, "raw", 16 << 20, None)]) as session:
        assert Path(str(session.g.get_path())) == made, "the fixed appliance did not start"
        g = session.g
        loaded = {
            line.split()[0]
            for line in str(g.debug("sh", ["cat /proc/modules"])).splitlines()
            if line.strip()
        }
        init = str(g.debug("sh", ["cat /init"]))
        # udev made the links of the disk and of guestfsd's channel from the replayed events.
        by_path = str(g.debug("sh", ["ls /dev/disk/by-path"])).split()
        ports = str(g.debug("sh", ["ls /dev/virtio-ports"])).split()
        assert g.list_devices() == ["/dev/sda"]
    # The appliance's disks and root (virtio-scsi, sd, ext4) and its channel (virtio-serial).
    assert {"virtio_scsi", "sd_mod", "ext4", "virtio_console"} <= loaded, sorted(loaded)
    # Left out, and no device made udev load them later.
    assert not loaded & {"nfit", "libnvdimm", "virtio_mem", "ata_piix", "virtio_balloon"}
    assert b"nfit.ko" not in listed and b"virtio_scsi.ko" in listed
    assert UDEV_REPLAY_USED in init.splitlines()
    assert by_path and "org.libguestfs.channel.0" in ports
