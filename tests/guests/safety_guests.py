"""Phony guests that conversion's safety checks refuse, or that need a key (guest/safety.py,
guest/luks.py).

Variants of the debian-lvm recipe (linux_deb.py) that keep its layout (/boot on sda1, / on sda2),
so its files (grub.cfg, fstab) still describe them; built by the phony guests' builder in one
launch, raw, and cached like the others:
- luks: / in a LUKS volume on sda2 (passphrase PASSPHRASE), /etc/crypttab naming it;
- dirty: /boot misses a used block in its block bitmap (only a full e2fsck finds that: the
  superblock says clean), and /'s superblock records errors, as the kernel writes it when it
  meets corruption (e2fsck finds nothing more). Both made offline with debugfs, and checked
  with the host's e2fsck and tune2fs;
- smallboot: a 40 MiB /boot, less free than the 50 MiB an initramfs rebuild needs.
"""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.guests import disks, linux, linux_deb
from tests.guests.cache import cached_dir, source_version
from tests.guests.disks import DiskJob, DiskSpec, Formatted, Volume

PASSPHRASE = "correct horse battery staple"
BOOT_MIB = 128
SMALL_BOOT_MIB = 40
SECTOR = 512
_FIRST = 2048 * SECTOR  # where the first partition starts
_LUKS_UUID_AT = 168  # the UUID's offset in a LUKS1 and a LUKS2 header alike (40 bytes)


@dataclass(frozen=True)
class SafetyGuests:
    luks: Path
    luks_uuid: str
    dirty: Path
    smallboot: Path


def _variant(name: str, boot_mib: int, root: Volume) -> DiskJob:
    base = linux_deb.debian_lvm().job
    assert base.fill is not None
    fill = base.fill

    def fill_with_crypttab(tree: Path, fmt: Formatted, scratch: Path) -> None:
        fill(tree, fmt, scratch)
        if root.luks is not None:
            (tree / "etc/crypttab").write_text("sda2_crypt /dev/sda2 none luks,discard\n")

    return dataclasses.replace(
        base,
        name=name,
        disks=(DiskSpec(f"safety-{name}", 512, "dos"),),
        volumes=(Volume("/boot", "ext4", 0, 1, size_mib=boot_mib), root),
        fill=fill_with_crypttab,
    )


def _jobs() -> list[DiskJob]:
    return [
        _variant("luks", BOOT_MIB, Volume("/", "ext4", 0, 2, luks=PASSPHRASE)),
        _variant("dirty", BOOT_MIB, Volume("/", "ext4", 0, 2)),
        _variant("smallboot", SMALL_BOOT_MIB, Volume("/", "ext4", 0, 2)),
    ]


def _debugfs(image: Path, offset: int, request: str) -> str:
    proc = subprocess.run(
        ["debugfs", "-w", "-R", request, f"{image}?offset={offset}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def _dirty_up(image: Path) -> None:
    boot, root = _FIRST, _FIRST + BOOT_MIB * 1024 * 1024
    block = int(_debugfs(image, boot, "blocks /grub/grub.cfg").split()[0])
    _debugfs(image, boot, f"freeb {block}")
    _debugfs(image, root, "ssv state 3")  # valid, with errors
    _debugfs(image, root, "ssv error_count 2")
    fsck = subprocess.run(
        ["e2fsck", "-f", "-n", f"{image}?offset={boot}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fsck.returncode == 4 and "Block bitmap differences" in fsck.stdout, fsck.stdout
    sb = subprocess.run(
        ["tune2fs", "-l", f"{image}?offset={root}"], capture_output=True, text=True, check=True
    )
    assert "clean with errors" in sb.stdout, sb.stdout


def _build(where: Path) -> None:
    jobs = _jobs()
    disks.build_disks(jobs, where)
    _dirty_up(where / "safety-dirty.img")


def luks_uuid(image: Path, offset: int) -> str:
    with image.open("rb") as f:
        f.seek(offset)
        header = f.read(_LUKS_UUID_AT + 40)
    assert header.startswith(b"LUKS\xba\xbe"), header[:6]
    return header[_LUKS_UUID_AT:].split(b"\0")[0].decode()


def build_safety_guests() -> SafetyGuests:
    where = cached_dir("safety-guests", source_version(*linux._SOURCES, __file__), _build)
    luks = where / "safety-luks.img"
    return SafetyGuests(
        luks=luks,
        luks_uuid=luks_uuid(luks, _FIRST + BOOT_MIB * 1024 * 1024),
        dirty=where / "safety-dirty.img",
        smallboot=where / "safety-smallboot.img",
    )
