"""The Linux converter: runs the steps in order and decides what the guest can now run on."""

from __future__ import annotations

from vmshift.convert.base import ConvertOptions
from vmshift.convert.firmware import keeps_secure_boot, target_firmware
from vmshift.convert.linux import (
    bootloader,
    consoles,
    devices,
    finish,
    initramfs,
    kernel,
    network,
    tools_removal,
)
from vmshift.convert.linux.context import LinuxGuest, family_of
from vmshift.convert.steptimer import StepTimer
from vmshift.guest import safety
from vmshift.guest.inspect import mount_os
from vmshift.guest.session import GuestSession
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import DriverPresence, OperatingSystem
from vmshift.model.vm import SourceVM


class LinuxConverter:
    def convert(
        self, session: GuestSession, os: OperatingSystem, vm: SourceVM, opts: ConvertOptions
    ) -> GuestCaps:
        g = session.g
        guest = LinuxGuest(g=g, os=os, vm=vm, family=family_of(os), block_bus=opts.block_driver)
        timer = StepTimer()  # each step's wall time, for --report's timings
        # Refusals before the first write: a dirty filesystem, then too little room.
        with timer.step("fs_check"):
            safety.check_filesystems(session, os)
            g.umount_all()
            mount_os(g, os.mountpoints, readonly=False)
        try:
            with timer.step("space_check"):
                safety.check_guest_free_space(g, os)
            with timer.step("tools_removal"):
                tools_removal.remove_foreign_software(guest)
            with timer.step("kernel"):
                chosen = kernel.choose_kernel(guest)
            virtio = chosen is not None
            if not virtio:
                # No kernel can drive virtio: keep the guest on emulated devices that its
                # initramfs already handles, and change device names accordingly.
                guest.block_bus = "sata"
                guest.warn("no installed kernel supports virtio; using SATA disks and e1000")
            # Device names first: the initramfs carries lvm.conf, resume= and LVM's devices
            # file, so it must be rebuilt after they name the new disks.
            with timer.step("devices"):
                devices.rename_block_devices(guest)
            with timer.step("consoles"):
                consoles.fix(guest)
            # The initramfs copies .link files and udev rules: bind NIC names before it.
            with timer.step("network"):
                network.preserve_interface_names(guest)
            if virtio:
                with timer.step("initramfs"):
                    initramfs.rebuild(guest)
            # Last of the boot chain: grub.cfg must carry every command-line edit above.
            with timer.step("bootloader"):
                bootloader.update(guest)
            with timer.step("finish"):
                finish.run(guest)
        finally:
            # Flushed and left mounted: the journal is committed, so what conversion freed is
            # free on disk, and the pipeline's trim discards it in place (guest/trim.py).
            with timer.step("sync"):
                g.sync()
        firmware = target_firmware(vm, os)
        net_ok = guest.kernel is not None and guest.kernel.virtio_net is not DriverPresence.ABSENT
        return GuestCaps(
            block_bus=guest.block_bus,
            net_model="virtio" if virtio and net_ok else "e1000",
            video="vga",
            machine="q35",
            firmware=firmware,
            secure_boot=keeps_secure_boot(vm, firmware, opts),
            arch=os.arch,
            virtio_rng=virtio,
            virtio_balloon=virtio,
            virtio_serial=virtio,
            drivers_installed=("virtio_blk", "virtio_net") if virtio else (),
            warnings=tuple(guest.warnings),
            changes=tuple(guest.changes),
            timings=timer.timings,
        )
