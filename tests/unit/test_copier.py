"""The copy engine on real qemu-img: the bytes copied, sparseness, progress, cleanup on failure."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from vmshift.blockio import writeback
from vmshift.blockio.copier import CopyJob, copy_disks
from vmshift.blockio.overlay import create_overlay
from vmshift.blockio.progress import CopyProgress, Event
from vmshift.errors import CopyError
from vmshift.model.vm import DiskEndpoint

MIB = 1 << 20


def source_image(path: Path, size: int = 64 * MIB) -> DiskEndpoint:
    """A sparse raw disk with data at a few offsets and a written-zero run."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset in (0, 5 * MIB, 40 * MIB):
            f.seek(offset)
            f.write(os.urandom(MIB))
        f.seek(20 * MIB)
        f.write(bytes(4 * MIB))
    return DiskEndpoint(str(path), "raw", size)


def same_content(a: Path, fmt_a: str, b: Path, fmt_b: str) -> bool:
    argv = ["qemu-img", "compare", "-q", "-f", fmt_a, "-F", fmt_b, str(a), str(b)]
    return subprocess.run(argv, check=False).returncode == 0


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_copy_writes_only_data_and_reports_progress(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src.raw"
    endpoint = source_image(src)
    overlay = create_overlay(endpoint, tmp_path, "sda")
    out = tmp_path / f"out.{fmt}"
    events: list[Event] = []
    # Every progress record may trigger early writeback: exercise it on each one.
    old = writeback.WRITEBACK_INTERVAL
    writeback.WRITEBACK_INTERVAL = 0.0
    try:
        copy_disks([CopyJob(overlay, out, fmt, preallocated=False, label="g-sda")], events.append)
    finally:
        writeback.WRITEBACK_INTERVAL = old
    assert same_content(src, "raw", out, fmt)
    # 3 MiB of data: the written zeros and the holes are not allocated in the output.
    assert out.stat().st_blocks * 512 < 8 * MIB
    info = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", str(out)]))
    assert info["format"] == fmt and info["virtual-size"] == 64 * MIB
    progress = [e for e in events if isinstance(e, CopyProgress)]
    assert progress[0].done == 0 and progress[-1].finished and progress[-1].done == 64 * MIB
    assert all(e.label == "g-sda" for e in progress)


def test_preallocated_output_is_fully_allocated(tmp_path: Path) -> None:
    endpoint = source_image(tmp_path / "src.raw", 16 * MIB)
    overlay = create_overlay(endpoint, tmp_path, "sda")
    out = tmp_path / "out.raw"
    copy_disks([CopyJob(overlay, out, "raw", preallocated=True, label="g")], lambda _e: None)
    assert out.stat().st_blocks * 512 >= 16 * MIB


def test_failed_copy_removes_every_output(tmp_path: Path) -> None:
    good = create_overlay(source_image(tmp_path / "a.raw", 8 * MIB), tmp_path, "sda")
    src_b = tmp_path / "b.raw"
    bad = create_overlay(source_image(src_b, 8 * MIB), tmp_path, "sdb")
    src_b.unlink()  # the overlay's backing file is gone: qemu-img fails on this disk
    outs = [tmp_path / "out-a.raw", tmp_path / "out-b.raw"]
    jobs = [
        CopyJob(good, outs[0], "raw", preallocated=False, label="g-sda"),
        CopyJob(bad, outs[1], "raw", preallocated=False, label="g-sdb"),
    ]
    with pytest.raises(CopyError, match="g-sdb"):
        copy_disks(jobs, lambda _e: None)
    assert not [p for p in outs if p.exists()]


def test_compressed_output_has_compressed_clusters(tmp_path: Path) -> None:
    """-oo compressed: the same data, in clusters qemu reports as compressed."""
    src = tmp_path / "src.raw"
    with src.open("wb") as f:
        f.truncate(16 * MIB)
        f.write(b"compressible " * (MIB // 13))
    overlay = create_overlay(DiskEndpoint(str(src), "raw", 16 * MIB), tmp_path, "sda")
    plain, packed = tmp_path / "plain.qcow2", tmp_path / "packed.qcow2"
    copy_disks([CopyJob(overlay, plain, "qcow2", False, "g-sda")], lambda _e: None)
    copy_disks(
        [CopyJob(overlay, packed, "qcow2", False, "g-sda", compressed=True)], lambda _e: None
    )
    assert same_content(src, "raw", packed, "qcow2")
    check = subprocess.run(
        ["qemu-img", "check", "--output=json", str(packed)], capture_output=True, check=True
    )
    stats = json.loads(check.stdout)
    assert stats["compressed-clusters"] > 0
    assert stats["compressed-clusters"] == stats["allocated-clusters"]
    assert packed.stat().st_size < plain.stat().st_size // 4
