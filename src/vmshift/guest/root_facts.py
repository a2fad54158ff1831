"""What inspection found of one root, before the rest of inspection looks at it: the answers
of libguestfs's inspect_get_* calls, whether inspect_os or vmshift's own inspection
(guest/linux_inspection.py, guest/windows_inspection.py) gave them."""

from __future__ import annotations

from dataclasses import dataclass

from vmshift.model.inspection import OsIdentity


@dataclass(frozen=True)
class WindowsRegistry:
    """Where a Windows root keeps its registry (inspect_get_windows_*): paths in the guest."""

    systemroot: str  # "/Windows", as the volume spells it
    current_control_set: str  # "ControlSet001"
    system_hive: str
    software_hive: str


@dataclass(frozen=True)
class RootFacts(OsIdentity):
    """What libguestfs's inspect_get_* calls answer for one root."""

    mountpoints: dict[str, str]
    filesystems: tuple[str, ...]
    inspect_os: bool = True  # False: found here, so libguestfs's handle knows nothing of it
    windows: WindowsRegistry | None = None  # a Windows root's registry
