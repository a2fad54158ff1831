"""Choose the kernel the converted guest will boot: the best installed one that can drive virtio.

Inspection already knows, kernel by kernel, whether virtio_blk/virtio_net/virtio_scsi are built
in, modules, or absent. This step ranks the kernels that can reach the disk on the chosen bus and
remembers the winner in guest.kernel; making it the default boot entry is bootloader.py's job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from vmshift.convert.linux import bootloader
from vmshift.convert.linux.context import LinuxGuest
from vmshift.model.inspection import DriverPresence, LinuxKernel

STEP = "kernel"

# Flavours that exist for diagnosis, not for running: slower, or a generic rescue copy.
_DEBUG = re.compile(r"(debug|dbg|rescue|kdump)", re.IGNORECASE)
# Xen paravirtual-only kernels (RHEL 5's "el5xen", SUSE's "-xen" flavour) cannot boot on KVM.
_XEN_PV = re.compile(r"(xen$|-xen\b)", re.IGNORECASE)
# rpm's version segments: runs of digits or of letters, plus the two special characters.
_SEGMENT = re.compile(r"~|\^|[0-9]+|[A-Za-z]+")

VersionKey = tuple[tuple[int, int | str], ...]


def version_key(version: str) -> VersionKey:
    """A sort key that orders versions the way rpmvercmp does.

    Digit runs compare as numbers (6.1.0-18 < 6.1.0-50 < 6.1.0-100), a digit run is newer than
    a letter run, "~" sorts before everything (1.0~rc1 < 1.0) and "^" after the end
    (1.0 < 1.0^git1 < 1.0.1); separators only separate. Debian's kernel versions sort correctly
    with the same rules.
    """
    key: list[tuple[int, int | str]] = []
    for seg in _SEGMENT.findall(version):
        if seg == "~":
            key.append((0, 0))
        elif seg == "^":
            key.append((2, 0))
        elif seg.isdigit():
            key.append((4, int(seg)))
        else:
            key.append((3, seg))
    # The end of a version sorts after "~" and before anything else.
    key.append((1, 0))
    return tuple(key)


def is_debug(kernel: LinuxKernel) -> bool:
    return bool(_DEBUG.search(kernel.version) or _DEBUG.search(kernel.path.rsplit("/", 1)[-1]))


def is_xen_pv_only(kernel: LinuxKernel) -> bool:
    return bool(_XEN_PV.search(kernel.version))


def can_boot_on(kernel: LinuxKernel, block_bus: str) -> bool:
    """Whether the kernel has a driver for the disk controller the converted guest gets."""
    driver = kernel.virtio_scsi if block_bus == "virtio-scsi" else kernel.virtio_blk
    return driver is not DriverPresence.ABSENT and not is_xen_pv_only(kernel)


def best_kernel(
    kernels: Sequence[LinuxKernel], *, block_bus: str, default_name: str | None
) -> LinuxKernel | None:
    """The kernel to boot, or None when none can drive the virtio disk.

    Ranked by: not a debug/rescue flavour, has virtio_net (else the NIC falls back to e1000),
    newest version, and last the current default (a tie-break between flavours of one
    version). default_name is the file name of the bootloader's default kernel, if known.
    """
    usable = [k for k in kernels if can_boot_on(k, block_bus)]
    if not usable:
        return None

    def rank(k: LinuxKernel) -> tuple[bool, bool, VersionKey, bool]:
        return (
            not is_debug(k),
            k.virtio_net is not DriverPresence.ABSENT,
            version_key(k.version),
            default_name is not None and k.path.rsplit("/", 1)[-1] == default_name,
        )

    return max(usable, key=rank)


def choose_kernel(guest: LinuxGuest) -> LinuxKernel | None:
    """Pick the kernel to boot, store it in guest.kernel and record the choice."""
    linux = guest.os.linux
    kernels = linux.kernels if linux is not None else ()
    default_name = bootloader.default_kernel_name(guest) if kernels else None
    chosen = best_kernel(kernels, block_bus=guest.block_bus, default_name=default_name)
    guest.kernel = chosen
    if chosen is None:
        names = ", ".join(k.version for k in kernels) or "none"
        guest.note(STEP, f"no installed kernel can drive virtio (kernels: {names})")
        return None
    others = [k.version for k in kernels if k is not chosen]
    why = "the only kernel" if not others else f"chosen over {', '.join(others)}"
    if default_name is not None and chosen.path.rsplit("/", 1)[-1] != default_name:
        why += f"; the bootloader's default was {default_name}"
    guest.note(STEP, f"will boot kernel {chosen.version} ({why})", chosen.path)
    return chosen
