"""The kernel, initramfs and bootloader steps on real and phony guests, each on an overlay.

Appliance launches are the cost here (15-30 s each under TCG, plus update-initramfs and
update-grub on the real guest), so each module-scoped fixture does all its work in one launch
and the tests only look at what it collected.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from tests.guests.manifest import BuiltGuest
from tests.guests.stub_tools import STUB_LOG, calls_of
from vmshift.blockio.imageinfo import probe_image
from vmshift.convert.linux import bootloader, initramfs, kernel
from vmshift.convert.linux.context import LinuxGuest, family_of
from vmshift.formats.initramfs import list_initramfs
from vmshift.guest import linux_facts
from vmshift.guest.inspect import inspect_session, mount_os
from vmshift.guest.session import open_session
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import DiskEndpoint, Firmware, SourceDisk, SourceVM

pytestmark = pytest.mark.slow


def _overlay(image: Path, directory: Path) -> Path:
    info = probe_image(image)
    overlay = directory / f"{image.name}.overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.resolve()), "-F",
         info.format, str(overlay)],
        check=True,
    )  # fmt: skip
    return overlay


def _vm(name: str, overlay: Path) -> SourceVM:
    endpoint = DiskEndpoint(str(overlay), "qcow2", probe_image(overlay).virtual_size)
    return SourceVM(
        name=name, memory=1 << 30, vcpus=1, topology=None, firmware=Firmware.UNKNOWN,
        disks=(SourceDisk(endpoint, name="sda"),),
    )  # fmt: skip


def _guest(g: Any, os_: OperatingSystem, vm: SourceVM) -> LinuxGuest:
    return LinuxGuest(g=g, os=os_, vm=vm, family=family_of(os_))


def _modules_in(g: Any, path: str) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "initrd"
        g.download(path, str(local))
        names = list_initramfs(local.read_bytes())
    return {n for n in map(initramfs.module_name, names) if n}


def _mtime(g: Any, path: str) -> tuple[int, int]:
    st = g.statns(path)
    return st["st_mtime_sec"], st["st_mtime_nsec"]


# --- the real Debian 12 guest ------------------------------------------------------------------


@dataclass
class DebianRun:
    kernel_version: str
    chosen: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    modules_before: str = ""
    modules_after: str = ""
    image: str = ""
    image_modules: set[str] = field(default_factory=set)
    backup_exists: bool = False
    backup_modules: set[str] = field(default_factory=set)
    grub_before: tuple[tuple[int, int], str] = ((0, 0), "")
    grub_after: tuple[tuple[int, int], str] = ((0, 0), "")
    image_mtime_after_rebuild: tuple[int, int] = (0, 0)
    image_mtime_after_second: tuple[int, int] = (0, 0)
    changes: list[tuple[str, str, str | None]] = field(default_factory=list)
    second_changes: list[tuple[str, str, str | None]] = field(default_factory=list)


@pytest.fixture(scope="module")
def debian_run(real_debian: BuiltGuest, tmp_path_factory: pytest.TempPathFactory) -> DebianRun:
    (expected,) = real_debian.oses
    assert expected.linux is not None
    run = DebianRun(kernel_version=expected.linux.kernels[0].version)
    overlay = _overlay(real_debian.disks[0], tmp_path_factory.mktemp("debian-boot"))
    vm = _vm("debian", overlay)
    started = time.monotonic()
    with open_session([probe_image(overlay)], readonly=False) as session:
        g = session.g
        run.seconds["launch"] = time.monotonic() - started
        (os_,) = inspect_session(session)
        run.seconds["inspect"] = time.monotonic() - started - run.seconds["launch"]
        g.umount_all()
        mount_os(g, os_.root, readonly=False)
        guest = _guest(g, os_, vm)
        run.modules_before = g.cat("/etc/initramfs-tools/modules")
        run.grub_before = (_mtime(g, "/boot/grub/grub.cfg"), g.cat("/boot/grub/grub.cfg"))

        chosen = kernel.choose_kernel(guest)
        run.chosen = chosen.version if chosen else None
        assert chosen is not None and chosen.initramfs is not None
        run.image = chosen.initramfs
        t = time.monotonic()
        initramfs.rebuild(guest)
        run.seconds["rebuild"] = time.monotonic() - t
        t = time.monotonic()
        bootloader.update(guest)
        run.seconds["update"] = time.monotonic() - t
        run.changes = [(c.step, c.what, c.path) for c in guest.changes]

        t = time.monotonic()
        run.modules_after = g.cat("/etc/initramfs-tools/modules")
        run.image_modules = _modules_in(g, run.image)
        run.image_mtime_after_rebuild = _mtime(g, run.image)
        run.backup_exists = g.is_file(run.image + ".vmshift-orig")
        if run.backup_exists:
            run.backup_modules = _modules_in(g, run.image + ".vmshift-orig")
        run.grub_after = (_mtime(g, "/boot/grub/grub.cfg"), g.cat("/boot/grub/grub.cfg"))
        run.seconds["read_back"] = time.monotonic() - t

        # A second conversion of the converted guest: inspection now sees virtio, so no rebuild.
        fresh = linux_facts.list_kernels(g)
        assert os_.linux is not None
        again = _guest(g, replace(os_, linux=replace(os_.linux, kernels=fresh)), guest.vm)
        kernel.choose_kernel(again)
        t = time.monotonic()
        initramfs.rebuild(again)
        run.seconds["second_rebuild"] = time.monotonic() - t
        run.second_changes = [(c.step, c.what, c.path) for c in again.changes]
        run.image_mtime_after_second = _mtime(g, run.image)
        g.umount_all()
        t = time.monotonic()
    run.seconds["close"] = time.monotonic() - t
    run.seconds["total"] = time.monotonic() - started
    return run


def realguest(test: Callable[..., None]) -> Callable[..., None]:
    skip = pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("debootstrap"),
        reason="building the guest needs root and debootstrap",
    )
    marked: Callable[..., None] = pytest.mark.realguest(skip(test))
    return marked


@realguest
def test_debian_timings(debian_run: DebianRun) -> None:
    seconds = {k: round(v, 1) for k, v in debian_run.seconds.items()}
    print(f"\nreal Debian kernel/initramfs/bootloader steps, seconds: {seconds}")
    # The skip is the point: reading the image back is cheap, rebuilding it is not.
    assert debian_run.seconds["second_rebuild"] < debian_run.seconds["rebuild"] / 3


@realguest
def test_debian_newest_kernel_is_chosen(debian_run: DebianRun) -> None:
    assert debian_run.chosen == debian_run.kernel_version
    assert ("kernel", f"will boot kernel {debian_run.kernel_version} (the only kernel)",
            f"/boot/vmlinuz-{debian_run.kernel_version}") in debian_run.changes  # fmt: skip


@realguest
def test_debian_modules_file_gained_the_virtio_drivers(debian_run: DebianRun) -> None:
    before = debian_run.modules_before
    after = debian_run.modules_after
    assert after.startswith(before), "existing lines and comments must stay"
    added = [line for line in after[len(before) :].splitlines() if not line.startswith("#")]
    assert added == ["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"]
    assert "vmw_pvscsi" in after


@realguest
def test_debian_initramfs_now_carries_virtio_and_the_old_one_is_kept(
    debian_run: DebianRun,
) -> None:
    assert {"virtio_blk", "virtio_pci", "virtio_scsi", "virtio_net"} <= debian_run.image_modules
    # What the VMware install needed is still there.
    assert {"vmw_pvscsi", "mptspi", "ahci"} <= debian_run.image_modules
    assert debian_run.backup_exists
    assert "vmw_pvscsi" in debian_run.backup_modules
    assert not any("virtio" in m for m in debian_run.backup_modules)
    whats = [what for step, what, _ in debian_run.changes if step == "initramfs"]
    assert any(w.startswith("rebuilt with update-initramfs") for w in whats), whats
    assert any(w.startswith("checked:") for w in whats), whats


@realguest
def test_debian_grub_cfg_was_regenerated(debian_run: DebianRun) -> None:
    (mtime_before, text_before), (mtime_after, text_after) = (
        debian_run.grub_before,
        debian_run.grub_after,
    )
    assert mtime_after > mtime_before
    assert f"/boot/vmlinuz-{debian_run.kernel_version}" in text_after
    assert "root=/dev/sda1" in text_after  # fstab still says so: devices.py did not run here
    assert ("bootloader", "regenerated with update-grub", "/boot/grub/grub.cfg") in (
        debian_run.changes
    )
    # The only kernel was the default already: GRUB_DEFAULT stays as it was.
    assert not any("GRUB_DEFAULT" in what for _, what, _ in debian_run.changes)
    del text_before


@realguest
def test_debian_second_rebuild_is_skipped(debian_run: DebianRun) -> None:
    image = debian_run.image
    assert ("initramfs", f"skipped: {image} already carries virtio_pci, virtio_blk", image) in (
        debian_run.second_changes
    )
    assert debian_run.image_mtime_after_second == debian_run.image_mtime_after_rebuild


# --- phony guests: one launch for all of them --------------------------------------------------

PHONY = ("ubuntu", "rhel", "suse", "nokernel", "debian-uefi")


@dataclass
class PhonyResult:
    chosen: str | None = None
    kernel_note: str = ""
    changes: list[tuple[str, str, str | None]] = field(default_factory=list)
    files: dict[str, str | None] = field(default_factory=dict)
    image_modules: set[str] = field(default_factory=set)
    older_image_modules: set[str] = field(default_factory=set)
    stub_log: str = ""


@pytest.fixture(scope="module")
def phony(
    linux_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, PhonyResult]]:
    work = tmp_path_factory.mktemp("phony-boot")
    overlays = {name: _overlay(linux_guests[name].disks[0], work) for name in PHONY}
    by_hostname = {linux_guests[n].oses[0].hostname: n for n in PHONY}
    # Before the launch: qemu locks the overlays while the appliance runs.
    vms = {name: _vm(name, path) for name, path in overlays.items()}
    results: dict[str, PhonyResult] = {}
    with open_session([probe_image(p) for p in overlays.values()], readonly=False) as session:
        g = session.g
        for os_ in inspect_session(session):
            name = by_hostname[os_.hostname]
            g.umount_all()
            mount_os(g, os_.root, readonly=False)
            guest = _guest(g, os_, vms[name])
            results[name] = _phony_steps(name, guest)
            g.umount_all()
    yield results


def _read(g: Any, path: str) -> str | None:
    return g.cat(path) if g.is_file(path) else None


def _phony_steps(name: str, guest: LinuxGuest) -> PhonyResult:
    g = guest.g
    result = PhonyResult()
    chosen = kernel.choose_kernel(guest)
    result.chosen = chosen.version if chosen else None
    result.kernel_note = guest.changes[-1].what
    if chosen is not None:
        initramfs.rebuild(guest)
        assert chosen.initramfs is not None
        result.files["backup"] = _read(g, chosen.initramfs + ".vmshift-orig")
        result.files["modules"] = _read(g, "/etc/initramfs-tools/modules")
        result.image_modules = _modules_in(g, chosen.initramfs)
    if name == "rhel":
        _rhel_older_kernel(guest, result)
    bootloader.update(guest)
    if name == "debian-uefi":
        for path in ("BOOTX64.EFI", "grubx64.efi", "mmx64.efi", "grub.cfg", "fbx64.efi"):
            full = f"/boot/efi/EFI/BOOT/{path}"
            result.files[full] = _read(g, full)
        # Idempotent: a second call finds the fallback and copies nothing.
        before = len(guest.changes)
        bootloader.ensure_uefi_fallback(guest)
        assert len(guest.changes) == before
    for path in ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/grub2/grubenv"):
        result.files[path] = _read(g, path)
    result.stub_log = _read(g, STUB_LOG) or ""
    result.changes = [(c.step, c.what, c.path) for c in guest.changes]
    return result


def _rhel_older_kernel(guest: LinuxGuest, result: PhonyResult) -> None:
    """The older kernel's initramfs was made hostonly on VMware: dracut must add virtio."""
    assert guest.os.linux is not None
    newest = guest.kernel
    older = next(k for k in guest.os.linux.kernels if k is not newest)
    assert older.initramfs is not None
    guest.kernel = older
    initramfs.rebuild(guest)
    result.files["older-backup"] = _read(guest.g, older.initramfs + ".vmshift-orig")
    result.older_image_modules = _modules_in(guest.g, older.initramfs)
    guest.kernel = newest


