"""The Windows converter: runs the steps in order and decides what the guest can now run on."""

from __future__ import annotations

import dataclasses

from vmshift.convert.base import ConvertOptions
from vmshift.convert.firmware import keeps_secure_boot, target_firmware
from vmshift.convert.steptimer import StepTimer
from vmshift.convert.windows import checks, drivers, firstboot, services, uefi
from vmshift.convert.windows.context import WindowsGuest, make_guest
from vmshift.guest import safety
from vmshift.guest.inspect import mount_os
from vmshift.guest.session import GuestSession
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import Firmware, SourceVM


class WindowsConverter:
    def convert(
        self, session: GuestSession, os: OperatingSystem, vm: SourceVM, opts: ConvertOptions
    ) -> GuestCaps:
        timer = StepTimer()  # each step's wall time, for --report's timings
        # Before the read-write mount, which ntfs-3g refuses on a hibernated volume.
        with timer.step("fs_check"):
            checks.refuse_hibernated(os)
            safety.check_filesystems(session, os)
            g = session.g
            g.umount_all()
            mount_os(g, os.mountpoints, readonly=False)
        guest: WindowsGuest | None = None
        try:
            with timer.step("space_check"):
                safety.check_guest_free_space(g, os)
            with timer.step("guest"):
                guest = make_guest(g, os, vm, opts, session.scratch)
            # Refusals first: a guest that must not be converted is left untouched.
            with timer.step("checks"):
                checks.refuse_or_warn(guest)
            with timer.step("services"):
                services.disable_foreign(guest)
            with timer.step("drivers"):
                drivers.install(guest)
            with timer.step("uefi"):
                uefi.ensure_fallback(guest)
            # Last: it queues the scripts every step before it asked for.
            with timer.step("firstboot"):
                firstboot.install(guest)
            # The steps edited local copies of the hives (hives.py): into the guest, once.
            with timer.step("hives"):
                guest.save_hives()
        finally:
            if guest is not None:
                guest.close()
            # Flushed and left mounted: the journal is committed, so what conversion freed is
            # free on disk, and the pipeline's trim discards it in place (guest/trim.py).
            with timer.step("sync"):
                g.sync()
        return dataclasses.replace(guest_caps(guest), timings=timer.timings)


def guest_caps(guest: WindowsGuest) -> GuestCaps:
    """The devices the converted guest has drivers for; emulated ones where it has none."""
    os = guest.os
    have = {d.lower() for d in guest.drivers_installed}
    old = os.major_version < 6  # XP/2003: no AHCI driver, no e1000 driver of their own
    if guest.boot_driver == "vioscsi":
        block_bus = "virtio-scsi"
    elif guest.boot_driver == "viostor":
        block_bus = "virtio-blk"
    else:
        block_bus = "ide" if old else "sata"
    net_model = "virtio" if "netkvm" in have else "rtl8139" if old else "e1000"
    firmware = target_firmware(guest.vm, os)
    # q35 has no IDE controller, and XP/2003 know none of its chipset devices.
    machine = "pc" if (old or block_bus == "ide") and firmware is Firmware.BIOS else "q35"
    return GuestCaps(
        block_bus=block_bus,
        net_model=net_model,
        video="qxl" if "qxldod" in have or "qxl" in have else "vga",
        machine=machine,
        firmware=firmware,
        secure_boot=keeps_secure_boot(guest.vm, firmware, guest.opts),
        arch="i686" if os.arch in ("i386", "i486", "i586", "i686") else os.arch,
        virtio_rng="viorng" in have,
        virtio_balloon="balloon" in have,
        virtio_serial="vioserial" in have,
        drivers_installed=tuple(guest.drivers_installed),
        warnings=tuple(guest.warnings),
        changes=tuple(guest.changes),
    )
