"""The target's firmware: what the source says, else what inspection found; and whether UEFI
secure boot stays on.

Secure boot is kept when the source enforced it (a Windows 11 / Server 2022 guest usually
does), unless `--no-secure-boot` says otherwise: the guest's own boot chain is signed for it
(Windows' boot manager and drivers, a Linux distribution's shim, kernel and modules), and
turning it off would weaken the guest or, for Windows 11, break its requirements. The VirtIO
drivers vmshift installs are the signed virtio-win builds. A target that cannot provide secure
boot firmware turns it off and says so (docs/convert.md).
"""

from __future__ import annotations

from vmshift.convert.base import ConvertOptions
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import Firmware, SourceVM


def target_firmware(vm: SourceVM, os: OperatingSystem) -> Firmware:
    if vm.firmware is not Firmware.UNKNOWN:
        return vm.firmware
    return Firmware.UEFI if os.firmware == "uefi" else Firmware.BIOS


def keeps_secure_boot(vm: SourceVM, firmware: Firmware, opts: ConvertOptions) -> bool:
    """The converted guest enforces secure boot: UEFI, the source had it, and it was not
    turned off on the command line."""
    return firmware is Firmware.UEFI and vm.secure_boot and opts.secure_boot
