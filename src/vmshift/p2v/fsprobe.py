"""What lies on a disk, for P2V discovery: a filesystem or partition table found by `blkid -p`
at an offset (no partition device node needed), and a partition table as sfdisk reads it.

discovery.py takes the probe as a parameter (`Probe`), so that tests of fake /sys trees give
their own; `blkid_probe` is the default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from vmshift.errors import SourceError
from vmshift.process import CommandFailed, run

_DOS_EXTENDED = frozenset({"5", "f", "85"})  # the container of logical partitions


@dataclass(frozen=True)
class FsInfo:
    """What a probe found at one place of a disk."""

    fstype: str | None = None  # blkid's TYPE: ext4, xfs, vfat, swap, LVM2_member ...
    label: str | None = None
    uuid: str | None = None
    pttype: str | None = None  # a partition table there (dos, gpt), on a whole-disk probe


Probe = Callable[[str, int, int], FsInfo]  # (device path, offset, size) in bytes


def partition_name(disk: str, number: int) -> str:
    """sda + 1 -> sda1; nvme0n1 + 1 -> nvme0n1p1 (a disk name ending in a digit takes a p)."""
    return f"{disk}{'p' if disk[-1:].isdigit() else ''}{number}"


def read_partition_table(device: str) -> list[tuple[int, int, int]]:
    """(number, start, size) in bytes of each partition in the table of device (sfdisk)."""
    try:
        out = run(["sfdisk", "--json", device]).stdout.decode(errors="replace")
    except CommandFailed as exc:
        raise SourceError(f"{device}: cannot read its partition table: {exc.message}") from exc
    return parse_sfdisk_json(out)


def parse_sfdisk_json(text: str) -> list[tuple[int, int, int]]:
    """(number, start, size) in bytes from `sfdisk --json`; a dos extended partition is left
    out (it holds no filesystem, only the logical partitions, which are listed)."""
    table = json.loads(text)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    entries = []
    for part in table.get("partitions", []):
        if table.get("label") == "dos" and str(part.get("type", "")).lower() in _DOS_EXTENDED:
            continue
        match = re.search(r"(\d+)$", str(part["node"]))
        if match is None:
            continue
        start, length = int(part["start"]) * sector, int(part["size"]) * sector
        entries.append((int(match.group(1)), start, length))
    return sorted(entries)


def blkid_probe(device: str, offset: int, size: int) -> FsInfo:
    """The default probe: `blkid -p` at offset for size bytes of device. Nothing found (exit
    2) and an ambivalent result (exit 8: several signatures) are an empty FsInfo."""
    argv = ["blkid", "-p", "-o", "export", "--offset", str(offset), "--size", str(size), device]
    try:
        out = run(argv).stdout.decode(errors="replace")
    except CommandFailed as exc:
        if exc.returncode in (2, 8):
            return FsInfo()
        raise SourceError(f"{device}: cannot probe at offset {offset}: {exc.message}") from exc
    return parse_blkid_export(out)


def parse_blkid_export(text: str) -> FsInfo:
    """FsInfo from `blkid -o export` (KEY=value lines, value characters \\-escaped)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = re.sub(r"\\(.)", r"\1", value)
    return FsInfo(values.get("TYPE"), values.get("LABEL"), values.get("UUID"), values.get("PTTYPE"))
