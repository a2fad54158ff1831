"""What the converted guest can run on: decided by conversion, used by targets.

A target builds the output machine from these, never from the source's devices: a VMware
guest's pvscsi disk becomes whatever bus the converted guest can boot from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmshift.model.vm import Firmware


@dataclass(frozen=True)
class Change:
    """One change conversion made to the guest, for the verbose log and --report."""

    step: str  # tools_removal, kernel, initramfs, devices, bootloader, consoles, network ...
    what: str  # one line for a human
    path: str | None = None  # the guest file changed, if one


@dataclass(frozen=True)
class StepTime:
    """How long one conversion step took (wall seconds), for --report and bench/."""

    step: str  # the step's name, as in Change.step where it makes changes
    seconds: float


@dataclass(frozen=True)
class GuestCaps:
    block_bus: str  # virtio-blk, virtio-scsi, sata, ide
    net_model: str  # virtio, e1000, e1000e, rtl8139
    video: str  # virtio, qxl, vga, cirrus
    machine: str  # q35 or pc (i440fx)
    firmware: Firmware  # BIOS or UEFI, never UNKNOWN here
    arch: str  # x86_64, i686
    # UEFI with secure boot enforced (the source had it and --no-secure-boot was not given);
    # a target that cannot provide it turns it off and says so.
    secure_boot: bool = False
    virtio_rng: bool = False
    virtio_balloon: bool = False
    virtio_serial: bool = False  # the qemu guest agent channel needs it
    # What conversion did, in plain words, for the final line and the report.
    drivers_installed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    changes: tuple[Change, ...] = ()
    timings: tuple[StepTime, ...] = ()  # each conversion step's wall time, in order

    @property
    def virtio(self) -> bool:
        return self.block_bus.startswith("virtio") and self.net_model == "virtio"
