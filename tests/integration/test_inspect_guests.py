"""`vmshift inspect` on every guest the suite builds: the report matches what was put in, and
the images are never written.

The Linux guests are inspected in one run of `vmshift inspect` of all their disks, and the
Windows guests in another (one appliance each, not one per guest: each launch is most of a
minute under TCG); every operating system found is matched with its guest by hostname, and
each guest's must be found exactly once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.compare import compare_os, compare_report
from tests.guests.manifest import BuiltGuest
from vmshift.blockio.imageinfo import probe_image
from vmshift.guest.accel import detect_accelerator

pytestmark = pytest.mark.slow

LINUX = [  # and ubuntu, in test_verbose_reports_the_accelerator
    "debian",
    "rhel",
    "suse",
    "debian-lvm",
    "debian-uefi",
    "debian-twodisks",
    "nokernel",
]
WINDOWS = [
    "win-xp",
    "win7",
    "win2008r2",
    "win10",
    "win2022",
    "win11",
    "win10-uefi",
    "win10-hibernated",
]


def _inspect(guest: BuiltGuest, *options: str) -> dict[str, Any]:
    """The --json report (with what vmshift wrote to stderr as "stderr"); the images unwritten."""
    before = {d: sha256(d) for d in guest.disks}
    proc = vmshift([*options, "inspect", "--json", *guest.disks])
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert {d: sha256(d) for d in guest.disks} == before, "inspection wrote to the image"
    return {**report, "stderr": proc.stderr}


def _inspect_together(guests: list[BuiltGuest]) -> dict[str, Any]:
    """One `vmshift inspect --json` of every disk of these guests (one appliance)."""
    together = BuiltGuest("together", tuple(d for g in guests for d in g.disks), ())
    report = _inspect(together)
    assert report["schema"] == "vmshift-inspect/1"
    assert [Path(d["path"]) for d in report["disks"]] == list(together.disks)
    return report


@pytest.fixture(scope="module")
def linux_report(linux_guests: dict[str, BuiltGuest]) -> dict[str, Any]:
    return _inspect_together([linux_guests[name] for name in LINUX])


@pytest.fixture(scope="module")
def windows_report(windows_guests: dict[str, BuiltGuest]) -> dict[str, Any]:
    return _inspect_together([windows_guests[name] for name in WINDOWS])


def _guest_problems(report: dict[str, Any], guest: BuiltGuest) -> list[str]:
    """The guest's own operating systems in a report of several guests, against its builder's."""
    (want,) = guest.oses
    found = [o for o in report["operating_systems"] if o["hostname"] == want.hostname]
    if len(found) != 1:
        return [f"{guest.name}: {len(found)} operating systems named {want.hostname!r} found"]
    return [f"{guest.name} {found[0]['root']}: {line}" for line in compare_os(found[0], want)]


def test_every_os_found_belongs_to_one_guest(
    linux_report: dict[str, Any], windows_report: dict[str, Any]
) -> None:
    hostnames = sorted(o["hostname"] for r in (linux_report, windows_report)
                       for o in r["operating_systems"])  # fmt: skip
    assert len(hostnames) == len(LINUX) + len(WINDOWS)
    assert len(set(hostnames)) == len(hostnames)


@pytest.mark.parametrize("name", LINUX)
def test_linux_guest_inspection_matches_builder(
    linux_guests: dict[str, BuiltGuest], linux_report: dict[str, Any], name: str
) -> None:
    assert _guest_problems(linux_report, linux_guests[name]) == []


@pytest.mark.parametrize("name", WINDOWS)
def test_windows_guest_inspection_matches_builder(
    windows_guests: dict[str, BuiltGuest], windows_report: dict[str, Any], name: str
) -> None:
    assert _guest_problems(windows_report, windows_guests[name]) == []


def test_human_summary_names_the_os(linux_guests: dict[str, BuiltGuest]) -> None:
    guest = linux_guests["rhel"]
    proc = vmshift(["inspect", *guest.disks])
    assert proc.returncode == 0, proc.stderr
    want = guest.oses[0]
    for text in (want.product_name, want.hostname, "Kernels", "Network configuration"):
        assert text in proc.stdout


def test_guest_without_os_is_a_clean_error(linux_guests: dict[str, BuiltGuest]) -> None:
    guest = linux_guests["empty"]
    before = sha256(guest.disks[0])
    proc = vmshift(["inspect", *guest.disks])
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"vmshift: error: {guest.disks[0]}: no operating system found")
    assert "Traceback" not in proc.stderr
    assert sha256(guest.disks[0]) == before


def test_verbose_reports_the_accelerator(linux_guests: dict[str, BuiltGuest]) -> None:
    """-v says which accelerator the appliance runs on, and the report is the one without -v
    (the ubuntu guest's inspection against its builder: one appliance for both)."""
    guest = linux_guests["ubuntu"]
    report = _inspect(guest, "-v")
    assert compare_report(report, guest) == []
    want = detect_accelerator().name.upper()
    assert f"using {want} acceleration (" in report["stderr"]


# Every image format and VMDK layout a VMware, Hyper-V or VirtualBox user may hand us. Those
# marked whole are inspected through the appliance: each one's layout takes a path of its own
# in vmshift or qemu (a fixed VHD's footer, which qemu's probe calls raw; a descriptor naming
# its extent file; compressed stream clusters; VHDX's log). The others are containers of the
# same kind (sparse grains or blocks): vmshift names their format, and qemu reads from them
# the bytes of the guest's disk, which is what the appliance would see (one launch each saved).
FORMATS = [
    ("vpc", "vhd", ["-o", "subformat=fixed"], "whole"),
    ("vhdx", "vhdx", [], "whole"),
    ("vdi", "vdi", [], "probe"),
    ("vmdk", "vmdk", ["-o", "subformat=monolithicSparse"], "probe"),
    ("vmdk", "vmdk", ["-o", "subformat=monolithicFlat"], "whole"),
    ("vmdk", "vmdk", ["-o", "subformat=twoGbMaxExtentSparse"], "probe"),
    ("vmdk", "vmdk", ["-o", "subformat=twoGbMaxExtentFlat"], "probe"),
    ("vmdk", "vmdk", ["-o", "subformat=streamOptimized"], "whole"),
    ("vpc", "vhd", ["-o", "subformat=dynamic"], "probe"),
]


@pytest.mark.parametrize("case", FORMATS, ids=[" ".join([f[0], *f[2][1:]]) for f in FORMATS])
def test_every_image_format(
    linux_guests: dict[str, BuiltGuest], tmp_path: Path, case: tuple[str, str, list[str], str]
) -> None:
    qemu_fmt, shown, opts, how = case
    guest = linux_guests["ubuntu"]
    image = tmp_path / f"guest.{shown}"
    subprocess.run(
        ["qemu-img", "convert", "-O", qemu_fmt, *opts, str(guest.disks[0]), str(image)],
        check=True,
        capture_output=True,
    )
    if how == "whole":
        report = _inspect(BuiltGuest(guest.name, (image,), guest.oses))
        assert [(d["path"], d["format"]) for d in report["disks"]] == [(str(image), shown)]
        assert compare_report(report, guest) == []
        return
    info = probe_image(image)
    assert info.display_format == shown
    source = probe_image(Path(guest.disks[0]))
    # A VHD holds whole CHS cylinders: its disk may end up to a cylinder later, in zeros.
    assert source.virtual_size <= info.virtual_size < source.virtual_size + 16 * 255 * 512
    same = subprocess.run(
        ["qemu-img", "compare", "-f", source.format, "-F", info.format, guest.disks[0], image],
        check=False,
        capture_output=True,
        text=True,
    )
    assert same.returncode == 0, same.stdout + same.stderr


@pytest.mark.realguest
def test_real_debian_inspection_matches_builder(real_debian: BuiltGuest) -> None:
    report = _inspect(real_debian)
    assert compare_report(report, real_debian) == []
    (kernel,) = report["operating_systems"][0]["linux"]["kernels"]
    # Built as if on VMware: nothing in the initramfs can drive a virtio disk yet.
    assert kernel["initramfs_virtio_blk"] is False
    assert kernel["initramfs_virtio_net"] is False
