"""The Source contract: turn what the user named with -i into a SourceVM with readable disks.

Example of a source module:

    class DiskSource:
        def __init__(self, opts: SourceOptions) -> None: ...
        def open(self, workdir: Path) -> SourceVM: ...   # read metadata, expose disks
        def close(self) -> None: ...                     # stop helpers (nbdkit ...), idempotent

open() must not write to any source file; it may create files under workdir (which the
pipeline removes). Disks are exposed as DiskEndpoints a qemu-based reader can open
read-only: a local path with its real format, or an NBD URI served by a helper process.
Errors are SourceError/DiskImageError naming the file at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from vmshift.blockio.progress import EventSink
from vmshift.errors import SourceError
from vmshift.model.vm import SourceVM


@dataclass(frozen=True)
class SourceOptions:
    """What the command line says about the source."""

    args: tuple[str, ...]  # the positional arguments: a file, several disks, or a guest name
    conn: str | None = None  # -ic URI
    password: str | None = None  # the password of the -ic connection (-ip FILE's first line)
    options: dict[str, str] = field(default_factory=dict)  # -io KEY=VALUE
    transport: str | None = None  # -it
    input_format: str | None = None  # -if: the disks' format, when detection must be overridden
    # Overrides/defaults for sources without metadata (-i disk).
    memory: int | None = None
    vcpus: int | None = None
    name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    def open(self, workdir: Path) -> SourceVM: ...

    def close(self) -> None: ...


@runtime_checkable
class RemoteSource(Protocol):
    """A source whose disks are read from another host while the run goes on (vSphere, SSH)."""

    def fetched(self) -> dict[str, int]:
        """Bytes fetched from the remote per disk label; complete once the source is closed."""
        ...

    def lost(self) -> SourceError | None:
        """The remote stopped answering and reads failed after every retry: the error to
        report instead of what the reader of the missing blocks made of them; else None."""
        ...


@runtime_checkable
class ReopenableSource(Protocol):
    """A remote source whose disks a --resume can read again (resume.py): open() serves them at
    the same endpoints when given the same work directory (nbdkit on the same socket paths), so
    the kept overlays' backing names resolve again."""

    def identity(self) -> tuple[str, ...] | None:
        """After open(): what must be the same for a kept copy to be continued (the VM's UUID,
        its configuration's change stamp, each disk's size and modification time as the remote
        reports them); None if open() could not serve the disks again as they were (a disk
        downloaded into the work directory, which open() would download again)."""
        ...


@runtime_checkable
class ReportingSource(Protocol):
    """A source whose open() does slow work worth showing: vSphere downloads a disk that has no
    flat file through the VM's export lease before the run can read it."""

    def report_to(self, sink: EventSink) -> None:
        """Send that work's progress (CopyProgress events) to sink; called before open()."""
        ...