def test_ubuntu_builtin_virtio_needs_no_rebuild(phony: dict[str, PhonyResult]) -> None:
    r = phony["ubuntu"]
    assert r.chosen is not None
    initramfs_changes = [c for c in r.changes if c[0] == "initramfs"]
    assert initramfs_changes == [
        ("initramfs", f"skipped: kernel {r.chosen} has the virtio drivers built in", None)
    ]
    assert r.files["backup"] is None


def test_rhel_newest_kernel_with_virtio_initramfs_is_chosen_and_kept(
    phony: dict[str, PhonyResult],
) -> None:
    r = phony["rhel"]
    assert r.chosen == "5.14.0-362.8.1.el9_3.x86_64"
    assert "chosen over 5.14.0-284.30.1.el9_2.x86_64" in r.kernel_note
    image = f"/boot/initramfs-{r.chosen}.img"
    assert ("initramfs", f"skipped: {image} already carries virtio_pci, virtio_blk", image) in (
        r.changes
    )
    assert r.files["backup"] is None


def test_suse_initramfs_with_virtio_is_kept(phony: dict[str, PhonyResult]) -> None:
    r = phony["suse"]
    assert r.chosen == "5.14.21-150500.55.39-default"
    assert any(c[0] == "initramfs" and c[1].startswith("skipped:") for c in r.changes)


