"""Linux's disk names: the letters the kernel gives the index-th disk of a kind."""

from __future__ import annotations


def drive_letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa, 701 -> zz, 702 -> aaa (bijective base 26)."""
    letters = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return letters


def scsi_disk_name(index: int) -> str:
    """sda, sdb ... sdz, sdaa ...: the index-th SCSI disk, as sources name disks."""
    return "sd" + drive_letters(index)
