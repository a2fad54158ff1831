"""The phony Windows guests pass for real ones with libguestfs inspection.

All guests go read-only onto one handle: one launch, and inspect_os finds every root. That also
proves the guests' disk IDs and partition GUIDs are distinct, or drive mappings would cross.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.guests import hive
from tests.guests.manifest import BuiltGuest
from tests.guests.windows import GUESTS, service_file

pytestmark = pytest.mark.slow

guestfs = pytest.importorskip("guestfs")

SPECS = {g.name: g for g in GUESTS}


@dataclass(frozen=True)
class Seen:
    """What libguestfs reported for one root, plus the guest's hives copied out."""

    root: str
    facts: dict[str, object]
    applications: list[dict[str, object]]
    files: dict[str, bool]  # service name -> its ImagePath file exists
    hiberfil: bytes | None
    system_hive: Path
    software_hive: Path


def _inspect_all(built: dict[str, BuiltGuest], hives_dir: Path) -> Iterator[tuple[str, Seen]]:
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        names = []
        for name, guest in built.items():
            for disk in guest.disks:
                g.add_drive_opts(str(disk), format=SPECS[name].disk_format, readonly=True)
                names.append(name)
        g.launch()
        owner = dict(zip(g.list_devices(), names, strict=True))
        for root in g.inspect_os():
            name = owner[g.part_to_dev(root)]
            facts = {
                f: getattr(g, f"inspect_get_{f}")(root)
                for f in (
                    "type", "distro", "product_name", "product_variant", "major_version",
                    "minor_version", "arch", "hostname", "osinfo", "package_format",
                    "windows_systemroot", "windows_current_control_set", "windows_system_hive",
                    "windows_software_hive", "drive_mappings", "mountpoints",
                )
            }  # fmt: skip
            g.mount_ro(root, "/")
            apps = g.inspect_list_applications2(root)
            spec = SPECS[name]
            files = {}
            for s in spec.services:
                target = service_file(spec, s.image_path)
                if target is not None:
                    files[s.name] = g.is_file(g.case_sensitive_path(target))
            hiberfil = g.pread("/hiberfil.sys", 4, 0) if g.is_file("/hiberfil.sys") else None
            out = hives_dir / name
            out.mkdir()
            g.download(facts["windows_system_hive"], str(out / "SYSTEM"))
            g.download(facts["windows_software_hive"], str(out / "SOFTWARE"))
            g.umount_all()
            yield name, Seen(root, facts, apps, files, hiberfil, out / "SYSTEM", out / "SOFTWARE")
    finally:
        g.close()


@pytest.fixture(scope="module")
def seen(
    windows_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[Seen]]:
    found: dict[str, list[Seen]] = {}
    for name, s in _inspect_all(windows_guests, tmp_path_factory.mktemp("hives")):
        found.setdefault(name, []).append(s)
    return found


def test_every_guest_has_exactly_one_root(seen: dict[str, list[Seen]]) -> None:
    assert {name: len(roots) for name, roots in seen.items()} == dict.fromkeys(SPECS, 1)


@pytest.mark.parametrize("name", list(SPECS))
def test_inspection_reports_what_was_built(
    windows_guests: dict[str, BuiltGuest], seen: dict[str, list[Seen]], name: str
) -> None:
    spec, want, got = SPECS[name], windows_guests[name].oses[0], seen[name][0]
    assert want.windows is not None
    facts = got.facts
    assert facts["type"] == want.type == "windows"
    assert facts["distro"] == want.distro
    assert facts["product_name"] == want.product_name
    assert (facts["major_version"], facts["minor_version"]) == spec.version
    assert facts["arch"] == want.arch
    assert facts["hostname"] == want.hostname
    assert facts["package_format"] == want.package_format
    assert facts["windows_systemroot"] == want.windows.systemroot
    assert facts["windows_current_control_set"] == want.windows.current_control_set
    assert facts["product_variant"] == (spec.installation_type or "unknown")
    assert facts["osinfo"] == spec.osinfo
    assert facts["mountpoints"] == {"/": got.root}
    assert got.root.endswith(str(spec.root_partition))
    assert facts["drive_mappings"] == {"C": got.root}
    listed = {str(a["app2_display_name"]) for a in got.applications}
    assert set(want.applications) <= listed


@pytest.mark.parametrize("name", list(SPECS))
def test_registry_and_files_inside_the_image(
    windows_guests: dict[str, BuiltGuest], seen: dict[str, list[Seen]], name: str
) -> None:
    spec, got = SPECS[name], seen[name][0]
    want = windows_guests[name].oses[0].windows
    assert want is not None
    h = hive.open_hive(got.system_hive)
    services = hive.find_key(h, f"{want.current_control_set}\\Services")
    assert services is not None
    boot = {
        key
        for key, node in hive.subkeys(h, services).items()
        if hive.get_value(h, node, "Start") == 0
    }
    assert boot == set(want.boot_drivers)
    power = hive.find_key(h, f"{want.current_control_set}\\Control\\Session Manager\\Power")
    hiberboot = hive.get_value(h, power, "HiberbootEnabled") if power else None
    assert (hiberboot == 1) == want.fast_startup
    assert (got.hiberfil is not None and got.hiberfil.upper() == b"HIBR") == want.hibernated
    missing = {svc for svc, present in got.files.items() if not present}
    assert missing == set(spec.missing_driver_files)
    assert set(spec.missing_driver_files) <= set(want.boot_drivers)


def test_traps_are_set(seen: dict[str, list[Seen]]) -> None:
    assert any(s[0].facts["windows_current_control_set"] != "ControlSet001" for s in seen.values())
    win11 = hive.open_hive(seen["win11"][0].software_hive)
    node = hive.find_key(win11, "Microsoft\\Windows NT\\CurrentVersion")
    assert node is not None
    assert hive.get_value(win11, node, "CurrentVersion") == "6.3"
    assert hive.get_value(win11, node, "CurrentBuildNumber") == "22631"


def test_hibernated_and_fast_startup_guests_exist() -> None:
    assert any(g.hibernated for g in GUESTS)
    assert any(g.fast_startup and not g.hibernated for g in GUESTS)
