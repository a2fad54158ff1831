"""The one exception tree of vmshift.

Library code raises these; only the CLI turns them into a message and an exit code. Each error
carries a one-line message that names the file or option at fault, and an optional hint that
tells the user what to do about it.
"""

from __future__ import annotations


class VmshiftError(Exception):
    """Base of every error vmshift reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(VmshiftError):
    """A bad command-line option or combination of options."""

    exit_code = 2


class ConfigError(VmshiftError):
    """A configuration or profile file that cannot be used."""


class EnvironmentProblem(VmshiftError):
    """The host lacks something vmshift needs (a tool, a device, a permission)."""


class SourceError(VmshiftError):
    """The source guest or one of its disks cannot be read."""


class DiskImageError(SourceError):
    """A disk image is missing, unreadable, corrupt or not a disk image at all."""


class InspectionError(VmshiftError):
    """Inspection of the guest failed or found nothing to work with."""


class NoOperatingSystemError(InspectionError):
    """The disks hold no operating system that inspection recognises."""


class ConversionError(VmshiftError):
    """The guest could not be converted."""


class CopyError(VmshiftError):
    """Copying disk data failed."""


class TargetError(VmshiftError):
    """The target cannot be written."""


class BootCheckError(VmshiftError):
    """--verify-boot: the converted guest did not come up, or could not be started to see.
    The output is kept; the exit code tells this apart from a failed conversion."""

    exit_code = 3