def test_nokernel_has_no_kernel_to_choose(phony: dict[str, PhonyResult]) -> None:
    r = phony["nokernel"]
    assert r.chosen is None
    assert "no installed kernel can drive virtio" in r.kernel_note
    assert not any(c[0] == "initramfs" for c in r.changes)


def test_uefi_fallback_is_copied_from_the_distro_shim(phony: dict[str, PhonyResult]) -> None:
    files = phony["debian-uefi"].files
    assert files["/boot/efi/EFI/BOOT/BOOTX64.EFI"] is not None  # the shim stub's bytes
    assert files["/boot/efi/EFI/BOOT/grubx64.efi"] is not None
    assert files["/boot/efi/EFI/BOOT/mmx64.efi"] is not None
    assert "configfile $prefix/grub.cfg" in (files["/boot/efi/EFI/BOOT/grub.cfg"] or "")
    assert files["/boot/efi/EFI/BOOT/fbx64.efi"] is None
    assert (
        "bootloader",
        "UEFI fallback loader: copied /boot/efi/EFI/debian/shimx64.efi",
        "/boot/efi/EFI/BOOT/BOOTX64.EFI",
    ) in phony["debian-uefi"].changes


def test_rhel_dracut_is_asked_for_the_virtio_drivers(phony: dict[str, PhonyResult]) -> None:
    r = phony["rhel"]
    old = "5.14.0-284.30.1.el9_2.x86_64"
    drivers = "virtio_pci virtio_blk virtio_scsi virtio_net"
    image = f"/boot/initramfs-{old}.img"
    assert calls_of(r.stub_log, "dracut") == [["-f", "--add-drivers", drivers, image, old]]
    assert r.files["older-backup"] is not None
    assert {"virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"} <= r.older_image_modules
    assert ("initramfs", f"rebuilt with dracut, adding {drivers}", image) in r.changes
    assert ("initramfs", "kept the old initramfs", f"{image}.vmshift-orig") in r.changes


