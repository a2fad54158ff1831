"""HiveEditor: the product's writable hive, on hive files built by the test hive builder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guests import hive
from vmshift.errors import InspectionError
from vmshift.guest.registry import ExpandSz, Hive, HiveEditor, Qword
from vmshift.guest.regvalue import RegType


@pytest.fixture
def system(tmp_path: Path) -> Path:
    path = tmp_path / "SYSTEM"
    hive.build_hive(
        path,
        {
            "ControlSet001\\Services\\atapi": {"Start": 0, "Type": 1, "Group": "SCSI miniport"},
            "ControlSet001\\Control": {"Big": Qword(1 << 40)},
        },
    )
    return path


def stored(path: Path, key: str, name: str) -> tuple[int, bytes]:
    h = hive.open_hive(path)
    node = hive.find_key(h, key)
    assert node is not None
    for v in h.node_values(node):
        if h.value_key(v) == name:
            return h.value_value(v)
    raise AssertionError(f"{key}\\{name} missing")


def test_set_values_of_every_type_and_keep_the_others(system: Path) -> None:
    ed = HiveEditor(system)
    key = "controlset001\\SERVICES\\viostor"  # a new key below existing ones, other case
    ed.set_value(key, "Start", 0)
    ed.set_value(key, "ImagePath", ExpandSz("system32\\drivers\\viostor.sys"))
    ed.set_value(key, "Group", "SCSI miniport")
    ed.set_value(key, "DependOnService", ["a", "b"])
    ed.set_value(key, "Blob", b"\x01\x02")
    ed.set_value("ControlSet001\\Services\\atapi", "start", 3)  # replaces "Start"
    ed.commit()

    assert stored(system, "ControlSet001\\Services\\viostor", "ImagePath") == (
        RegType.EXPAND_SZ,
        "system32\\drivers\\viostor.sys\0".encode("utf-16-le"),
    )
    assert stored(system, "ControlSet001\\Services\\viostor", "Start") == (
        RegType.DWORD,
        b"\0\0\0\0",
    )
    h = Hive(system)
    services = h.node("ControlSet001\\Services")
    assert services is not None
    assert sorted(name for name, _ in h.subkeys(services)) == ["atapi", "viostor"]
    atapi = h.node("ControlSet001\\Services\\atapi")
    assert atapi is not None
    assert h.values(atapi) == {"Start": 3, "Type": 1, "Group": "SCSI miniport"}
    assert h.get("ControlSet001\\Services\\viostor", "dependonservice") == ["a", "b"]
    assert h.get("ControlSet001\\Services\\viostor", "Blob") == b"\x01\x02"
    # Readers see an expandable string as text and a QWORD as an int; typed access keeps both.
    assert (
        h.get("ControlSet001\\Services\\viostor", "ImagePath") == "system32\\drivers\\viostor.sys"
    )
    assert h.get_typed("ControlSet001\\Services\\viostor", "ImagePath") == ExpandSz(
        "system32\\drivers\\viostor.sys"
    )
    assert h.get("ControlSet001\\Control", "Big") == 1 << 40


def test_ensure_key_reuses_existing_keys_ignoring_case(system: Path) -> None:
    ed = HiveEditor(system)
    first = ed.ensure_key("CONTROLSET001\\services\\ATAPI")
    assert first == ed.node("ControlSet001\\Services\\atapi")
    new = ed.ensure_key("ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001")
    assert ed.node("controlset001\\control\\criticaldevicedatabase\\PCI#VEN_1AF4&DEV_1001") == new


def test_delete_value_and_key(system: Path) -> None:
    ed = HiveEditor(system)
    ed.delete_value("ControlSet001\\Services\\atapi", "GROUP")
    ed.delete_value("ControlSet001\\Services\\atapi", "absent")  # no error
    ed.delete_key("ControlSet001\\Control")
    ed.delete_key("ControlSet001\\Nothing")  # no error
    with pytest.raises(ValueError):
        ed.delete_key("\\")
    ed.commit()
    h = Hive(system)
    atapi = h.node("ControlSet001\\Services\\atapi")
    assert atapi is not None
    assert h.values(atapi) == {"Start": 0, "Type": 1}
    assert h.node("ControlSet001\\Control") is None


def test_nothing_reaches_the_file_without_commit(system: Path) -> None:
    before = system.read_bytes()
    ed = HiveEditor(system)
    ed.set_value("ControlSet001", "X", 1)
    del ed
    assert system.read_bytes() == before


def test_a_file_that_is_not_a_hive_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "SYSTEM"
    bad.write_bytes(b"not a hive" * 100)
    with pytest.raises(InspectionError, match="SYSTEM"):
        HiveEditor(bad)
