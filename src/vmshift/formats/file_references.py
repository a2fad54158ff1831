"""File names that a VMX or a VMDK descriptor gives for other files, and where they lead.

The names come from the guest's side: qemu opens whatever an extent line, a
parentFileNameHint or a VMX's fileName names, so a crafted one could make vmshift copy a host
file into the converted guest. resolve_reference() is the policy; see its docstring.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePath, PurePosixPath
from typing import TypeVar

from vmshift.errors import DiskImageError

_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")
P = TypeVar("P", bound=PurePath)


class UnsafeReference(DiskImageError):
    """A file name in a VMX or descriptor that vmshift refuses to follow."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f'"{name}": {reason}')
        self.name = name
        self.reason = reason


def is_absolute_reference(name: str) -> bool:
    """True for POSIX (/vmfs/volumes/...) and Windows (C:\\..., \\\\server\\...) absolute names."""
    return name.startswith("/") or bool(_WINDOWS_ABSOLUTE.match(name))


def reference_basename(name: str) -> str:
    return re.split(r"[\\/]", name)[-1]


def _local_is_file(path: PurePath) -> bool:
    return Path(path).is_file()


def resolve_reference(name: str, base_dir: P, is_file: Callable[[P], bool] = _local_is_file) -> P:
    """Where a file that a VMX or descriptor names lives on this host (or, with is_file
    answering for another host's files, on that host).

    The policy, because names come from the guest's side and qemu would open them as given:
    - a relative name is taken relative to base_dir (the naming file's directory), as VMware
      and qemu do, but one with a `..` component is refused: it could reach any host file;
    - an absolute name (an ESXi /vmfs/volumes/<ds>/<dir>/<file> path, a Windows C:\\ path)
      names a file on the machine the guest came from, never this host's file of that name;
      it is accepted only if a file with its basename exists in base_dir, which is how
      copied-out VMs look (all files in one directory). That local file is returned.
    The returned path is not checked for existence when the name was relative.
    """
    if not name or "\0" in name:
        raise UnsafeReference(name, "empty or invalid file name")
    if is_absolute_reference(name):
        base = reference_basename(name)
        if base in ("", ".", ".."):
            raise UnsafeReference(name, "absolute path without a file name")
        local = base_dir / base
        if not is_file(local):
            raise UnsafeReference(
                name,
                f'absolute path on the source host, and no "{base}" next to it in {base_dir}',
            )
        return local
    if ".." in PurePosixPath(name).parts:
        raise UnsafeReference(name, 'path leaves the directory (".." is not allowed)')
    return base_dir / name
