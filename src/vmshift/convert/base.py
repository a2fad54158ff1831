"""The Converter contract, and the table that picks a converter for an inspected OS.

    class LinuxConverter:
        def convert(self, session, os, vm, opts) -> GuestCaps:
            ...change the guest through session.g (the overlay, never the source)...
            return GuestCaps(block_bus="virtio-blk", ...)

A converter works on the mounted overlay through the shared libguestfs handle and returns what
the converted guest can now run on. It raises ConversionError when the guest cannot be
converted at all; when it can only boot on emulated devices it says so in GuestCaps.warnings.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from vmshift.guest.session import GuestSession
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM


@dataclass(frozen=True)
class ConvertOptions:
    block_driver: str = "virtio-blk"  # or virtio-scsi
    virtio_win: str | None = None  # Windows driver tree (directory or ISO)
    firstboot_tool: str | None = None  # Windows service wrapper (rhsrvany.exe or pvvxsvc.exe)
    secure_boot: bool = True  # keep the source's UEFI secure boot (--no-secure-boot: False)
    # The variables that stand in for options (VIRTIO_WIN, VMSHIFT_FIRSTBOOT_TOOL,
    # VIRT_TOOLS_DATA_DIR): the caller's environment, passed in, never read here.
    environ: Mapping[str, str] = field(default_factory=dict)


class Converter(Protocol):
    def convert(
        self, session: GuestSession, os: OperatingSystem, vm: SourceVM, opts: ConvertOptions
    ) -> GuestCaps: ...


# OS type -> converter class. Types without an entry are copied unmodified, on the devices
# they can already boot from.
CONVERTERS: dict[str, str] = {
    "linux": "vmshift.convert.linux:LinuxConverter",
    "windows": "vmshift.convert.windows.converter:WindowsConverter",
}
FALLBACK = "vmshift.convert.unmodified:UnmodifiedConverter"


def pick_converter(os: OperatingSystem) -> Converter:
    module_name, _, class_name = CONVERTERS.get(os.type, FALLBACK).partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    converter: Converter = cls()
    return converter
