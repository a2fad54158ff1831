"""The logic of the safety checks and of --key, against a stand-in for the appliance: what
counts as dirty, the free-space figures, which keys a LUKS volume is tried with, and that a
passphrase never reaches a message. tests/integration/test_guest_safety.py runs the same
checks on real images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vmshift.blockio.imageinfo import ImageInfo
from vmshift.errors import ConversionError, EnvironmentProblem, UsageError
from vmshift.guest import safety
from vmshift.guest.luks import LuksKey, parse_key_option, unlock_volumes
from vmshift.guest.session import AttachedDisk, GuestSession
from vmshift.model.inspection import Filesystem, OperatingSystem

SECRET = "s3cret passphrase"

E2FSCK_DIRTY = """e2fsck 1.47.0 (5-Feb-2023)
Pass 1: Checking inodes, blocks, and sizes
Pass 2: Checking directory structure
Pass 3: Checking directory connectivity
Pass 4: Checking reference counts
Pass 5: Checking group summary information
Block bitmap differences:  +9219
Fix? no

Free blocks count wrong for group #1 (7407, counted=7408).
Fix? no

Free blocks count wrong (117172, counted=117173).
Fix? no


/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_hd0-part1: ********** WARNING: Filesystem still has \
errors **********

/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_hd0-part1: 23/32768 files (0.0% non-contiguous), \
13900/131072 blocks
vmshift-e2fsck-status=4
"""
E2FSCK_CLEAN = "e2fsck 1.47.0\nPass 1: Checking inodes\nx: 1/2 files\nvmshift-e2fsck-status=0\n"


# ---- --key ----------------------------------------------------------------------------------


def test_key_string_and_file(tmp_path: Path) -> None:
    key = parse_key_option(f"/dev/sda2:key:{SECRET}")
    assert (key.selector, key.passphrase) == ("/dev/sda2", SECRET)
    assert SECRET not in repr(key)
    keyfile = tmp_path / "key"
    keyfile.write_bytes(f"{SECRET}\nsecond line\n".encode())
    key = parse_key_option(f"0a1b-uuid:file:{keyfile}")
    assert (key.selector, key.passphrase) == ("0a1b-uuid", SECRET)  # first line, no newline


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (":key:x", "missing the device"),
        ("/dev/sda2", "expected ID:key:KEY_STRING"),
        ("/dev/sda2:password:x", "expected ID:key:KEY_STRING"),
        (f"/dev/sda2:key:{SECRET}:more", "too many ':' fields"),
        ("/dev/sda2:file", "missing FILENAME"),
        ("/dev/sda2:file:/no/such/file", "cannot read /no/such/file: No such file"),
        ("/dev/sda2:clevis", "Clevis network unlocking is not supported"),
        ("/dev/sda2:clevis:x", "too many fields after 'clevis'"),
    ],
)
def test_bad_keys_are_one_line_without_the_passphrase(value: str, words: str) -> None:
    with pytest.raises(UsageError) as refused:
        parse_key_option(value)
    assert words in refused.value.message
    assert SECRET not in refused.value.message + (refused.value.hint or "")


def test_which_volumes_a_key_matches() -> None:
    uuid = "BC3572D3-7FC3-49B3-964B-7A0D6DA5CF84"
    assert LuksKey("/dev/sda2", "k").matches("/dev/sda2", None)
    assert not LuksKey("/dev/sda2", "k").matches("/dev/sda3", None)
    assert LuksKey(uuid.lower(), "k").matches("/dev/sdb1", uuid)
    assert LuksKey("all", "k").matches("/dev/anything", None)
    # /dev/mapper/VG-LV names the LV libguestfs calls /dev/VG/LV ('--' is a '-' in a name).
    assert LuksKey("/dev/mapper/vg--data-crypt", "k").matches("/dev/vg-data/crypt", None)


class FakeLuksG:
    """Two partitions, sda2 a LUKS volume that opens with SECRET only."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, str, bool]] = []
        self.scanned = False

    def list_partitions(self) -> list[str]:
        return ["/dev/sda1", "/dev/sda2"]

    def list_devices(self) -> list[str]:
        return ["/dev/sda"]

    def lvs(self) -> list[str]:
        return []

    def blkid(self, device: str) -> dict[str, str]:
        return {"TYPE": "crypto_LUKS" if device == "/dev/sda2" else "ext4"}

    def luks_uuid(self, device: str) -> str:
        return "1234-uuid"

    def part_to_dev(self, device: str) -> str:
        return "/dev/sda"

    def cryptsetup_open(self, device: str, key: str, mapname: str, readonly: bool) -> None:
        if key != SECRET:
            raise RuntimeError(
                "cryptsetup exited with status 2: No key available with this passphrase."
            )
        self.opened.append((device, mapname, readonly))

    def lvm_scan(self, activate: bool) -> None:
        self.scanned = True


