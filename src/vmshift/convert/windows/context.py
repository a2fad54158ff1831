"""The state shared by the Windows conversion steps."""

from __future__ import annotations

import logging
import posixpath
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshift.convert.base import ConvertOptions
from vmshift.convert.windows.hives import HiveCache
from vmshift.errors import ConversionError
from vmshift.guest.registry import Hive, HiveEditor
from vmshift.guest.windows_facts import case_path
from vmshift.model.caps import Change
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM

log = logging.getLogger("vmshift.convert.windows")

HIVES = ("SYSTEM", "SOFTWARE")


@dataclass
class WindowsGuest:
    """The guest being converted: a libguestfs handle with the system volume mounted read-write
    at /."""

    g: Any
    os: OperatingSystem
    vm: SourceVM
    opts: ConvertOptions
    systemroot: str  # guest path in its real case, "/Windows" or "/WINDOWS"
    ccs: str  # the control set Windows boots from (Select\Current), "ControlSet001"
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    drivers_installed: list[str] = field(default_factory=list)
    # The driver registered to boot from a virtio disk (viostor or vioscsi), if any.
    boot_driver: str | None = None
    # (name, .bat or .ps1 text) run once at first boot, in this order.
    firstboot_scripts: list[tuple[str, str]] = field(default_factory=list)
    # Where host-side temporary files go: the run's work directory (None: $TMPDIR).
    scratch: Path | None = None
    hives: HiveCache = field(init=False, repr=False)
    # Directories found or made, by lower-case path: their real path.
    _dirs: dict[str, str] = field(default_factory=dict, repr=False)
    _hive_paths: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.hives = HiveCache(self.g, self.hive_path, self.scratch)
        self._dirs[self.systemroot.lower()] = self.systemroot

    def note(self, step: str, what: str, path: str | None = None) -> None:
        self.changes.append(Change(step, what, path))
        log.info("%s: %s%s", step, what, f" ({path})" if path else "")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    def case_path(self, path: str) -> str | None:
        """The real path of a file on the case-insensitive NTFS volume, or None if absent."""
        return case_path(self.g, path)

    def hive_path(self, which: str) -> str:
        """Where the SYSTEM or SOFTWARE hive lives in the guest."""
        if which not in HIVES:
            raise ValueError(f"unknown hive {which!r}")
        if which not in self._hive_paths:
            self._hive_paths[which] = self._find_hive(which)
        return self._hive_paths[which]

    def _find_hive(self, which: str) -> str:
        try:
            ask = (
                self.g.inspect_get_windows_system_hive
                if which == "SYSTEM"
                else self.g.inspect_get_windows_software_hive
            )
            found: str = ask(self.os.root)
            return found
        except RuntimeError:
            real = self.case_path(f"{self.systemroot}/System32/config/{which}")
            if real is None:
                raise ConversionError(
                    f"the {which} registry hive is missing from {self.systemroot}"
                ) from None
            return real

    def read_hive(self, which: str) -> AbstractContextManager[Hive]:
        """The SYSTEM or SOFTWARE hive, read-only, with the edits of the steps so far."""
        return self.hives.read(which)

    def edit_hive(self, which: str) -> AbstractContextManager[HiveEditor]:
        """The hive for editing; its changes are kept when the block succeeds, and reach the
        guest at save_hives()."""
        return self.hives.edit(which)

    def save_hives(self) -> None:
        """Upload the edited hives into the guest: once, after the last step."""
        self.hives.save()

    def close(self) -> None:
        self.hives.close()

    def mkdir(self, path: str) -> str:
        """Make a directory (and its parents), reusing the case of existing ones; its real path."""
        parts = [p for p in path.split("/") if p]
        current = "/"
        for part in parts:
            child = posixpath.join(current, part)
            real = self._dirs.get(child.lower())
            if real is None:
                real = self.case_path(child)
                if real is None:
                    self.g.mkdir(child)
                    real = child
                # Directories are never removed during a conversion: ask the guest once.
                self._dirs[child.lower()] = real
            current = real
        return current


def make_guest(
    g: Any, os: OperatingSystem, vm: SourceVM, opts: ConvertOptions, scratch: Path | None = None
) -> WindowsGuest:
    """The WindowsGuest for an inspected OS whose system volume is mounted at /; its host-side
    temporary files under scratch ($TMPDIR if None)."""
    if os.windows is None:
        raise ConversionError(
            f"{os.product_name}: the Windows registry could not be read",
            hint="check that the SYSTEM and SOFTWARE hives exist and are not damaged",
        )
    systemroot = _real(g, os.windows.systemroot)
    if systemroot is None:
        raise ConversionError(f"{os.product_name}: system root {os.windows.systemroot} not found")
    return WindowsGuest(
        g=g,
        os=os,
        vm=vm,
        opts=opts,
        systemroot=systemroot,
        ccs=os.windows.current_control_set,
        scratch=scratch,
    )


def _real(g: Any, path: str) -> str | None:
    try:
        real: str = g.case_sensitive_path(path)
        return real if g.is_dir(real) else None
    except RuntimeError:
        return None
