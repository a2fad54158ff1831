"""The kernel, initramfs and bootloader steps on phony guests, each on an overlay.

The real Debian guest goes through the same steps in tests/integration/test_linux_conversion.py
(a whole conversion that then boots on virtio: the appended initramfs and the grub.cfg edited in
place on two of them, the full rebuild on the lz4 one); repeating them here would add nothing
but time. Appliance launches are the cost, so the module-scoped fixture does
all its work in one launch and the tests only look at what it collected.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.guests.manifest import BuiltGuest
from tests.guests.stub_tools import STUB_LOG, calls_of
from vmshift.blockio.imageinfo import probe_image
from vmshift.convert.linux import bootloader, devices, initramfs, kernel
from vmshift.convert.linux.context import LinuxGuest, family_of
from vmshift.formats import grub, kmod
from vmshift.formats.initramfs import list_initramfs
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
    return {n for n in map(kmod.module_name, names) if n}


def _mtime(g: Any, path: str) -> tuple[int, int]:
    st = g.statns(path)
    return st["st_mtime_sec"], st["st_mtime_nsec"]


# --- the real Debian 12 guest ------------------------------------------------------------------


# "debian" first: its fstab names its root /dev/sda1, and inspection mounts what fstab names,
# so in this one appliance it must be the first disk.
PHONY = ("debian", "ubuntu", "rhel", "suse", "nokernel", "debian-uefi")


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
            mount_os(g, os_.mountpoints, readonly=False)
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
    # In the converter's order: device names (in grub.cfg too) before the initramfs and grub.
    if chosen is None:
        guest.block_bus = "sata"
    devices.rename_block_devices(guest)
    result.files["grub.cfg before"] = _read(g, "/boot/grub/grub.cfg")
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


def test_rhel_bls_edited_in_place_and_grubby(phony: dict[str, PhonyResult]) -> None:
    """As on a real RHEL 9: GRUB_DEFAULT=saved, grub.cfg only runs blscfg, and the entries'
    command lines are /etc/default/grub's, so grub2-mkconfig would change nothing; the new
    default is set with grubby. (Regeneration is tested on SUSE and Ubuntu.)"""
    r = phony["rhel"]
    assert calls_of(r.stub_log, "grub2-mkconfig") == []
    note = "edited in place (3 BLS entries, their kernels and initrds present)"
    assert ("bootloader", note, "/boot/grub2/grub.cfg") in r.changes
    assert calls_of(r.stub_log, "grubby") == [["--set-default", f"/boot/vmlinuz-{r.chosen}"]]
    env = grub.parse_grubenv(r.files["/boot/grub2/grubenv"] or "")
    assert env["saved_entry"].endswith(f"-{r.chosen}")
    assert "blscfg" in (r.files["/boot/grub2/grub.cfg"] or "")


def test_suse_grub2_mkconfig_and_no_default_change(phony: dict[str, PhonyResult]) -> None:
    r = phony["suse"]
    assert calls_of(r.stub_log, "grub2-mkconfig") == [["-o", "/boot/grub2/grub.cfg"]]
    assert calls_of(r.stub_log, "dracut") == []
    cfg = r.files["/boot/grub2/grub.cfg"] or ""
    assert f"/boot/vmlinuz-{r.chosen} root=" in cfg
    reason = "the command line of the default entry is not /etc/default/grub's"
    assert (
        "bootloader",
        f"regenerated with grub2-mkconfig ({reason})",
        "/boot/grub2/grub.cfg",
    ) in r.changes
    assert not any("GRUB_DEFAULT" in c[1] for c in r.changes)


def test_generated_grub_cfg_is_edited_in_place(phony: dict[str, PhonyResult]) -> None:
    """Nothing but device names changed: grub.cfg keeps devices.py's edit, update-grub not run."""
    for name in ("debian", "debian-uefi", "nokernel"):
        r = phony[name]
        notes = [c for c in r.changes if c[0] == "bootloader"]
        assert calls_of(r.stub_log, "update-grub") == [], (name, notes)
        assert calls_of(r.stub_log, "grub-mkconfig") == [], name
        cfg = r.files["/boot/grub/grub.cfg"] or ""
        assert cfg == r.files["grub.cfg before"], name
        assert "(a vmshift stub)" not in cfg, name  # the stub grub-mkconfig's header
        (note,) = [c for c in r.changes if c[0] == "bootloader" and c[2] == "/boot/grub/grub.cfg"]
        assert note[1].startswith("edited in place ("), name
    # The old VMware install named its root /dev/sda1; the converted guest boots from vda.
    cfg = phony["debian"].files["/boot/grub/grub.cfg"] or ""
    assert f"/boot/vmlinuz-{phony['debian'].chosen} root=/dev/vda1 ro quiet" in cfg
    assert "/dev/sda" not in cfg


def test_grub_cfg_regenerated_when_it_differs_from_etc_default_grub(
    phony: dict[str, PhonyResult],
) -> None:
    """The phony Ubuntu's grub.cfg says "quiet splash" where /etc/default/grub says "quiet":
    the next update-grub would change it, so vmshift regenerates it now."""
    r = phony["ubuntu"]
    assert calls_of(r.stub_log, "update-grub") == [[]]
    assert calls_of(r.stub_log, "grub-mkconfig") == [["-o", "/boot/grub/grub.cfg"]]
    cfg = r.files["/boot/grub/grub.cfg"] or ""
    assert "(a vmshift stub)" in cfg and "menuentry" in cfg
    assert "splash" not in cfg
    reason = "the command line of the default entry is not /etc/default/grub's"
    assert ("bootloader", f"regenerated with update-grub ({reason})", "/boot/grub/grub.cfg") in (
        r.changes
    )
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
