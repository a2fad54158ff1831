"""Bad input to `vmshift inspect`: one clear line naming the file, non-zero exit, no traceback.

These fail before the appliance starts, so they are quick.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift


def _assert_clean_error(proc: subprocess.CompletedProcess[str], path: Path, words: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines, "no error message"
    assert lines[0].startswith(f"vmshift: error: {path}: "), lines[0]
    assert words in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _image_with_data(tmp: Path, fmt: str, **opts: str) -> Path:
    raw = tmp / "data.raw"
    with raw.open("wb") as f:
        f.truncate(64 << 20)
        for offset in range(0, 64 << 20, 4 << 20):
            f.seek(offset)
            f.write(os.urandom(65536))
    out = tmp / f"disk.{fmt}"
    extra = ["-o", ",".join(f"{k}={v}" for k, v in opts.items())] if opts else []
    _qemu_img("convert", "-f", "raw", "-O", fmt, *extra, str(raw), str(out))
    return out


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.qcow2"
    _assert_clean_error(vmshift(["inspect", path]), path, "no such file")


def test_directory(tmp_path: Path) -> None:
    _assert_clean_error(vmshift(["inspect", tmp_path]), tmp_path, "is a directory")


def test_text_file_is_not_a_disk_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are not the sectors you are looking for\n")
    _assert_clean_error(vmshift(["inspect", path]), path, "not a disk image")


def test_truncated_qcow2(tmp_path: Path) -> None:
    path = _image_with_data(tmp_path, "qcow2")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    before = sha256(path)
    _assert_clean_error(vmshift(["inspect", path]), path, "corrupt qcow2 image")
    assert sha256(path) == before


def test_truncated_vmdk(tmp_path: Path) -> None:
    path = _image_with_data(tmp_path, "vmdk", subformat="monolithicSparse")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 3)
    _assert_clean_error(vmshift(["inspect", path]), path, "image")


def test_vmdk_descriptor_naming_missing_extent(tmp_path: Path) -> None:
    path = tmp_path / "guest.vmdk"
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW 2048 FLAT "guest-flat.vmdk" 0\n'
    )
    proc = vmshift(["inspect", path])
    _assert_clean_error(proc, path, "guest-flat.vmdk")


def test_corrupt_vmdk_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "guest.vmdk"
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\nRW lots FLAT "guest-flat.vmdk" zero\n'
    )
    _assert_clean_error(vmshift(["inspect", path]), path, "image")


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "nope.img"
    proc = vmshift(["-v", "inspect", path])
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert f"vmshift: error: {path}: no such file" in proc.stderr


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="vmshift-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_permission_denied(shared_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    path = shared_dir / "private.qcow2"
    _qemu_img("create", "-f", "qcow2", str(path), "16M")
    path.chmod(0o600)
    exe = Path(sys.executable).parent / "vmshift"
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*as_nobody, str(exe), "--version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot run {exe}")
    proc = subprocess.run(
        [*as_nobody, str(exe), "inspect", str(path)], capture_output=True, text=True, check=False
    )
    _assert_clean_error(proc, path, "permission denied")
