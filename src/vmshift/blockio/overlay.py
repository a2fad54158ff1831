"""Copy-on-write overlays: the only thing conversion ever writes to.

Each source disk gets a qcow2 overlay in the private work directory, with the source as its
read-only backing file. libguestfs opens the overlays read-write; the source files are opened
read-only by qemu as backing files and never written, even when conversion fails halfway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import DiskImageError
from vmshift.model.vm import DiskEndpoint
from vmshift.process import CommandFailed, run


@dataclass(frozen=True)
class Overlay:
    path: Path
    source: DiskEndpoint
    name: str  # short disk name for messages and output files (sda, sdb ...)

    @property
    def virtual_size(self) -> int:
        return self.source.virtual_size


def _backing_name(endpoint: DiskEndpoint) -> str:
    uri = endpoint.uri
    if uri.startswith(("json:", "nbd:", "nbd+unix:")):
        return uri
    return str(Path(uri).resolve())


# The overlay's cluster: the unit in which a discard frees space (guest/session.py tells the
# appliance's disks to discard in whole clusters).
CLUSTER_SIZE = 64 << 10


def create_overlay(endpoint: DiskEndpoint, workdir: Path, name: str) -> Overlay:
    path = workdir / f"{name}.overlay.qcow2"
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    argv += ["-o", f"compat=1.1,lazy_refcounts=on,cluster_size={CLUSTER_SIZE}"]
    argv += ["-b", _backing_name(endpoint), "-F", endpoint.format, str(path)]
    try:
        run(argv, timeout=120)
    except CommandFailed as exc:
        raise DiskImageError(f"{endpoint.uri}: cannot put an overlay on this disk: {exc}") from exc
    return Overlay(path=path, source=endpoint, name=name)


@dataclass(frozen=True)
class SizeEstimate:
    required: int  # bytes the output needs when sparse
    fully_allocated: int  # bytes when preallocated


def measure(overlay: Overlay, out_format: str) -> SizeEstimate:
    """How much space the output of this overlay will take, from `qemu-img measure`."""
    try:
        proc = run(
            ["qemu-img", "measure", "--output=json", "-O", out_format, str(overlay.path)],
            timeout=600,
        )
        data = json.loads(proc.stdout)
        return SizeEstimate(int(data["required"]), int(data["fully-allocated"]))
    except (CommandFailed, ValueError, KeyError) as exc:
        raise DiskImageError(f"{overlay.source.uri}: cannot measure the disk: {exc}") from exc
