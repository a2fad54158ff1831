"""What a guest's serial console says about its boot: got through to a login prompt, or not.

The patterns are those of the common Linux boot failures; a failure is checked before the
login prompt, so a boot that failed is never mistaken for one that got through.
"""

from __future__ import annotations

import re
from enum import StrEnum


class BootOutcome(StrEnum):
    LOGIN = "login"  # the serial getty printed its prompt
    NIC_UP = "nic-up"  # a guest without a serial login (Windows) sent a frame from its NIC
    NO_ROOT = "no-root"  # the initramfs could not find the root device and dropped to a shell
    EMERGENCY = "emergency"  # systemd gave up (a mount failed) and offers an emergency shell
    PANIC = "panic"  # kernel panic
    NO_BOOT_DEVICE = "no-boot-device"  # the firmware found nothing to boot
    QEMU_EXIT = "qemu-exit"  # qemu stopped by itself: a reboot under -no-reboot, or an error
    TIMEOUT = "timeout"


# What each outcome means, for the user.
DESCRIPTIONS = {
    BootOutcome.LOGIN: "reached its login prompt",
    BootOutcome.NIC_UP: "its network card came up",
    BootOutcome.NO_ROOT: "the initramfs did not find the root filesystem",
    BootOutcome.EMERGENCY: "systemd stopped in emergency mode (a filesystem did not mount)",
    BootOutcome.PANIC: "the kernel panicked",
    BootOutcome.NO_BOOT_DEVICE: "the firmware found nothing to boot",
    BootOutcome.QEMU_EXIT: "the virtual machine stopped by itself",
    BootOutcome.TIMEOUT: "no login prompt in time",
}

LOGIN = re.compile(rb"login: ?$", re.MULTILINE)
FAILURES: tuple[tuple[BootOutcome, re.Pattern[bytes]], ...] = (
    (BootOutcome.NO_ROOT, re.compile(rb"Gave up waiting for root|ALERT! |\(initramfs\) ")),
    (BootOutcome.EMERGENCY, re.compile(rb"You are in emergency mode|Give root password for maint")),
    (BootOutcome.PANIC, re.compile(rb"Kernel panic - not syncing")),
    # SeaBIOS's messages; OVMF instead falls back to its built-in shell.
    (
        BootOutcome.NO_BOOT_DEVICE,
        re.compile(rb"No bootable device|Boot failed: not a bootable|No bootable option|Shell> "),
    ),
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]")


# The outcomes that prove the guest came up.
ALIVE = (BootOutcome.LOGIN, BootOutcome.NIC_UP)


def classify(console: bytes | bytearray) -> BootOutcome | None:
    """The outcome the console shows so far, or None while the boot is still going."""
    for outcome, pattern in FAILURES:
        if pattern.search(console):
            return outcome
    if LOGIN.search(console):
        return BootOutcome.LOGIN
    return None


def plain(text: str) -> str:
    """Console text without carriage returns and terminal control sequences."""
    return _ANSI.sub("", text.replace("\r", ""))


def tail(console: bytes | bytearray, lines: int = 40) -> str:
    """The last lines of the console, as plain text."""
    text = plain(bytes(console).decode(errors="replace"))
    return "\n".join(text.splitlines()[-lines:])
