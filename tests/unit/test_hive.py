"""The hive helpers: an empty hive made from nothing, filled and read back through hivex."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("hivex")

from tests.guests import hive
from tests.guests.hive import ExpandSz, Qword, RawValue, RegType, RegValue

EVERY_TYPE: dict[str, RegValue] = {
    "Sz": "C:\\Windows",
    "Unicode": "Grüße, 東京",
    "EmptySz": "",
    "Dword": 0xDEADBEEF,
    "Zero": 0,
    "Multi": ["System32\\drivers", "inf"],
    "EmptyMulti": [],
    "Binary": b"\x00\x01\xfe\xff" * 3,
    "Expand": ExpandSz("%SystemRoot%\\inf"),
    "Qword": Qword(2**40 + 7),
    "BigEndian": RawValue(RegType.DWORD_BIG_ENDIAN, b"\x00\x00\x00\x01"),
    "": "default value",
}


def test_empty_hive_base_block() -> None:
    data = hive.empty_hive()
    assert len(data) == hive.BASE_BLOCK_SIZE + hive.HBIN_SIZE
    magic, seq1, seq2, _, major, minor, kind, fmt, root, bins = struct.unpack_from(
        "<4sIIqIIIIII", data
    )
    assert (magic, seq1 == seq2, major, minor, kind, fmt) == (b"regf", True, 1, 3, 0, 1)
    assert bins == hive.HBIN_SIZE
    (checksum,) = struct.unpack_from("<I", data, hive.CHECKSUM_OFFSET)
    xor = 0
    for (word,) in struct.iter_unpack("<I", data[:0x1FC]):
        xor ^= word
    assert checksum == xor == hive.base_block_checksum(data)
    assert data[0x1000:0x1004] == b"hbin"
    (cell_size,) = struct.unpack_from("<i", data, 0x1000 + root)
    assert cell_size < 0  # allocated
    assert data[0x1000 + root + 4 : 0x1000 + root + 6] == b"nk"


def test_empty_hive_opens_in_hivex(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(hive.empty_hive("CMI-CreateHive"))
    h = hive.open_hive(path)
    assert h.node_name(h.root()) == "CMI-CreateHive"
    assert h.node_children(h.root()) == []
    assert h.node_values(h.root()) == []


def test_hivex_rejects_a_bad_checksum(tmp_path: Path) -> None:
    data = bytearray(hive.empty_hive())
    data[0x30] ^= 0xFF  # inside the checksummed range
    path = tmp_path / "bad"
    path.write_bytes(bytes(data))
    with pytest.raises((RuntimeError, OSError)):
        hive.open_hive(path)


def test_every_value_type_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "SOFTWARE"
    hive.build_hive(path, {"Microsoft\\Test": EVERY_TYPE})
    h = hive.open_hive(path)
    node = hive.find_key(h, "Microsoft\\Test")
    assert node is not None
    got = hive.get_values(h, node)
    assert got == {k: list(v) if isinstance(v, tuple) else v for k, v in EVERY_TYPE.items()}
    stored = {h.value_key(v): h.value_value(v) for v in h.node_values(node)}
    assert stored["Sz"] == (RegType.SZ, "C:\\Windows\0".encode("utf-16-le"))
    assert stored["Dword"] == (RegType.DWORD, b"\xef\xbe\xad\xde")
    assert stored["Multi"] == (RegType.MULTI_SZ, "System32\\drivers\0inf\0\0".encode("utf-16-le"))
    assert stored["Binary"][0] == RegType.BINARY
    assert stored["Expand"] == (RegType.EXPAND_SZ, "%SystemRoot%\\inf\0".encode("utf-16-le"))
    assert stored["Qword"] == (RegType.QWORD, struct.pack("<Q", 2**40 + 7))
    assert stored["BigEndian"][0] == RegType.DWORD_BIG_ENDIAN


def test_encode_decode_are_inverse() -> None:
    for value in EVERY_TYPE.values():
        decoded = hive.decode_value(*hive.encode_value(value))
        assert decoded == (list(value) if isinstance(value, tuple) else value)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (True, TypeError),
        (-1, ValueError),
        (2**32, ValueError),
        (Qword(2**64), ValueError),
        (["a", ""], ValueError),
        (1.5, TypeError),
    ],
)
def test_encode_refuses(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        hive.encode_value(value)  # type: ignore[arg-type]


def test_decode_tolerates_what_real_hives_hold() -> None:
    assert hive.decode_value(RegType.DWORD, b"\x01\x00") == RawValue(RegType.DWORD, b"\x01\x00")
    assert hive.decode_value(RegType.SZ, b"a\x00b\x00\x00") == "ab"  # odd length
    assert hive.decode_value(RegType.SZ, "ab\0junk".encode("utf-16-le")) == "ab"
    assert hive.decode_value(RegType.MULTI_SZ, "a\0b\0".encode("utf-16-le")) == ["a", "b"]
    assert hive.decode_value(99, b"x") == RawValue(99, b"x")


def test_keys_are_found_ignoring_case_and_values_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "SYSTEM"
    with hive.editing(path, create=True) as h:
        first = hive.set_key(h, "ControlSet001\\Services\\atapi", {"Start": 0})
        again = hive.set_key(h, "\\controlset001\\SERVICES\\ATAPI\\", {"Type": 1})
        assert first == again
    h = hive.open_hive(path)
    node = hive.find_key(h, "CONTROLSET001\\services\\Atapi")
    assert node is not None
    assert hive.get_values(h, node) == {"Start": 0, "Type": 1}
    assert hive.get_value(h, node, "start") == 0
    assert hive.get_value(h, node, "Missing") is None
    assert hive.find_key(h, "ControlSet002") is None
    assert [p for p, _ in hive.read_tree(h)] == [
        "ControlSet001",
        "ControlSet001\\Services",
        "ControlSet001\\Services\\atapi",
    ]


def test_empty_path_components_are_refused() -> None:
    assert hive.split_key_path("\\") == []
    with pytest.raises(ValueError):
        hive.split_key_path("A\\\\B")


def test_hive_grows_past_its_first_bin(tmp_path: Path) -> None:
    path = tmp_path / "big"
    tree = {f"Uninstall\\App{i:04d}": {"DisplayName": f"Application {i}" * 4} for i in range(400)}
    hive.build_hive(path, tree)
    assert path.stat().st_size > 64 * 1024
    h = hive.open_hive(path)
    uninstall = hive.find_key(h, "Uninstall")
    assert uninstall is not None
    assert len(hive.subkeys(h, uninstall)) == 400


@pytest.mark.skipif(shutil.which("hivexml") is None, reason="hivexml (libhivex-bin) missing")
def test_hivexml_accepts_the_hive(tmp_path: Path) -> None:
    path = tmp_path / "SYSTEM"
    hive.build_hive(path, {"Select": {"Current": 1}, "Test": EVERY_TYPE})
    xml = subprocess.run(["hivexml", str(path)], check=True, capture_output=True, text=True)
    assert '<value type="int32" key="Current" value="1">' in xml.stdout