def _session(g: Any, readonly: bool = False) -> GuestSession:
    disk = AttachedDisk(
        ImageInfo(Path("/x/guest.qcow2"), "qcow2", 1 << 30, None),
        readonly,
        "/dev/sda",
        "guest.vmdk",
    )
    return GuestSession(g, [disk], "tcg")


def test_volumes_open_with_the_keys_that_match_in_turn() -> None:
    g = FakeLuksG()
    keys = [LuksKey("all", "wrong"), LuksKey("/dev/sda3", "other"), LuksKey("1234-uuid", SECRET)]
    assert unlock_volumes(_session(g, readonly=True), keys) == ["/dev/mapper/luks-1234-uuid"]
    assert g.opened == [("/dev/sda2", "luks-1234-uuid", True)]
    assert g.scanned


def test_a_volume_without_a_key_is_asked_for_or_refused_naming_it() -> None:
    with pytest.raises(UsageError) as refused:
        unlock_volumes(_session(FakeLuksG()), [LuksKey("/dev/sda3", SECRET)])
    assert refused.value.message == (
        "/dev/sda2 (on guest.vmdk, UUID 1234-uuid) is LUKS-encrypted and no key was given for it"
    )
    assert "--key /dev/sda2:key:PASSPHRASE" in (refused.value.hint or "")
    asked: list[str] = []

    def ask(device: str, where: str) -> str:
        asked.append(where)
        return SECRET

    g = FakeLuksG()
    unlock_volumes(_session(g), [], ask)
    assert asked == ["/dev/sda2 (on guest.vmdk, UUID 1234-uuid)"]
    assert g.opened == [("/dev/sda2", "luks-1234-uuid", False)]


def test_a_wrong_key_is_one_line_naming_the_volume() -> None:
    with pytest.raises(UsageError) as refused:
        unlock_volumes(_session(FakeLuksG()), [LuksKey("all", "a"), LuksKey("/dev/sda2", "b")])
    assert refused.value.message == (
        "/dev/sda2 (on guest.vmdk, UUID 1234-uuid): none of the 2 keys given opens this LUKS volume"
    )


# ---- dirty filesystems ----------------------------------------------------------------------


@dataclass
class FakeFsG:
    superblocks: dict[str, dict[str, str]] = field(default_factory=dict)
    e2fsck_output: dict[str, str] = field(default_factory=dict)  # kernel node -> output
    ntfs: dict[str, int] = field(default_factory=dict)
    debug_works: bool = True

    def umount_all(self) -> None:
        pass

    replayed: list[str] = field(default_factory=list)

    def tune2fs_l(self, device: str) -> dict[str, str]:
        sb = self.superblocks[device]
        if device in self.replayed:  # mounting replayed the journal
            return {
                **sb,
                "Filesystem features": sb["Filesystem features"].replace(" needs_recovery", ""),
            }
        return sb

    def mount_ro(self, device: str, mountpoint: str) -> None:
        self.replayed.append(device)

    def e2fsck(self, device: str, correct: bool = False, forceall: bool = False) -> None:
        raise AssertionError("the repairing e2fsck must never run")

    def debug(self, sub: str, args: list[str]) -> str:
        if not self.debug_works:
            raise RuntimeError("guestfsd was not configured with --enable-debug-command")
        assert sub == "sh" and len(args) == 1 and "e2fsck -f -n" in args[0]
        node = next(n for n in self.e2fsck_output if n in args[0])
        return self.e2fsck_output[node]

    def ntfs_3g_probe(self, rw: bool, device: str) -> int:
        assert rw
        return self.ntfs[device]