def test_rhel_grub2_mkconfig_and_grubby(phony: dict[str, PhonyResult]) -> None:
    r = phony["rhel"]
    assert calls_of(r.stub_log, "grub2-mkconfig") == [["-o", "/boot/grub2/grub.cfg"]]
    assert calls_of(r.stub_log, "grubby") == [["--set-default", f"/boot/vmlinuz-{r.chosen}"]]
    env = bootloader.parse_grubenv(r.files["/boot/grub2/grubenv"] or "")
    assert env["saved_entry"].endswith(f"-{r.chosen}")
    assert "blscfg" in (r.files["/boot/grub2/grub.cfg"] or "")


def test_suse_grub2_mkconfig_and_no_default_change(phony: dict[str, PhonyResult]) -> None:
    r = phony["suse"]
    assert calls_of(r.stub_log, "grub2-mkconfig") == [["-o", "/boot/grub2/grub.cfg"]]
    assert calls_of(r.stub_log, "dracut") == []
    cfg = r.files["/boot/grub2/grub.cfg"] or ""
    assert f"/boot/vmlinuz-{r.chosen} root=" in cfg
    assert ("bootloader", "regenerated with grub2-mkconfig", "/boot/grub2/grub.cfg") in r.changes
    assert not any("GRUB_DEFAULT" in c[1] for c in r.changes)


def test_debian_family_phony_guests_run_update_grub(phony: dict[str, PhonyResult]) -> None:
    for name in ("ubuntu", "nokernel", "debian-uefi"):
        r = phony[name]
        assert calls_of(r.stub_log, "update-grub") == [[]], name
        assert calls_of(r.stub_log, "grub-mkconfig") == [["-o", "/boot/grub/grub.cfg"]], name
        assert "menuentry" in (r.files["/boot/grub/grub.cfg"] or ""), name
    assert calls_of(phony["ubuntu"].stub_log, "update-initramfs") == []
    assert calls_of(phony["nokernel"].stub_log, "update-initramfs") == []


def test_debian_uefi_initramfs_rebuilt_with_update_initramfs(
    phony: dict[str, PhonyResult],
) -> None:
    r = phony["debian-uefi"]
    assert calls_of(r.stub_log, "update-initramfs") == [["-u", "-k", r.chosen]]
    assert r.files["modules"] is not None and r.files["modules"].endswith(
        "virtio_pci\nvirtio_blk\nvirtio_scsi\nvirtio_net\n"
    )
    assert {"virtio_pci", "virtio_blk"} <= r.image_modules
    assert r.files["backup"] is not None
