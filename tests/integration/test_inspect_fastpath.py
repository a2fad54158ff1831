"""vmshift's own inspection of Debian- and RHEL-family guests (guest/linux_inspection.py) and
of Windows guests (guest/windows_inspection.py) answers what libguestfs's inspect_os answers,
on every Linux guest of those families the suite builds and on Windows guests of each kind.

In one appliance per guest, the whole inspection runs twice: through vmshift's own, then
through inspect_os and the inspect_get_* calls, and the two OperatingSystem records must be
equal field by field (mountpoints, the filesystems and their order of discovery in fstab,
product name and version from debian_version or os-release, the package list from dpkg's
status or the rpm database, the kernels). The guests cover a plain root, LVM with a separate
/boot and swap on an LV (real and phony), an ESP, a second disk holding /var, Ubuntu's
os-release, a Debian 11 without a kernel, and RHEL 9 (LVM, xfs, an sqlite rpm database). The
phony SUSE guest shows the other side: linux_inspection declines it and says why. The
Windows guests cover XP (i386, its version in CurrentVersion, no InstallationType, MBR), Server
2022 (BIOS, MBR), Windows 10 on UEFI (GPT: ESP, Microsoft Reserved partition, a recovery volume)
and a hibernated Windows 10; the boot drivers, services, hibernation and applications read from
the hive copies must match too.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from tests.guests.manifest import BuiltGuest
from vmshift.blockio.imageinfo import probe_image
from vmshift.guest import inspect, linux_inspection, windows_inspection
from vmshift.guest.probes import Probes
from vmshift.guest.session import open_session
from vmshift.model.inspection import OperatingSystem

pytestmark = pytest.mark.slow

PHONY = ["debian", "debian-lvm", "debian-uefi", "debian-twodisks", "ubuntu", "nokernel", "rhel"]
WINDOWS = ["win-xp", "win2022", "win10-uefi", "win10-hibernated"]


def _both_ways(
    guest: BuiltGuest, tmp_path: Path
) -> tuple[OperatingSystem | None, list[OperatingSystem]]:
    """(vmshift's own answer or None, inspect_os's answers), from one appliance; each side
    downloads its own copies of any hives."""
    own_hives, their_hives = tmp_path / "own", tmp_path / "theirs"
    own_hives.mkdir()
    their_hives.mkdir()
    with open_session([probe_image(d) for d in guest.disks], readonly=True) as session:
        g, probes = session.g, Probes()
        facts = linux_inspection.inspect_linux(g, probes) or windows_inspection.inspect_windows(
            g, probes, own_hives
        )
        own = None if facts is None else inspect._inspect_root(session, facts, probes, own_hives)
        roots = sorted(g.inspect_os())
        theirs = [
            inspect._inspect_root(session, inspect._libguestfs_facts(g, root), {}, their_hives)
            for root in roots
        ]
    return own, theirs


def _assert_same(own: OperatingSystem | None, theirs: list[OperatingSystem]) -> None:
    assert own is not None, "vmshift's own inspection declined the guest"
    assert len(theirs) == 1
    for f in dataclasses.fields(own):
        assert getattr(own, f.name) == getattr(theirs[0], f.name), f.name
    if own.type == "linux":
        assert own.applications, "no packages listed"


@pytest.mark.parametrize("name", PHONY)
def test_phony_guest_inspects_as_libguestfs_does(
    name: str, linux_guests: dict[str, BuiltGuest], tmp_path: Path
) -> None:
    _assert_same(*_both_ways(linux_guests[name], tmp_path))


@pytest.mark.parametrize("name", WINDOWS)
def test_windows_guest_inspects_as_libguestfs_does(
    name: str, windows_guests: dict[str, BuiltGuest], tmp_path: Path
) -> None:
    guest = windows_guests[name]
    own, theirs = _both_ways(guest, tmp_path)
    _assert_same(own, theirs)
    assert own is not None and own.windows is not None and own.windows.boot_drivers
    # The builder's applications (some guests have none), by display name.
    assert sorted(a.name for a in own.applications) == sorted(guest.oses[0].applications)


@pytest.mark.realguest
def test_real_debian_inspects_as_libguestfs_does(real_debian: BuiltGuest, tmp_path: Path) -> None:
    own, theirs = _both_ways(real_debian, tmp_path)
    _assert_same(own, theirs)
    assert own is not None and own.product_name.startswith("12.")


@pytest.mark.realguest
def test_real_debian_lvm_inspects_as_libguestfs_does(tmp_path: Path) -> None:
    from tests.guests.debian_real import build_real_debian_lvm

    own, theirs = _both_ways(build_real_debian_lvm(), tmp_path)
    _assert_same(own, theirs)
    assert own is not None and own.root.startswith("/dev/vg")
    assert any(fs.type == "swap" for fs in own.filesystems), "the swap LV from fstab"


def test_suse_is_left_to_inspect_os(
    linux_guests: dict[str, BuiltGuest], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="vmshift.guest.linux_inspection")
    own, theirs = _both_ways(linux_guests["suse"], tmp_path)
    assert own is None
    assert [os.distro for os in theirs] == ["sles"]
    assert "Linux inspection declined: /dev/sda1: distro sles" in caplog.text
