"""vmshift's own inspection of Debian- and RHEL-family guests (guest/linux_inspection.py)
answers what libguestfs's inspect_os answers, on every such guest the suite builds.

In one appliance per guest, the whole inspection runs twice: through linux_inspection, then
through inspect_os and the inspect_get_* calls, and the two OperatingSystem records must be
equal field by field (mountpoints, the filesystems and their order of discovery in fstab,
product name and version from debian_version or os-release, the package list from dpkg's
status or the rpm database, the kernels). The guests cover a plain root, LVM with a separate
/boot and swap on an LV (real and phony), an ESP, a second disk holding /var, Ubuntu's
os-release, a Debian 11 without a kernel, and RHEL 9 (LVM, xfs, an sqlite rpm database). The
phony SUSE guest shows the other side: linux_inspection declines it and says why.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest

from tests.guests.manifest import BuiltGuest
from vmshift.blockio.imageinfo import probe_image
from vmshift.guest import inspect, linux_inspection
from vmshift.guest.probes import Probes
from vmshift.guest.session import open_session
from vmshift.model.inspection import OperatingSystem

pytestmark = pytest.mark.slow

PHONY = ["debian", "debian-lvm", "debian-uefi", "debian-twodisks", "ubuntu", "nokernel", "rhel"]


def _both_ways(guest: BuiltGuest) -> tuple[OperatingSystem | None, list[OperatingSystem]]:
    """(linux_inspection's answer or None, inspect_os's answers), from one appliance."""
    with open_session([probe_image(d) for d in guest.disks], readonly=True) as session:
        probes: Probes = {}
        facts = linux_inspection.inspect_linux(session.g, probes)
        own = inspect._inspect_root(session, facts, probes) if facts is not None else None
        roots = sorted(session.g.inspect_os())
        theirs = [
            inspect._inspect_root(session, inspect._libguestfs_facts(session.g, root), {})
            for root in roots
        ]
    return own, theirs


def _assert_same(own: OperatingSystem | None, theirs: list[OperatingSystem]) -> None:
    assert own is not None, "linux_inspection declined the guest"
    assert len(theirs) == 1
    for f in dataclasses.fields(own):
        assert getattr(own, f.name) == getattr(theirs[0], f.name), f.name
    assert own.applications, "no packages listed"


@pytest.mark.parametrize("name", PHONY)
def test_phony_guest_inspects_as_libguestfs_does(
    name: str, linux_guests: dict[str, BuiltGuest]
) -> None:
    _assert_same(*_both_ways(linux_guests[name]))


@pytest.mark.realguest
def test_real_debian_inspects_as_libguestfs_does(real_debian: BuiltGuest) -> None:
    own, theirs = _both_ways(real_debian)
    _assert_same(own, theirs)
    assert own is not None and own.product_name.startswith("12.")


@pytest.mark.realguest
def test_real_debian_lvm_inspects_as_libguestfs_does() -> None:
    from tests.guests.debian_real import build_real_debian_lvm

    own, theirs = _both_ways(build_real_debian_lvm())
    _assert_same(own, theirs)
    assert own is not None and own.root.startswith("/dev/vg")
    assert any(fs.type == "swap" for fs in own.filesystems), "the swap LV from fstab"


def test_suse_is_left_to_inspect_os(
    linux_guests: dict[str, BuiltGuest], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="vmshift.guest.linux_inspection")
    own, theirs = _both_ways(linux_guests["suse"])
    assert own is None
    assert [os.distro for os in theirs] == ["sles"]
    assert "distro sles: asking libguestfs's inspect_os" in caplog.text