def _os(
    filesystems: list[tuple[str, str]], mountpoints: dict[str, str], kind: str = "linux"
) -> OperatingSystem:
    return OperatingSystem(
        root=mountpoints["/"],
        type=kind,
        distro="debian",
        product_name="Debian",
        product_variant="",
        major_version=12,
        minor_version=5,
        arch="x86_64",
        hostname="h",
        package_format="deb",
        package_manager="apt",
        osinfo="debian12",
        firmware="bios",
        mountpoints=mountpoints,
        filesystems=tuple(Filesystem(d, t, None, None, None, None) for d, t in filesystems),
        applications=(),
        foreign_software=(),
    )


CLEAN_SB = {"Filesystem state": "clean", "Filesystem features": "has_journal extent"}
BOOT = "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_hd0-part1"
ROOT = "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_hd0-part2"


def test_dirty_filesystems_are_named_with_what_was_found() -> None:
    g = FakeFsG(
        superblocks={
            "/dev/sda1": CLEAN_SB,
            "/dev/sda2": {
                **CLEAN_SB,
                "Filesystem state": "clean with errors",
                "FS Error count": "2",
                "First error function": "ext4_lookup",
            },
        },
        e2fsck_output={BOOT: E2FSCK_DIRTY, ROOT: E2FSCK_CLEAN},
    )
    os = _os(
        [("/dev/sda1", "ext4"), ("/dev/sda2", "ext4"), ("/dev/sda3", "swap")],
        {"/": "/dev/sda2", "/boot": "/dev/sda1"},
    )
    with pytest.raises(ConversionError) as refused:
        safety.check_filesystems(_session(g), os)
    assert refused.value.message == (
        "/dev/sda1 (ext4, the guest's /boot): the filesystem has errors (e2fsck -n: Block "
        "bitmap differences: +9219, Free blocks count wrong for group #1 (7407, counted=7408)); "
        "/dev/sda2 (ext4, the guest's /): the filesystem has errors (superblock state 'clean "
        "with errors', 2 errors recorded, the first in ext4_lookup)"
    )
    assert "does not repair" in (refused.value.hint or "")


def test_clean_filesystems_pass_and_a_replayable_journal_is_not_dirty() -> None:
    crashed = {**CLEAN_SB, "Filesystem features": "has_journal needs_recovery extent"}
    g = FakeFsG(superblocks={"/dev/sda1": crashed}, e2fsck_output={BOOT: E2FSCK_CLEAN})
    safety.check_filesystems(_session(g), _os([("/dev/sda1", "ext4")], {"/": "/dev/sda1"}))
    assert g.replayed == ["/dev/sda1"]  # before e2fsck -n, which would skip the replay


def test_without_a_full_check_an_unclean_ext2_is_dirty_and_a_journal_is_not() -> None:
    ext2 = {"Filesystem state": "not clean", "Filesystem features": "ext_attr"}
    ext4 = {"Filesystem state": "not clean", "Filesystem features": "has_journal"}
    g = FakeFsG(superblocks={"/dev/sda1": ext2, "/dev/sda2": ext4}, debug_works=False)
    os = _os(
        [("/dev/sda1", "ext2"), ("/dev/sda2", "ext4")], {"/": "/dev/sda2", "/boot": "/dev/sda1"}
    )
    with pytest.raises(ConversionError) as refused:
        safety.check_filesystems(_session(g), os)
    assert refused.value.message == (
        "/dev/sda1 (ext2, the guest's /boot): it was not unmounted cleanly: the guest is "
        "running, or went down uncleanly"
    )


