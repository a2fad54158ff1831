"""VDSM's key=value files on a file storage domain: the domain's dom_md/metadata (read) and a
volume's .meta file (written).

Pure: text in, values out. Both files are lines of KEY=VALUE; a volume's .meta ends with a line
holding only EOF, which VDSM looks for before it trusts the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmshift.errors import TargetError

NULL_UUID = "00000000-0000-0000-0000-000000000000"

# Storage domains at VERSION 5 and later describe a volume's size as CAP (bytes); older ones,
# which is what export domains usually are, as SIZE (512-byte sectors).
CAP_SINCE_VERSION = 5
SECTOR = 512
# VDSM keeps a volume's metadata in one 512-byte slot and cuts descriptions to fit.
METADATA_SIZE = 512
DESCRIPTION_SIZE = 210


def parse_keyvalues(text: str, path: str) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and a final EOF are allowed, anything else is an error."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line == "EOF":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise TargetError(f"{path}:{number}: not a KEY=VALUE line: {line[:60]!r}")
        values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class DomainMetadata:
    """What vmshift needs from a storage domain's dom_md/metadata."""

    sd_uuid: str
    domain_class: str  # Backup for an export domain; Data, Iso otherwise
    version: int
    pool_uuid: str  # empty when the domain is detached

    @property
    def is_export(self) -> bool:
        return self.domain_class == "Backup"


def parse_domain_metadata(text: str, path: str) -> DomainMetadata:
    values = parse_keyvalues(text, path)
    for key in ("SDUUID", "CLASS"):
        if key not in values:
            raise TargetError(f"{path}: no {key}= line: not a storage domain's metadata")
    try:
        version = int(values.get("VERSION", "0"))
    except ValueError:
        raise TargetError(f"{path}: VERSION={values['VERSION']} is not a number") from None
    return DomainMetadata(
        sd_uuid=values["SDUUID"],
        domain_class=values["CLASS"],
        version=version,
        pool_uuid=values.get("POOL_UUID", ""),
    )


@dataclass(frozen=True)
class VolumeMeta:
    """One volume of an image: the .meta file VDSM reads next to the volume file."""

    domain: str  # SD_UUID
    image: str  # IMAGE_UUID
    capacity: int  # the disk's virtual size, bytes
    format: str  # RAW or COW
    allocation: str  # SPARSE or PREALLOCATED
    description: str
    ctime: int  # seconds since the epoch
    parent: str = NULL_UUID  # PUUID: a lone volume has no parent
    # "2" is the data-disk type every VDSM accepts; newer ones also know it as DATA.
    disktype: str = "2"

    def render(self, domain_version: int) -> str:
        if self.capacity % SECTOR:
            raise ValueError(f"capacity {self.capacity} is not a multiple of {SECTOR}")
        size = (
            [("CAP", str(self.capacity))]
            if domain_version >= CAP_SINCE_VERSION
            else [("SIZE", str(self.capacity // SECTOR))]
        )
        lines = [
            ("DOMAIN", self.domain),
            ("IMAGE", self.image),
            ("PUUID", self.parent),
            *size,
            ("FORMAT", self.format),
            ("TYPE", self.allocation),
            ("VOLTYPE", "LEAF"),
            ("DISKTYPE", self.disktype),
            ("DESCRIPTION", self.clean_description()),
            ("LEGALITY", "LEGAL"),
            ("CTIME", str(self.ctime)),
            ("MTIME", str(self.ctime)),
            ("POOL_UUID", ""),
        ]
        text = "".join(f"{k}={v}\n" for k, v in lines) + "EOF\n"
        if len(text.encode()) > METADATA_SIZE:
            raise ValueError(f"volume metadata is {len(text.encode())} bytes, over {METADATA_SIZE}")
        return text

    def clean_description(self) -> str:
        """One line without '=' and at most VDSM's length: its parser has no escapes."""
        one_line = " ".join(self.description.split()).replace("=", "_")
        return one_line.encode()[:DESCRIPTION_SIZE].decode(errors="ignore")
