"""Secure boot and the CPU model: what a target can give the guest beyond its devices.

The guest asks (GuestCaps.secure_boot, SourceVM.cpu); each target knows what its host offers
(-o libvirt: the daemon's domain capabilities; -o qemu: the OVMF builds and CPU models of the
local qemu; -o local and -o rhv: nothing about the future host, only the names libvirt knows).
This module turns the two into one decision plus the warning a user sees when a wish cannot
be met. Nothing here depends on whether the conversion host has KVM: the output describes the
target, not this machine.
"""

from __future__ import annotations

import contextlib
from typing import cast

from vmshift.errors import TargetError
from vmshift.formats.libvirt_xml import source_cpu_model
from vmshift.libvirt_binding import import_libvirt
from vmshift.model.caps import GuestCaps
from vmshift.model.vm import Firmware, SourceVM

# A libvirt connection that needs no daemon: its CPU model list is the one this libvirt
# installation ships (the cpu_map every libvirt driver resolves model names against).
EMBEDDED_LIBVIRT = "test:///default"


def secure_boot_decision(
    caps: GuestCaps, available: bool, missing: str
) -> tuple[bool, tuple[str, ...]]:
    """(enforce secure boot?, warnings). available: the target can provide it; missing: why
    not, for the warning."""
    if not caps.secure_boot:
        return False, ()
    if caps.firmware is not Firmware.UEFI:
        return False, ("the source enforced secure boot, but the guest now boots BIOS: it is off",)
    if caps.machine != "q35":
        return False, (
            f"secure boot is off: it needs machine type q35, and the guest has {caps.machine}",
        )
    if not available:
        return False, (f"secure boot is off: {missing}",)
    return True, ()


def cpu_model_decision(
    vm: SourceVM, runnable: bool, why_not: str, fallback: str
) -> tuple[bool, tuple[str, ...]]:
    """(describe the source's CPU model?, warnings).

    runnable: the target can run vm.cpu's model; why_not says why not and fallback what the
    guest gets instead, for the warning.
    """
    cpu = source_cpu_model(vm)
    if cpu is None:
        if vm.cpu is not None and vm.cpu.model:
            return False, (
                f"CPU model {vm.cpu.model[:40]!r} is not a model name; using {fallback}",
            )
        return False, ()
    if runnable:
        return True, ()
    return False, (f"the source's CPU model {cpu.model}: {why_not}; using {fallback}",)


def libvirt_cpu_models(arch: str) -> frozenset[str] | None:
    """The CPU model names this host's libvirt knows for arch; None without libvirt."""
    try:
        lv = import_libvirt(TargetError, "the CPU model check")
    except TargetError:
        return None
    try:
        conn = lv.openReadOnly(EMBEDDED_LIBVIRT)
    except lv.libvirtError:
        return None
    try:
        return frozenset(cast(list[str], conn.getCPUModelNames(arch, 0)))
    except lv.libvirtError:
        return None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def libvirt_knows_cpu_model(vm: SourceVM, arch: str) -> tuple[bool, str]:
    """(libvirt here knows vm.cpu's model name?, why not) for targets whose future host is
    unknown (-o local, -o rhv): a name libvirt does not know can never be defined."""
    cpu = source_cpu_model(vm)
    if cpu is None:
        return False, ""
    known = libvirt_cpu_models(arch)
    if known is None:
        return False, "without libvirt here vmshift cannot tell whether libvirt knows it"
    if cpu.model in known:
        return True, ""
    return False, "libvirt here does not know that name"
