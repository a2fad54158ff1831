"""A fake oVirt/RHV export storage domain, laid out as VDSM makes one on an NFS export.

    <top>/<SD_UUID>/dom_md/{metadata,ids,inbox,leases,outbox}
    <top>/<SD_UUID>/images/
    <top>/<SD_UUID>/master/{vms,tasks}/

Only dom_md/metadata carries content the target reads; the other dom_md files are empty, as
they are until a pool uses the domain.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DATE_RE = re.compile(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d")


@dataclass(frozen=True)
class FakeDomain:
    top: Path  # what -os names: the NFS mount point
    sd_uuid: str

    @property
    def root(self) -> Path:
        return self.top / self.sd_uuid

    def vm_dirs(self) -> list[Path]:
        return sorted((self.root / "master" / "vms").iterdir())

    def image_dirs(self) -> list[Path]:
        return sorted((self.root / "images").iterdir())

    def everything(self) -> list[str]:
        """Every path under the domain, relative to it: to prove a run left nothing behind."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))


def make_export_domain(
    top: Path,
    *,
    domain_class: str = "Backup",
    version: int = 3,
    owner: tuple[int, int] | None = None,
) -> FakeDomain:
    sd_uuid = str(uuid.uuid4())
    root = top / sd_uuid
    for sub in ("dom_md", "images", "master/vms", "master/tasks"):
        (root / sub).mkdir(parents=True)
    for name in ("ids", "inbox", "leases", "outbox"):
        (root / "dom_md" / name).write_bytes(b"")
    metadata = {
        "CLASS": domain_class,
        "DESCRIPTION": "export",
        "IOOPTIMEOUTSEC": "10",
        "LEASERETRIES": "3",
        "LEASETIMESEC": "60",
        "LOCKPOLICY": "",
        "LOCKRENEWALINTERVALSEC": "5",
        "MASTER_VERSION": "0",
        "POOL_UUID": "",
        "REMOTE_PATH": "nfs.example.com:/exports/export",
        "ROLE": "Regular",
        "SDUUID": sd_uuid,
        "TYPE": "NFS",
        "VERSION": str(version),
        "_SHA_CKSUM": "0" * 40,
    }
    (root / "dom_md" / "metadata").write_text("".join(f"{k}={v}\n" for k, v in metadata.items()))
    if owner is not None:
        for path in [root, *root.rglob("*")]:
            os.chown(path, *owner)
    return FakeDomain(top, sd_uuid)


def read_meta(path: Path) -> dict[str, str]:
    """A .meta file as VDSM reads it: KEY=VALUE lines up to a final EOF."""
    lines = path.read_text().splitlines()
    assert lines[-1] == "EOF", f"{path}: does not end with EOF"
    values = {}
    for line in lines[:-1]:
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        values[key] = value
    return values


def masked_ovf(text: str) -> str:
    """The OVF with what differs between runs replaced: UUIDs numbered in order of first
    appearance, dates, and the sizes that depend on the bytes copied."""
    numbers: dict[str, str] = {}

    def number(m: re.Match[str]) -> str:
        return numbers.setdefault(m.group(0), f"UUID-{len(numbers) + 1}")

    text = UUID_RE.sub(number, text.replace("00000000-0000-0000-0000-000000000000", "NULL-UUID"))
    text = DATE_RE.sub("DATE", text)
    text = re.sub(r"on \d{4}-\d\d-\d\d", "on DAY", text)
    tree = etree.fromstring(text.encode())
    ovf = "{http://schemas.dmtf.org/ovf/envelope/1/}"
    for f in tree.iter("File"):
        f.set(f"{ovf}size", "BYTES")
    for d in tree.iter("Disk"):
        d.set(f"{ovf}actual_size", "GIB")
    body: bytes = etree.tostring(tree, pretty_print=True, encoding="UTF-8")
    return body.decode()
