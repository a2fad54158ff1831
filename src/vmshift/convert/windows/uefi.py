"""Make sure a UEFI guest boots on a fresh NVRAM: the removable-media fallback loader.

The source's firmware kept a "Windows Boot Manager" entry in its own NVRAM, which does not come
along: OVMF starts with empty variables and boots \\EFI\\BOOT\\BOOTX64.EFI from the ESP. Windows
setup usually writes that file, but images made by imaging tools or cleaned by hand may lack
it. It is the same binary as \\EFI\\Microsoft\\Boot\\bootmgfw.efi, which then finds its BCD.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from vmshift.convert.firmware import target_firmware
from vmshift.convert.windows.partitions import partition_entries
from vmshift.errors import ConversionError
from vmshift.model.vm import Firmware

if TYPE_CHECKING:
    from vmshift.convert.windows.context import WindowsGuest

log = logging.getLogger(__name__)

ESP_GPT_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ESP_MBR_ID = 0xEF
WINDOWS_LOADER = "/EFI/Microsoft/Boot/bootmgfw.efi"
FALLBACK_NAMES = {"x86_64": "BOOTX64.EFI", "i386": "BOOTIA32.EFI", "aarch64": "BOOTAA64.EFI"}


def ensure_fallback(guest: WindowsGuest) -> None:
    if target_firmware(guest.vm, guest.os) is not Firmware.UEFI:
        return
    name = FALLBACK_NAMES.get(guest.os.arch, "BOOTX64.EFI")
    g = guest.g
    candidates = esp_candidates(g)
    if not candidates:
        guest.warn("UEFI guest without an EFI system partition: it may not boot")
        return
    with _remounted(g):
        for esp in candidates:
            try:
                g.mount(esp, "/")
            except RuntimeError as exc:
                log.info("cannot mount %s: %s", esp, exc)
                continue
            try:
                if _ensure_on(guest, esp, name):
                    return
            finally:
                g.sync()
                g.umount("/")
    guest.warn(f"no EFI system partition holds {WINDOWS_LOADER}: the guest may not boot")


def esp_candidates(g: Any) -> list[str]:
    """Partitions typed as an EFI system partition, on any disk, in device order."""
    return [
        part
        for part, entry in partition_entries(g).items()
        if entry.gpt_type == ESP_GPT_TYPE or entry.mbr_id == ESP_MBR_ID
    ]


def _case_path(g: Any, path: str) -> str | None:
    try:
        real: str = g.case_sensitive_path(path)
    except RuntimeError:
        return None
    return real if g.exists(real) else None


def _ensure_on(guest: WindowsGuest, esp: str, name: str) -> bool:
    """Give the ESP mounted at / its fallback loader; False when it holds no Windows."""
    g = guest.g
    loader = _case_path(g, WINDOWS_LOADER)
    if loader is None:
        return False
    existing = _case_path(g, f"/EFI/BOOT/{name}")
    if existing is not None:
        log.info("%s already has %s", esp, existing)
        return True
    boot_dir = _case_path(g, "/EFI/BOOT") or "/EFI/BOOT"
    target = f"{boot_dir}/{name}"
    try:
        g.mkdir_p(boot_dir)
        g.cp(loader, target)
    except RuntimeError as exc:
        raise ConversionError(f"cannot write {target} on the ESP {esp}: {exc}") from exc
    guest.note("uefi", f"added the fallback boot loader (a copy of {loader})", f"{esp}:{target}")
    return True


@contextmanager
def _remounted(g: Any) -> Iterator[None]:
    """Unmount the guest's filesystems for the block, then mount them back as they were.

    libguestfs can only mount on a directory of what is already mounted, and the ESP must not
    leave a mountpoint directory behind in the Windows volume.
    """
    mounts: dict[str, str] = g.mountpoints()  # device -> mountpoint
    g.sync()
    g.umount_all()
    try:
        yield
    finally:
        for device, mountpoint in sorted(mounts.items(), key=lambda m: len(m[1])):
            g.mount(device, mountpoint)
