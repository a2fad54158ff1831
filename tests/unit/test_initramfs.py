"""The initramfs lister against archives built here in every layout the kernel accepts."""

from __future__ import annotations

import bz2
import gzip
import lzma

import lz4.frame
import pytest
import zstandard

from vmshift.formats import initramfs
from vmshift.formats.cpio import newc_archive, regular
from vmshift.formats.initramfs import InitramfsError, list_initramfs


def newc(members: dict[str, bytes]) -> bytes:
    """A cpio archive in the kernel's "newc" format, padded as the kernel expects."""
    return newc_archive(regular(name, data) for name, data in members.items())


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


# --- appended archives ------------------------------------------------------------------------

ADDED = {"usr/lib/modules/6.1.0-18-amd64/kernel/drivers/block/virtio_blk.ko": b"new module"}


@pytest.mark.parametrize(
    ("how", "packed"),
    [
        ("gzip", gzip.compress),
        ("zstd", lambda b: zstandard.ZstdCompressor().compress(b)),
        ("xz", lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)),
        ("none", lambda b: b),
    ],
)
def test_an_archive_after_a_compressed_stream_is_read_and_wins(how: str, packed: object) -> None:
    # What the kernel does: the stream ends where its format says, zeros are skipped, and the
    # plain archive after it is unpacked over what came before.
    assert callable(packed)
    main = packed(newc(MAIN))
    image = main + b"\0" * (-len(main) % 4) + newc(ADDED)
    parsed = initramfs.read_initramfs(image)
    assert [s.compression for s in parsed.segments] == [how, "none"]
    # A stream ends where its format says; a plain archive at its trailer, before the padding.
    assert main[parsed.segments[0].end :].strip(b"\0") == b""
    assert parsed.segments[1].offset == len(main) + (-len(main) % 4)
    name = next(iter(ADDED))
    assert parsed.names().count(name) == 2
    assert parsed.effective()[name].data == b"new module"
    assert parsed.append_blocker() is None


def test_lz4_and_trailing_junk_block_an_append() -> None:
    framed = initramfs.read_initramfs(lz4.frame.compress(newc(MAIN)))
    assert "lz4" in (framed.append_blocker() or "")
    junk = initramfs.read_initramfs(gzip.compress(newc(MAIN)) + b"SIGNATURE")
    assert "unknown data at offset" in (junk.append_blocker() or "")
    assert junk.names() == list(MAIN)  # still listed for inspection
