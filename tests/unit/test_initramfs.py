"""The initramfs lister against archives built here in every layout the kernel accepts."""

from __future__ import annotations

import bz2
import gzip
import lzma

import lz4.frame
import pytest
import zstandard

from vmshift.formats import initramfs
from vmshift.formats.initramfs import InitramfsError, list_initramfs


def newc(members: dict[str, bytes]) -> bytes:
    """A cpio archive in the kernel's "newc" format, padded as the kernel expects."""
    out = bytearray()
    for ino, (name, data) in enumerate([*members.items(), ("TRAILER!!!", b"")], start=1):
        encoded = name.encode() + b"\0"
        mode = 0o100644 if name != "TRAILER!!!" else 0
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
        out += encoded
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


MAIN = {
    "usr/lib/modules/6.1.0-18-amd64/kernel/drivers/block/virtio_blk.ko": b"\x7fELF" + b"x" * 99,
    "usr/lib/modules/6.1.0-18-amd64/kernel/drivers/scsi/vmw_pvscsi.ko.xz": b"y" * 17,
    "init": b"#!/bin/sh\n",
}
EARLY = {"kernel/x86/microcode/GenuineIntel.bin": b"\x01" * 33}


@pytest.mark.parametrize(
    "compress",
    [
        lambda b: b,
        gzip.compress,
        lambda b: zstandard.ZstdCompressor().compress(b),
        lambda b: lzma.compress(b, format=lzma.FORMAT_XZ),
        lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
        bz2.compress,
        lz4.frame.compress,
    ],
    ids=["plain", "gzip", "zstd", "xz", "lzma", "bzip2", "lz4"],
)
def test_early_cpio_then_compressed_main(compress: object) -> None:
    assert callable(compress)
    early = newc(EARLY)
    image = early + b"\0" * (512 - len(early) % 512) + compress(newc(MAIN))
    assert list_initramfs(image) == [*EARLY, *MAIN]


def test_kernel_legacy_lz4() -> None:
    import lz4.block

    payload = newc(MAIN)
    block = lz4.block.compress(payload, store_size=False)
    image = b"\x02\x21\x4c\x18" + len(block).to_bytes(4, "little") + block
    assert list_initramfs(image) == list(MAIN)


def test_two_gzip_members() -> None:
    image = gzip.compress(newc(EARLY)) + gzip.compress(newc(MAIN))
    assert list_initramfs(image) == [*EARLY, *MAIN]


def test_garbage_is_an_error() -> None:
    with pytest.raises(InitramfsError, match="neither cpio nor compressed"):
        list_initramfs(b"MZ this is not an initramfs")


def test_truncated_archive_is_an_error() -> None:
    with pytest.raises(InitramfsError):
        list_initramfs(newc(MAIN)[:150])


def test_corrupt_compressed_data_is_an_error() -> None:
    data = gzip.compress(newc(MAIN))
    with pytest.raises(InitramfsError, match="gzip"):
        list_initramfs(data[:20] + b"\xff" * 40 + data[60:])


def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initramfs, "MAX_UNPACKED", 1000)
    big = newc({"big": b"\0" * 100_000})
    for packed in (gzip.compress(big), zstandard.ZstdCompressor().compress(big)):
        with pytest.raises(InitramfsError, match="more than"):
            list_initramfs(packed)
