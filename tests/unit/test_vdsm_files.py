"""VDSM's key=value files: a domain's metadata read, a volume's .meta written."""

from __future__ import annotations

import pytest

from vmshift.errors import TargetError
from vmshift.formats.vdsm import VolumeMeta, parse_domain_metadata

SD = "12345678-1234-4234-8234-123456789abc"
EXPORT_METADATA = f"""CLASS=Backup
DESCRIPTION=export
IOOPTIMEOUTSEC=10
LEASERETRIES=3
LEASETIMESEC=60
LOCKPOLICY=
LOCKRENEWALINTERVALSEC=5
MASTER_VERSION=0
POOL_UUID=
REMOTE_PATH=nfs.example.com:/export/esd
ROLE=Regular
SDUUID={SD}
TYPE=NFS
VERSION=3
_SHA_CKSUM=865880e0cc76451185fc92e7e59927f44fabb01c
"""


def test_export_domain_metadata() -> None:
    meta = parse_domain_metadata(EXPORT_METADATA, "dom_md/metadata")
    assert (meta.sd_uuid, meta.domain_class, meta.version, meta.pool_uuid) == (SD, "Backup", 3, "")
    assert meta.is_export
    data = parse_domain_metadata(EXPORT_METADATA.replace("CLASS=Backup", "CLASS=Data"), "m")
    assert not data.is_export


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CLASS=Backup\n", "m: no SDUUID= line: not a storage domain's metadata"),
        (f"SDUUID={SD}\n", "m: no CLASS= line: not a storage domain's metadata"),
        (f"SDUUID={SD}\nCLASS=Backup\nVERSION=three\n", "m: VERSION=three is not a number"),
        (f"SDUUID={SD}\n<html>\n", "m:2: not a KEY=VALUE line: '<html>'"),
    ],
)
def test_bad_domain_metadata(text: str, message: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_domain_metadata(text, "m")
    assert str(info.value) == message


def _meta(**changes: object) -> VolumeMeta:
    values: dict[str, object] = {
        "domain": SD,
        "image": "11111111-2222-4333-8444-555555555555",
        "capacity": 8 << 30,
        "format": "COW",
        "allocation": "SPARSE",
        "description": "web01 disk 1, converted by vmshift",
        "ctime": 1764921600,
    }
    values.update(changes)
    return VolumeMeta(**values)  # type: ignore[arg-type]


def test_volume_meta_for_an_export_domain() -> None:
    assert _meta().render(domain_version=3) == (
        f"DOMAIN={SD}\n"
        "IMAGE=11111111-2222-4333-8444-555555555555\n"
        "PUUID=00000000-0000-0000-0000-000000000000\n"
        "SIZE=16777216\n"
        "FORMAT=COW\n"
        "TYPE=SPARSE\n"
        "VOLTYPE=LEAF\n"
        "DISKTYPE=2\n"
        "DESCRIPTION=web01 disk 1, converted by vmshift\n"
        "LEGALITY=LEGAL\n"
        "CTIME=1764921600\n"
        "MTIME=1764921600\n"
        "POOL_UUID=\n"
        "EOF\n"
    )


def test_volume_meta_on_a_version_5_domain_has_cap_in_bytes() -> None:
    lines = _meta().render(domain_version=5).splitlines()
    assert f"CAP={8 << 30}" in lines
    assert not any(line.startswith("SIZE=") for line in lines)


def test_volume_meta_description_is_one_short_line_without_equals() -> None:
    text = _meta(description="a=b\nc " + "é" * 300).render(domain_version=3)
    (line,) = [x for x in text.splitlines() if x.startswith("DESCRIPTION=")]
    value = line.removeprefix("DESCRIPTION=")
    assert value.startswith("a_b c ")
    assert "=" not in value
    assert len(value.encode()) <= 210
    assert len(text.encode()) <= 512


def test_volume_meta_refuses_a_size_vdsm_cannot_say() -> None:
    with pytest.raises(ValueError, match="not a multiple of 512"):
        _meta(capacity=1000).render(domain_version=3)
