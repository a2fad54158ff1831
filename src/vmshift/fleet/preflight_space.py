"""`vmshift plan check`'s space check: what each guest would take at its target storage, summed
per target storage, against the free space there (statvfs of -os, or a libvirt pool's
available bytes)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import TargetError, VmshiftError
from vmshift.model.vm import DiskEndpoint
from vmshift.process import run


@dataclass(frozen=True)
class Use:
    """What one guest would take at its target storage."""

    storage: str  # GuestSpec.target_storage
    output: str
    path: str | None  # -os
    conn: str | None  # -oc
    size: int
    how: str  # how size was counted


def allocated(endpoint: DiskEndpoint) -> int:
    """The bytes of a local disk that hold data: the smaller of what `qemu-img map` calls
    data (what a sparse copy writes; it calls a flat VMDK's whole extent data) and the bytes
    its files take on the host (`actual-size` over the backing chain: st_blocks, holes not
    counted, a VMDK's extents included); the virtual size when qemu-img cannot tell."""
    fmt, path = endpoint.format, endpoint.uri
    try:
        extents = json.loads(run(["qemu-img", "map", "--output=json", "-f", fmt, path]).stdout)
        chain = json.loads(
            run(["qemu-img", "info", "--backing-chain", "--output=json", "-f", fmt, path]).stdout
        )
    except (VmshiftError, ValueError):
        return endpoint.virtual_size
    data = sum(int(e["length"]) for e in extents if e.get("data"))
    files = sum(int(image.get("actual-size", 0)) for image in chain)
    return min(data, files) if files else data


def space_findings(uses: Iterable[Use], directory: Path) -> list[tuple[bool, str]]:
    """Per target storage: (fits, what) of the sum of its guests' used data against the free
    space there; fits is also True where the free space cannot be told."""
    groups: dict[str, list[Use]] = {}
    for use in uses:
        groups.setdefault(use.storage, []).append(use)
    out: list[tuple[bool, str]] = []
    for group in groups.values():
        first = group[0]
        if first.output == "null":
            continue
        need = sum(u.size for u in group)
        label = _storage_label(first)
        try:
            free = free_space(first, directory)
        except VmshiftError as exc:
            out.append((True, f"{label}: free space not known: {exc}"))
            continue
        if free is None:
            continue
        how = ", ".join(sorted({u.how for u in group}))
        text = f"{label}: {len(group)} guest(s) need {_size(need)} ({how}), {_size(free)} free"
        out.append((need <= free, text))
    return out


def _storage_label(use: Use) -> str:
    conn = f" -oc {use.conn}" if use.conn else ""
    return f"-o {use.output}{conn} -os {use.path or '(default)'}"


def free_space(use: Use, directory: Path) -> int | None:
    """Free bytes where the guests go: statvfs of -os (a directory), or a libvirt pool's
    available bytes; None where it cannot be told (an rhv HOST:/PATH not mounted here)."""
    if use.output == "libvirt":
        return _pool_available(use.conn, use.path)
    if use.path is None or (use.output == "rhv" and ":" in use.path):
        return None
    try:
        st = os.statvfs(directory / use.path)
    except OSError as exc:
        raise TargetError(f"-os {use.path}: {exc.strerror}") from None
    return st.f_bavail * st.f_frsize


def _pool_available(conn: str | None, pool: str | None) -> int:
    from vmshift.libvirt_binding import import_libvirt
    from vmshift.targets.libvirt import DEFAULT_POOL, DEFAULT_URI

    lv = import_libvirt(TargetError, "-o libvirt")
    try:
        handle = lv.openReadOnly(conn or DEFAULT_URI)
        try:
            return int(handle.storagePoolLookupByName(pool or DEFAULT_POOL).info()[3])
        finally:
            handle.close()
    except lv.libvirtError as exc:
        raise TargetError(f"pool {pool or DEFAULT_POOL}: {exc.get_error_message()}") from None


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"
