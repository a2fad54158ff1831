"""Keep the guest as it is and pick the devices it can already boot from.

Used for operating systems vmshift has no converter for. The choice is honest: virtio only
where inspection shows the guest can already drive it (a KVM guest, or a kernel with virtio
built in), emulated devices otherwise, with the reason in GuestCaps.warnings.
"""

from __future__ import annotations

from vmshift.convert.base import ConvertOptions
from vmshift.convert.firmware import keeps_secure_boot, target_firmware
from vmshift.guest.session import GuestSession
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import DriverPresence, OperatingSystem
from vmshift.model.vm import Firmware, SourceVM


def linux_can_boot_virtio(os: OperatingSystem) -> tuple[bool, bool]:
    """(disk, network): some installed kernel can boot from virtio-blk / drive virtio-net."""
    if os.linux is None:
        return False, False
    blk = any(
        k.virtio_blk is DriverPresence.BUILTIN
        or (k.virtio_blk is DriverPresence.MODULE and k.initramfs_virtio_blk)
        for k in os.linux.kernels
    )
    net = any(k.virtio_net is not DriverPresence.ABSENT for k in os.linux.kernels)
    return blk, net


def windows_has_viostor(os: OperatingSystem) -> bool:
    if os.windows is None:
        return False
    return any(
        d.name.lower() in ("viostor", "vioscsi") and d.file_present for d in os.windows.boot_drivers
    )


def unmodified_caps(vm: SourceVM, os: OperatingSystem, opts: ConvertOptions) -> GuestCaps:
    firmware = target_firmware(vm, os)
    arch = os.arch if os.arch not in ("i386", "i486", "i586") else "i686"
    warnings: list[str] = []
    if os.type == "linux":
        blk, net = linux_can_boot_virtio(os)
        if not blk:
            warnings.append("no installed kernel can boot from a virtio disk as it is")
        fallback_bus = "sata"
    elif os.type == "windows":
        blk = net = windows_has_viostor(os)
        if not blk:
            warnings.append("no VirtIO drivers are installed in this Windows guest")
        old = os.major_version < 6  # XP/2003 have no AHCI or e1000 drivers of their own
        fallback_bus = "ide" if old else "sata"
    else:
        blk = net = False
        warnings.append(f"vmshift cannot convert {os.type} guests")
        fallback_bus = "sata"
    block_bus = "virtio-blk" if blk else fallback_bus
    if net:
        net_model = "virtio"
    else:
        net_model = "rtl8139" if os.type == "windows" and os.major_version < 6 else "e1000"
    # i440fx for IDE: q35 has no IDE controller, and UEFI needs q35.
    machine = "pc" if block_bus == "ide" and firmware is Firmware.BIOS else "q35"
    return GuestCaps(
        block_bus=block_bus,
        net_model=net_model,
        video="vga",
        machine=machine,
        firmware=firmware,
        secure_boot=keeps_secure_boot(vm, firmware, opts),
        arch=arch,
        virtio_rng=blk,
        virtio_balloon=blk,
        virtio_serial=blk,
        warnings=tuple(warnings),
    )


class UnmodifiedConverter:
    def convert(
        self, session: GuestSession, os: OperatingSystem, vm: SourceVM, opts: ConvertOptions
    ) -> GuestCaps:
        return unmodified_caps(vm, os, opts)