def test_ntfs_that_ntfs3g_refuses_is_dirty() -> None:
    g = FakeFsG(ntfs={"/dev/sda1": 0, "/dev/sda2": 15})
    os = _os([("/dev/sda1", "ntfs"), ("/dev/sda2", "ntfs")], {"/": "/dev/sda2"}, "windows")
    with pytest.raises(ConversionError) as refused:
        safety.check_filesystems(_session(g), os)
    assert refused.value.message.startswith("/dev/sda2 (ntfs, the guest's /): it was not cleanly")


# ---- free space -----------------------------------------------------------------------------


class FakeSpaceG:
    def __init__(self, free_mib: dict[str, float], inodes: dict[str, int] | None = None) -> None:
        self.free = free_mib
        self.inodes = inodes or {}

    def mountpoints(self) -> dict[str, str]:
        devices = {"/": "/dev/sda2", "/boot": "/dev/sda1", "/var": "/dev/sdb1"}
        return {devices[mp]: mp for mp in self.free}

    def statvfs(self, mp: str) -> dict[str, int]:
        return {
            "bfree": int(self.free[mp] * 256),
            "frsize": 4096,
            "files": 1000,
            "ffree": self.inodes.get(mp, 500),
        }


def _linux() -> OperatingSystem:
    return _os([], {"/": "/dev/sda2"})


def test_enough_room_passes_and_too_little_gives_the_figures() -> None:
    safety.check_guest_free_space(FakeSpaceG({"/": 100.0, "/boot": 50.0, "/var": 10.0}), _linux())
    with pytest.raises(ConversionError) as refused:
        safety.check_guest_free_space(
            FakeSpaceG({"/": 99.5, "/boot": 12.25, "/var": 20.0}, {"/var": 40}), _linux()
        )
    assert refused.value.message == (
        "the guest's / (/dev/sda2) has 99.5 MiB free; converting it needs 100 MiB (packages "
        "and files are changed there); the guest's /boot (/dev/sda1) has 12.2 MiB free; "
        "converting it needs 50 MiB (the initramfs is rebuilt there); the guest's /var "
        "(/dev/sdb1) has 40 free inodes; converting it needs 100"
    )


def test_without_a_separate_boot_root_holds_the_initramfs() -> None:
    with pytest.raises(ConversionError) as refused:
        safety.check_guest_free_space(FakeSpaceG({"/": 60.0}), _linux())
    assert "needs 100 MiB (packages and files are changed and the initramfs rebuilt" in str(
        refused.value
    )
    windows = _os([], {"/": "/dev/sda2"}, "windows")
    with pytest.raises(ConversionError) as refused:
        safety.check_guest_free_space(FakeSpaceG({"/": 60.0}), windows)
    assert "(drivers and first-boot scripts are installed there)" in str(refused.value)


# ---- the work directory ---------------------------------------------------------------------


def test_work_directory_space(tmp_path: Path, small_tmpfs: Path) -> None:
    safety.check_workdir_space(tmp_path, remote=True)  # the suite's own disk has room
    with pytest.raises(EnvironmentProblem) as refused:
        safety.check_workdir_space(small_tmpfs, remote=False)
    assert refused.value.message == (
        f"{small_tmpfs}: not enough free space for the work directory: 16 MiB free, "
        "1024 MiB needed (the overlays of the guest's disks)"
    )
    assert "--workdir" in (refused.value.hint or "")
    with pytest.raises(EnvironmentProblem) as refused:
        safety.check_workdir_space(small_tmpfs, remote=True)
    assert "2048 MiB needed (the overlays of the guest's disks and the blocks the appliance " in (
        refused.value.message
    )
    with pytest.raises(EnvironmentProblem) as refused:
        safety.check_workdir_space(tmp_path / "missing", remote=False)
    assert refused.value.message.endswith(
        "missing: cannot hold the work directory: No such file or directory"
    )
