"""The VMDK descriptor parser: golden descriptors of every createType, the descriptor embedded
in a real sparse VMDK, bad extent lines, the emitter, and the file-name policy."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from vmshift.errors import DiskImageError
from vmshift.formats.file_references import UnsafeReference, resolve_reference
from vmshift.formats.vmdk_descriptor import (
    NO_PARENT,
    Extent,
    VmdkDescriptor,
    VmdkDescriptorError,
    embedded_descriptor,
    format_descriptor,
    parse_descriptor,
    parse_sparse_header,
    read_descriptor,
)

HEADER = """\
# Disk DescriptorFile
version=1
encoding="UTF-8"
CID={cid}
parentCID={parent}
createType="{ctype}"
{more}
# Extent description
{extents}

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "261"
ddb.geometry.heads = "255"
ddb.geometry.sectors = "63"
ddb.longContentID = "0123456789abcdef0123456789abcdef"
ddb.uuid = "60 00 C2 9d 4c 2a 1b 2e-8d 0b 9b 74 5e 6c 0e 12"
ddb.virtualHWVersion = "14"
"""


def _text(ctype: str, extents: str, *, parent: str = "ffffffff", more: str = "") -> str:
    return HEADER.format(cid="a1b2c3d4", parent=parent, ctype=ctype, more=more, extents=extents)


# createType -> (extent lines, expected extents, parentFileNameHint)
GOLDEN: dict[str, tuple[str, list[Extent], str | None]] = {
    "monolithicSparse": (
        'RW 4194304 SPARSE "web.vmdk"',
        [Extent("RW", 4194304, "SPARSE", "web.vmdk", None, 9)],
        None,
    ),
    "monolithicFlat": (
        'RW 2048 FLAT "web-flat.vmdk" 0',
        [Extent("RW", 2048, "FLAT", "web-flat.vmdk", 0, 9)],
        None,
    ),
    "twoGbMaxExtentSparse": (
        'RW 4192256 SPARSE "web-s001.vmdk"\nRW 4192256 SPARSE "web-s002.vmdk"\n'
        'RW 8192 SPARSE "web-s003.vmdk"',
        [
            Extent("RW", 4192256, "SPARSE", "web-s001.vmdk", None, 9),
            Extent("RW", 4192256, "SPARSE", "web-s002.vmdk", None, 10),
            Extent("RW", 8192, "SPARSE", "web-s003.vmdk", None, 11),
        ],
        None,
    ),
    "twoGbMaxExtentFlat": (
        'RW 4192256 FLAT "web-f001.vmdk" 0\nRW 4096 FLAT "web-f002.vmdk" 0',
        [
            Extent("RW", 4192256, "FLAT", "web-f001.vmdk", 0, 9),
            Extent("RW", 4096, "FLAT", "web-f002.vmdk", 0, 10),
        ],
        None,
    ),
    "vmfs": (
        'RW 41943040 VMFS "web-flat.vmdk"',
        [Extent("RW", 41943040, "VMFS", "web-flat.vmdk", None, 9)],
        None,
    ),
    "vmfsThin": (
        'RW 41943040 VMFS "web-flat.vmdk"',
        [Extent("RW", 41943040, "VMFS", "web-flat.vmdk", None, 9)],
        None,
    ),
    "vmfsSparse": (
        'RW 41943040 VMFSSPARSE "web-000001-delta.vmdk"',
        [Extent("RW", 41943040, "VMFSSPARSE", "web-000001-delta.vmdk", None, 9)],
        "web.vmdk",
    ),
    "seSparse": (
        'RW 41943040 SESPARSE "web-000002-sesparse.vmdk"',
        [Extent("RW", 41943040, "SESPARSE", "web-000002-sesparse.vmdk", None, 9)],
        "/vmfs/volumes/5f1e-aa/web/web-000001.vmdk",
    ),
    "streamOptimized": (
        'RW 4194304 SPARSE "web-disk1.vmdk"',
        [Extent("RW", 4194304, "SPARSE", "web-disk1.vmdk", None, 9)],
        None,
    ),
    "vmfsRawDeviceMap": (
        'RW 209715200 VMFSRDM "web-rdm.vmdk"',
        [Extent("RW", 209715200, "VMFSRDM", "web-rdm.vmdk", None, 9)],
        None,
    ),
    "custom": (
        'RDONLY 2048 FLAT "a.raw" 0\nNOACCESS 2048 FLAT "b.raw" 2048\nRW 4096 ZERO',
        [
            Extent("RDONLY", 2048, "FLAT", "a.raw", 0, 9),
            Extent("NOACCESS", 2048, "FLAT", "b.raw", 2048, 10),
            Extent("RW", 4096, "ZERO", None, None, 11),
        ],
        None,
    ),
}


@pytest.mark.parametrize("ctype", sorted(GOLDEN))
def test_golden_descriptors(ctype: str) -> None:
    lines, expected, hint = GOLDEN[ctype]
    parent = "ffffffff" if hint is None else "0badcafe"
    more = f'parentFileNameHint="{hint}"' if hint else 'isNativeSnapshot="no"'
    desc = parse_descriptor(_text(ctype, lines, parent=parent, more=more), path="web.vmdk")
    assert desc.create_type == ctype
    assert desc.version == 1
    assert desc.cid == 0xA1B2C3D4
    assert desc.parent_cid == (NO_PARENT if hint is None else 0x0BADCAFE)
    assert desc.has_parent is (hint is not None)
    assert desc.parent_filename_hint == hint
    assert list(desc.extents) == expected
    assert desc.capacity_sectors == sum(e.sectors for e in expected)
    assert desc.adapter_type == "lsilogic"
    assert desc.virtual_hw_version == "14"
    assert desc.geometry == (261, 255, 63)
    assert desc.uuid == "60 00 C2 9d 4c 2a 1b 2e-8d 0b 9b 74 5e 6c 0e 12"
    assert desc.ddb["ddb.longContentID"] == "0123456789abcdef0123456789abcdef"
    assert desc.embedded is False
    if hint is None:
        assert desc.header == {"encoding": "UTF-8", "isNativeSnapshot": "no"}


@pytest.mark.parametrize("ctype", sorted(GOLDEN))
def test_format_round_trips(ctype: str) -> None:
    lines, _, hint = GOLDEN[ctype]
    more = f'parentFileNameHint="{hint}"' if hint else ""
    desc = parse_descriptor(_text(ctype, lines, more=more), path="a.vmdk")
    again = parse_descriptor(format_descriptor(desc), path="a.vmdk")
    assert [(e.access, e.sectors, e.kind, e.filename, e.offset) for e in again.extents] == [
        (e.access, e.sectors, e.kind, e.filename, e.offset) for e in desc.extents
    ]
    for field in ("create_type", "version", "cid", "parent_cid", "parent_filename_hint", "ddb"):
        assert getattr(again, field) == getattr(desc, field), field


def test_minimal_descriptor_without_ids_or_ddb() -> None:
    desc = parse_descriptor('createType="monolithicFlat"\nRW 8 FLAT "x" 0\n', path="x.vmdk")
    assert desc.cid is None and desc.parent_cid is None
    assert not desc.has_parent
    assert desc.adapter_type is None and desc.geometry is None
    assert desc.ddb_value("adapterType") is None


def test_ddb_lookup_is_case_insensitive() -> None:
    desc = parse_descriptor(
        'createType="vmfs"\nRW 8 VMFS "x"\nddb.ADAPTERTYPE = "pvscsi"\n', path="x.vmdk"
    )
    assert desc.adapter_type == "pvscsi"


def test_extent_file_names_may_hold_spaces_and_unicode() -> None:
    desc = parse_descriptor(
        'createType="monolithicFlat"\nRW 8 FLAT "My Disk é-flat.vmdk" 0\n', path="x.vmdk"
    )
    assert desc.extents[0].filename == "My Disk é-flat.vmdk"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('RW abc SPARSE "x.vmdk"', "size is not a number"),
        ('RW -5 SPARSE "x.vmdk"', "size is not a number"),
        ('RW 100 BOGUS "x.vmdk"', "unknown extent type"),
        ('RW 100 sparse "x.vmdk"', "unknown extent type"),
        ("RW 100 SPARSE", "needs a file name"),
        ('RW 100 SPARSE ""', "needs a file name"),
        ('RW 100 ZERO "x.vmdk"', "a ZERO extent has no file"),
        ('RW 100 SPARSE "x.vmdk" 5', "has no offset"),
        ('RW 100 FLAT "x.vmdk" -1', "offset is not a number"),
        ('RW 100 FLAT "x.vmdk', "expected ACCESS SECTORS TYPE"),
        ('RW 100 FLAT "x.vmdk" 0 junk', "expected ACCESS SECTORS TYPE"),
        ("RW", "expected ACCESS SECTORS TYPE"),
        ('rw 100 FLAT "x.vmdk" 0', "unknown access"),
    ],
)
def test_bad_extent_lines(line: str, problem: str) -> None:
    text = f'# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n{line}\n'
    with pytest.raises(VmdkDescriptorError) as info:
        parse_descriptor(text, path="/vms/web.vmdk")
    err = info.value
    assert isinstance(err, DiskImageError)
    assert str(err).startswith("/vms/web.vmdk: line 4: bad extent line (")
    assert problem in str(err)
    assert str(err).endswith(line)
    assert err.line_number == 4
    assert err.line == line


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('version=1\nRW 8 FLAT "x" 0\n', "no createType"),
        ('createType="vmfs"\n', "without any extent line"),
        ('createType="vmfs"\nCID=zzzz\nRW 8 VMFS "x"\n', "line 2: CID is not hexadecimal"),
        ('createType="vmfs"\nversion=one\nRW 8 VMFS "x"\n', "line 2: version is not a number"),
        ('createType="vmfs"\nthis is not a setting\n', "line 2: unrecognised line"),
    ],
)
def test_bad_descriptors(text: str, problem: str) -> None:
    with pytest.raises(VmdkDescriptorError, match=r"^d\.vmdk: ") as info:
        parse_descriptor(text, path="d.vmdk")
    assert problem in str(info.value)


def _sparse_header(desc_offset: int, desc_size: int, capacity: int = 2048) -> bytes:
    head = b"KDMV" + struct.pack("<IIQQQQ", 1, 3, capacity, 128, desc_offset, desc_size)
    return head.ljust(512, b"\0")


def test_embedded_descriptor_from_synthetic_header() -> None:
    text = b'# Disk DescriptorFile\ncreateType="monolithicSparse"\nRW 2048 SPARSE "s.vmdk"\n'
    data = _sparse_header(1, 2) + text.ljust(1024, b"\0") + b"\0" * 512
    raw = embedded_descriptor(data, path="s.vmdk")
    assert raw == text
    assert embedded_descriptor(b"# Disk DescriptorFile\n", path="t.vmdk") is None


def test_sparse_extent_without_descriptor_or_truncated() -> None:
    with pytest.raises(VmdkDescriptorError, match="without an embedded descriptor"):
        embedded_descriptor(_sparse_header(0, 0), path="s001.vmdk")
    with pytest.raises(VmdkDescriptorError, match="outside the file"):
        embedded_descriptor(_sparse_header(1, 20), path="cut.vmdk")


def test_read_descriptor_refuses_extents_and_binary_files(tmp_path: Path) -> None:
    cowd = tmp_path / "web-000001-delta.vmdk"
    cowd.write_bytes(b"COWD" + b"\0" * 2044)
    with pytest.raises(VmdkDescriptorError, match="a delta extent, not a descriptor"):
        read_descriptor(cowd)
    flat = tmp_path / "web-flat.vmdk"
    flat.write_bytes(b"\xeb\x63\x90\x00\x00\x10\x8e\xd0\xbc" + b"\0" * 4087)
    with pytest.raises(VmdkDescriptorError, match="not a VMDK descriptor"):
        read_descriptor(flat)
    latin = tmp_path / "latin.vmdk"
    latin.write_bytes(b"\xeb\x63\x90" + b"\0" * 509)
    with pytest.raises(VmdkDescriptorError, match=r"not a VMDK descriptor \(not text\)"):
        read_descriptor(latin)
    text = tmp_path / "notes.vmdk"
    text.write_text("hello\n")
    with pytest.raises(VmdkDescriptorError, match=r"notes\.vmdk: line 1: unrecognised line"):
        read_descriptor(text)


def test_read_descriptor_honours_declared_encoding(tmp_path: Path) -> None:
    path = tmp_path / "w.vmdk"
    path.write_bytes(
        b'encoding="windows-1252"\ncreateType="monolithicFlat"\nRW 8 FLAT "caf\xe9-flat.vmdk" 0\n'
    )
    assert read_descriptor(path).extents[0].filename == "café-flat.vmdk"


needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@needs_qemu
def test_embedded_descriptor_of_a_real_monolithic_sparse_vmdk(tmp_path: Path) -> None:
    path = tmp_path / "real.vmdk"
    subprocess.run(
        ["qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicSparse", str(path), "10M"],
        check=True,
        capture_output=True,
    )
    data = path.read_bytes()
    header = parse_sparse_header(data)
    assert header is not None
    assert header.capacity == 10 * 2048
    assert header.descriptor_offset >= 1
    assert header.descriptor_size >= 1
    desc = read_descriptor(path)
    assert desc.embedded
    assert desc.create_type == "monolithicSparse"
    assert desc.parent_cid == NO_PARENT
    assert not desc.has_parent
    assert desc.extents == (
        Extent("RW", 20480, "SPARSE", "real.vmdk", None, desc.extents[0].line_number),
    )
    assert desc.capacity_sectors == 20480
    assert desc.adapter_type == "ide"
    raw = embedded_descriptor(data, path=str(path))
    assert raw is not None
    assert parse_descriptor(raw.decode(), path=str(path), embedded=True) == desc


@needs_qemu
def test_embedded_descriptor_of_a_real_delta(tmp_path: Path) -> None:
    base = tmp_path / "base.vmdk"
    delta = tmp_path / "base-000001.vmdk"
    for args in (
        [str(base), "10M"],
        ["-b", base.name, "-F", "vmdk", str(delta)],
    ):
        subprocess.run(["qemu-img", "create", "-f", "vmdk", *args], check=True, capture_output=True)
    parent, child = read_descriptor(base), read_descriptor(delta)
    assert child.parent_filename_hint == "base.vmdk"
    assert child.has_parent
    assert child.parent_cid == parent.cid


def test_descriptor_dataclass_defaults() -> None:
    desc = VmdkDescriptor(path="x", create_type="vmfs", extents=())
    assert desc.capacity_sectors == 0
    assert not desc.has_parent


# The file-name policy -------------------------------------------------------------------


def test_relative_names_resolve_next_to_the_naming_file(tmp_path: Path) -> None:
    assert resolve_reference("web-flat.vmdk", tmp_path) == tmp_path / "web-flat.vmdk"
    assert resolve_reference("sub/web.vmdk", tmp_path) == tmp_path / "sub/web.vmdk"
    assert resolve_reference("./web.vmdk", tmp_path) == tmp_path / "web.vmdk"


@pytest.mark.parametrize("name", ["../web.vmdk", "sub/../../etc/passwd", "a/.."])
def test_dotdot_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeReference, match=r'"\.\." is not allowed'):
        resolve_reference(name, tmp_path)


@pytest.mark.parametrize(
    "name",
    [
        "/vmfs/volumes/datastore1/web/web-flat.vmdk",
        "/vmfs/volumes/5f1e2a3b-c4d5e6f7/web/web-flat.vmdk",
        "C:\\Users\\me\\Documents\\Virtual Machines\\web\\web-flat.vmdk",
        "\\\\filer\\vms\\web-flat.vmdk",
        "/home/me/vmware/web/web-flat.vmdk",
    ],
)
def test_absolute_names_use_the_local_file_of_that_basename(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeReference, match="absolute path on the source host"):
        resolve_reference(name, tmp_path)
    (tmp_path / "web-flat.vmdk").write_bytes(b"")
    assert resolve_reference(name, tmp_path) == tmp_path / "web-flat.vmdk"


def test_absolute_names_never_reach_the_host_file(tmp_path: Path) -> None:
    with pytest.raises(UnsafeReference) as info:
        resolve_reference("/etc/passwd", tmp_path)
    assert isinstance(info.value, DiskImageError)
    assert '"passwd"' in str(info.value)


@pytest.mark.parametrize("name", ["", "/", "/vmfs/volumes/ds/..", "a\0b"])
def test_empty_or_invalid_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeReference):
        resolve_reference(name, tmp_path)
