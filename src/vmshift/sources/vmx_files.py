"""How -i vmx gets at a VM's files, wherever they are: the interface the VMX source reads the VMX
and the VMDK descriptors through, its local implementation, and the checked layout of a disk
that a transport then exposes to qemu.

Only small files (a VMX, descriptors, the header of a sparse extent) are read through VmFiles;
the disks' data never is. Paths are the paths on the host holding the files: a local Path for
the local transport, a PurePosixPath on the SSH host for -it ssh.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Protocol

from vmshift.formats.vmdk_descriptor import Readable, VmdkDescriptor
from vmshift.model.vm import DiskEndpoint
from vmshift.sources import vmx_hardware as hw


class VmFiles(Protocol):
    """Read access to the files of one VM. Errors are OSErrors (FileNotFoundError,
    IsADirectoryError, PermissionError ...), as local file access raises them."""

    def read_small(self, path: PurePath, limit: int) -> bytes:
        """At most limit bytes from the start of path."""
        ...

    def open(self, path: PurePath) -> AbstractContextManager[Readable]: ...

    def is_file(self, path: PurePath) -> bool: ...

    def identity(self, path: PurePath) -> str:
        """The same string for every name of one file (symbolic links resolved)."""
        ...


class LocalFiles:
    """The files of a VM on a filesystem of this host, opened read-only."""

    def read_small(self, path: PurePath, limit: int) -> bytes:
        with Path(path).open("rb") as f:
            return f.read(limit)

    def open(self, path: PurePath) -> AbstractContextManager[Readable]:
        return Path(path).open("rb")

    def is_file(self, path: PurePath) -> bool:
        return Path(path).is_file()

    def identity(self, path: PurePath) -> str:
        return str(Path(path).resolve())


@dataclass(frozen=True)
class Layer:
    """One file of a disk's snapshot chain, checked."""

    path: PurePath  # the descriptor (or the sparse file holding it)
    desc: VmdkDescriptor
    extent_files: tuple[PurePath | None, ...]  # per extent line; None for ZERO; () if embedded
    parent: PurePath | None
    needs_rewrite: bool  # qemu would misread this descriptor as it is


@dataclass(frozen=True)
class CheckedDisk:
    slot: hw.Slot
    model: str | None
    chain: tuple[Layer, ...]  # the file the VMX names first


class VmxTransport(Protocol):
    """Where a VM's files are and how qemu reads a disk's data: the local filesystem, or SSH."""

    @property
    def files(self) -> VmFiles: ...

    @property
    def vmx_path(self) -> PurePath:
        """The VMX's path on the host holding it."""
        ...

    @property
    def display(self) -> str:
        """How messages name the VMX: as the user wrote it."""
        ...

    @property
    def source_file(self) -> str:
        """SourceVM.source_file."""
        ...

    def accept(self, disk: CheckedDisk, where: str) -> None:
        """Refuse (DiskImageError) a checked disk this transport cannot expose; called for
        every disk before any is exposed."""
        ...

    def expose(self, disk: CheckedDisk, workdir: Path, name: str, where: str) -> DiskEndpoint:
        """An endpoint qemu reads the disk's current state from (files under workdir only)."""
        ...

    def close(self) -> None:
        """Stop helpers and connections; idempotent."""
        ...
