"""The phony Linux guests are what they claim: libguestfs inspection, run on all of them in one
appliance, finds each guest's one root on its own disks with the values its manifest states.

This checks the builders, not vmshift: a failure here means a guest or its ExpectedOS is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import guestfs
import pytest

from tests.guests.disks import new_handle
from tests.guests.linux import build_all
from tests.guests.manifest import BuiltGuest, ExpectedOS

pytestmark = pytest.mark.slow

GUESTS = (
    "debian", "ubuntu", "rhel", "suse", "debian-lvm", "debian-uefi", "debian-twodisks",
    "nokernel", "empty",
)  # fmt: skip
_FORMATS = {".img": "raw", ".qcow2": "qcow2", ".vmdk": "vmdk", ".vhdx": "vhdx", ".vdi": "vdi"}


@dataclass(frozen=True)
class Seen:
    """What inspection reported for one root."""

    facts: dict[str, object]
    mountpoints: dict[str, str]  # mountpoint -> filesystem type
    applications: frozenset[str]


@pytest.fixture(scope="module")
def built() -> dict[str, BuiltGuest]:
    return build_all()


def _disk_of(g: guestfs.GuestFS, device: str) -> str:
    """The whole disk holding a partition, or holding the PV of a logical volume."""
    if not device.startswith("/dev/sd"):
        vg = device.split("/")[2]
        pv_uuids = set(g.vgpvuuids(vg))
        # pvs_full() spells UUIDs without dashes; pvuuid() spells them as vgpvuuids() does.
        device = next(pv for pv in g.pvs() if g.pvuuid(pv) in pv_uuids)
    return str(g.part_to_dev(device))


def _seen(g: guestfs.GuestFS, root: str) -> Seen:
    facts: dict[str, object] = {
        field: getattr(g, f"inspect_get_{field}")(root)
        for field in ("type", "distro", "product_name", "major_version", "minor_version",
                      "arch", "hostname", "package_format", "package_management")
    }  # fmt: skip
    devices: dict[str, str] = g.inspect_get_mountpoints(root)
    mountpoints = {mp: str(g.vfs_type(dev)) for mp, dev in devices.items()}
    # Listing applications reads the package database, which may sit on any of the mounts.
    for mp in sorted(devices, key=len):
        g.mount_ro(devices[mp], mp)
    try:
        apps = frozenset(a["app2_name"] for a in g.inspect_list_applications2(root))
    finally:
        g.umount_all()
    return Seen(facts, mountpoints, apps)


@pytest.fixture(scope="module")
def inspected(built: dict[str, BuiltGuest]) -> Iterator[dict[str, list[Seen]]]:
    """Every guest's roots, found by inspecting all the guests' disks on one handle."""
    g = new_handle()
    try:
        owner: list[str] = []
        # Build order puts "debian" first: its fstab names /dev/sda1.
        for guest in built.values():
            for disk in guest.disks:
                g.add_drive_opts(str(disk), readonly=True, format=_FORMATS[disk.suffix])
                owner.append(guest.name)
        g.launch()
        by_disk = dict(zip(g.list_devices(), owner, strict=True))
        found: dict[str, list[Seen]] = {name: [] for name in built}
        for root in g.inspect_os():
            found[by_disk[_disk_of(g, root)]].append(_seen(g, root))
        yield found
    finally:
        g.close()


def test_every_guest_is_built(built: dict[str, BuiltGuest]) -> None:
    assert set(built) == set(GUESTS)
    for guest in built.values():
        assert guest.disks
        assert all(disk.stat().st_size > 0 for disk in guest.disks)


@pytest.mark.parametrize("name", GUESTS)
def test_inspection_matches_manifest(
    name: str, built: dict[str, BuiltGuest], inspected: dict[str, list[Seen]]
) -> None:
    roots = inspected[name]
    assert len(roots) == len(built[name].oses)
    for expected, seen in zip(built[name].oses, roots, strict=True):
        _check(expected, seen)


def _check(expected: ExpectedOS, seen: Seen) -> None:
    assert seen.facts == {
        "type": expected.type,
        "distro": expected.distro,
        "product_name": expected.product_name,
        "major_version": expected.major_version,
        "minor_version": expected.minor_version,
        "arch": expected.arch,
        "hostname": expected.hostname,
        "package_format": expected.package_format,
        "package_management": expected.package_manager,
    }
    assert seen.mountpoints == expected.mountpoints
    assert set(expected.applications) <= seen.applications
