"""Put many host files into guest directories with few appliance round trips.

One libguestfs upload per file costs a round trip each, and without KVM that is a large part of
a Windows conversion (a virtio-win folder is thirty-odd files). So the files new to the guest go
in as one tar archive (tar_in); a file that is there already, under any case, is overwritten in
place with an upload, so it keeps its name as spelled and its NTFS security descriptor, as a
plain upload would.
"""

from __future__ import annotations

import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmshift.errors import ConversionError


@dataclass(frozen=True)
class Placement:
    directory: str  # an existing guest directory, in its real case
    name: str  # the file name to use when no file of that name (in any case) is there
    local: Path  # the host file to copy


def put_files(g: Any, placements: Sequence[Placement], scratch: Path | None = None) -> list[str]:
    """Copy each placement's file into the guest; the guest path each one got, in order.
    New files go in one archive, made in a temporary directory under scratch ($TMPDIR if None).

    A name placed twice in one directory gets the content of its last placement.
    """
    existing: dict[str, dict[str, str]] = {}  # directory -> lower-case name -> real name
    for directory in dict.fromkeys(p.directory for p in placements):
        try:
            existing[directory] = {n.lower(): n for n in g.ls(directory)}
        except RuntimeError as exc:
            raise ConversionError(f"cannot list {directory} in the guest: {exc}") from exc
    targets: list[str] = []
    new: dict[str, Path] = {}  # guest path -> host file, for the archive
    replaced: dict[str, Path] = {}  # guest path -> host file, uploaded one by one
    for p in placements:
        names = existing[p.directory]
        real = names.get(p.name.lower())
        target = f"{p.directory.rstrip('/')}/{real or p.name}"
        if real is None:
            names[p.name.lower()] = p.name  # placed again, in any case: this same file
        (new if target in new or real is None else replaced)[target] = p.local
        targets.append(target)
    for target, local in replaced.items():
        _upload(g, local, target)
    if new:
        _tar_in(g, new, scratch)
    return targets


def _upload(g: Any, local: Path, target: str) -> None:
    try:
        g.upload(str(local), target)
    except RuntimeError as exc:
        raise ConversionError(f"cannot write {target} in the guest: {exc}") from exc


def _tar_in(g: Any, files: dict[str, Path], scratch: Path | None) -> None:
    """Extract the files at their guest paths (their directories exist) in one call."""
    now = int(time.time())  # the time an upload would have given them
    with tempfile.TemporaryDirectory(prefix="vmshift-files-", dir=scratch) as tmp:
        archive = Path(tmp) / "files.tar"
        with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tar:
            for target, local in files.items():
                # Regular files only, no directory entries: tar leaves existing directories be.
                info = tarfile.TarInfo(target.lstrip("/"))
                info.size = local.stat().st_size
                info.mode = 0o644
                info.mtime = now
                with local.open("rb") as data:
                    tar.addfile(info, data)
        try:
            g.tar_in(str(archive), "/")
        except RuntimeError as exc:
            where = ", ".join(sorted({t.rsplit("/", 1)[0] for t in files}))
            raise ConversionError(f"cannot write files into {where} in the guest: {exc}") from exc
