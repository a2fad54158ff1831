"""`vmshift inspect` on every guest the suite builds: the report matches what was put in, and
the images are never written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.compare import compare_report
from tests.guests.manifest import BuiltGuest

pytestmark = pytest.mark.slow

LINUX = [
    "debian",
    "ubuntu",
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


def _inspect(guest: BuiltGuest) -> dict[str, Any]:
    before = {d: sha256(d) for d in guest.disks}
    proc = vmshift(["inspect", "--json", *guest.disks])
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert {d: sha256(d) for d in guest.disks} == before, "inspection wrote to the image"
    return report


@pytest.mark.parametrize("name", LINUX)
def test_linux_guest_inspection_matches_builder(
    linux_guests: dict[str, BuiltGuest], name: str
) -> None:
    guest = linux_guests[name]
    report = _inspect(guest)
    assert compare_report(report, guest) == []
    assert report["schema"] == "vmshift-inspect/1"
    assert [Path(d["path"]) for d in report["disks"]] == list(guest.disks)


@pytest.mark.parametrize("name", WINDOWS)
def test_windows_guest_inspection_matches_builder(
    windows_guests: dict[str, BuiltGuest], name: str
) -> None:
    guest = windows_guests[name]
    assert compare_report(_inspect(guest), guest) == []


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
    proc = vmshift(["-v", "inspect", "--json", *linux_guests["ubuntu"].disks])
    assert proc.returncode == 0, proc.stderr
    assert "acceleration (" in proc.stderr
    assert ("using KVM" in proc.stderr) or ("using TCG" in proc.stderr)


# Every image format and VMDK layout a VMware, Hyper-V or VirtualBox user may hand us.
FORMATS = [
    ("vpc", "vhd", ["-o", "subformat=fixed"]),
    ("vhdx", "vhdx", []),
    ("vdi", "vdi", []),
    ("vmdk", "vmdk", ["-o", "subformat=monolithicSparse"]),
    ("vmdk", "vmdk", ["-o", "subformat=monolithicFlat"]),
    ("vmdk", "vmdk", ["-o", "subformat=twoGbMaxExtentSparse"]),
    ("vmdk", "vmdk", ["-o", "subformat=twoGbMaxExtentFlat"]),
    ("vmdk", "vmdk", ["-o", "subformat=streamOptimized"]),
    ("vpc", "vhd", ["-o", "subformat=dynamic"]),
]


@pytest.mark.parametrize(
    ("qemu_fmt", "shown", "opts"), FORMATS, ids=[" ".join([f[0], *f[2][1:]]) for f in FORMATS]
)
def test_every_image_format(
    linux_guests: dict[str, BuiltGuest],
    tmp_path: Path,
    qemu_fmt: str,
    shown: str,
    opts: list[str],
) -> None:
    import subprocess

    guest = linux_guests["ubuntu"]
    image = tmp_path / f"guest.{shown}"
    subprocess.run(
        ["qemu-img", "convert", "-O", qemu_fmt, *opts, str(guest.disks[0]), str(image)],
        check=True,
        capture_output=True,
    )
    report = _inspect(BuiltGuest(guest.name, (image,), guest.oses))
    assert [(d["path"], d["format"]) for d in report["disks"]] == [(str(image), shown)]
    assert compare_report(report, guest) == []


@pytest.mark.realguest
def test_real_debian_inspection_matches_builder(real_debian: BuiltGuest) -> None:
    report = _inspect(real_debian)
    assert compare_report(report, real_debian) == []
    (kernel,) = report["operating_systems"][0]["linux"]["kernels"]
    # Built as if on VMware: nothing in the initramfs can drive a virtio disk yet.
    assert kernel["initramfs_virtio_blk"] is False
    assert kernel["initramfs_virtio_net"] is False
