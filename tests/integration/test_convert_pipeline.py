"""`vmshift convert` end to end on phony guests: outputs, verdicts, progress, and the promise
that a failed or interrupted conversion leaves nothing behind and never touches the source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import mounted_tmpfs, sha256, vmshift
from tests.guests.manifest import BuiltGuest

pytestmark = pytest.mark.slow


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def _qemu_img_info(path: Path) -> dict[str, object]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True
    ).stdout
    info: dict[str, object] = json.loads(out)
    return info


def _differing_bytes(a: Path, b: Path, scratch: Path) -> int:
    raws = []
    for i, image in enumerate((a, b)):
        raw = scratch / f".cmp{i}.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
        raws.append(raw)
    differing = 0
    with raws[0].open("rb") as fa, raws[1].open("rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if not ca and not cb:
                break
            if ca != cb:
                differing += sum(x != y for x, y in zip(ca, cb, strict=False)) + abs(
                    len(ca) - len(cb)
                )
    for raw in raws:
        raw.unlink()
    return differing


def test_disk_to_local_qcow2_with_virtio(
    linux_guests: dict[str, BuiltGuest], outdir: Path, workdir: Path
) -> None:
    guest = linux_guests["ubuntu"]
    before = sha256(guest.disks[0])
    proc = vmshift([
        "convert", "-i", "disk", guest.disks[0], "-o", "local", "-os", outdir,
        "-of", "qcow2", "--workdir", workdir,
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    verdict = proc.stdout.strip().splitlines()[-1]
    assert verdict.startswith("vmshift: ubuntu configured with virtio drivers"), verdict
    # The progress bar (drawn on stderr) ends at 100% with the disk's name and size.
    bar = next(line for line in proc.stderr.splitlines() if line.startswith("ubuntu-sda "))
    assert "100%" in bar
    assert "512.0/512.0 MiB" in bar
    disk = outdir / "ubuntu-sda"
    assert _qemu_img_info(disk)["format"] == "qcow2"
    xml = (outdir / "ubuntu.xml").read_text()
    assert "<target dev='vda' bus='virtio'/>" in xml.replace('"', "'")
    subprocess.run(["virt-xml-validate", str(outdir / "ubuntu.xml"), "domain"], check=True)
    # The copy is the guest: the same bytes as the source but for what conversion rewrote (a
    # few configuration files, filesystem metadata) - far less than the guest's data.
    assert 0 < _differing_bytes(guest.disks[0], disk, outdir) < 4 << 20
    assert sha256(guest.disks[0]) == before
    assert list(workdir.iterdir()) == []


def test_guest_without_virtio_gets_fallback_devices_and_a_warning(
    linux_guests: dict[str, BuiltGuest], outdir: Path
) -> None:
    guest = linux_guests["nokernel"]
    proc = vmshift(["convert", "-i", "disk", *guest.disks, "-o", "local", "-os", outdir])
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("vmshift: warning: nokernel was NOT configured with virtio drivers")
    assert "sata disks" in last
    xml = (outdir / "nokernel.xml").read_text().replace('"', "'")
    assert "bus='sata'" in xml
    assert "bus='virtio'" not in xml
    assert "<model type='e1000'/>" in xml


def _data_disk_with_a_deleted_file(path: Path, scratch: Path) -> None:
    """An ext4 data disk (no partition table) whose free blocks still hold 16 MiB of old data."""
    scratch.mkdir()
    (scratch / "payload").write_bytes(os.urandom(16 << 20))
    with path.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", scratch, path], check=True)
    # debugfs edits the image file directly: no mount, and the blocks keep their bytes.
    subprocess.run(["debugfs", "-w", "-R", "rm payload", path], check=True, capture_output=True)


def _delete_a_file_on_the_root(image: Path, scratch: Path) -> bytes:
    """Write a 16 MiB file of random data on the image's second partition (its ext4 root), and
    delete it: its blocks keep its bytes. The bytes are returned."""
    table = json.loads(
        subprocess.run(["sfdisk", "--json", str(image)], check=True, capture_output=True).stdout
    )["partitiontable"]
    root = f"{image}?offset={table['partitions'][1]['start'] * table['sectorsize']}"
    payload = os.urandom(16 << 20)
    (scratch / "payload").write_bytes(payload)
    for request in (f"write {scratch / 'payload'} payload", "rm payload"):
        subprocess.run(["debugfs", "-w", "-R", request, root], check=True, capture_output=True)
    return payload


def _blocks_of(payload: bytes, image: Path, block: int = 1024) -> int:
    """How many of payload's blocks the image holds, at block-aligned offsets."""
    wanted = {payload[i : i + block] for i in range(0, len(payload), block)}
    found = 0
    with image.open("rb") as f:
        while chunk := f.read(1 << 20):
            found += sum(chunk[i : i + block] in wanted for i in range(0, len(chunk), block))
    return found


def test_raw_sparse_output_holds_only_the_data(
    linux_guests: dict[str, BuiltGuest], outdir: Path, tmp_path: Path
) -> None:
    # A raw source image, copied: a file deleted on its root (mounted by the conversion).
    source = tmp_path / "debian-uefi.img"
    original = linux_guests["debian-uefi"].disks[0]
    subprocess.run(["cp", "--sparse=always", original, source], check=True)
    payload = _delete_a_file_on_the_root(source, tmp_path)
    assert _blocks_of(payload, source) == len(payload) // 1024
    data = tmp_path / "data.img"
    _data_disk_with_a_deleted_file(data, tmp_path / "files")
    assert _allocated(data) > 16 << 20
    proc = vmshift(["-q", "convert", "-i", "disk", source, data, "-o", "local", "-os", outdir])
    assert proc.returncode == 0, proc.stderr
    out = outdir / "debian-uefi-sda"
    assert out.stat().st_size == source.stat().st_size
    # Sparse: no more blocks allocated than the source had (it is sparse too).
    assert _allocated(out) <= _allocated(source) * 1.05 + (1 << 20)
    # fstrim in the overlay freed the deleted files' blocks: they are not copied. On the root,
    # trimmed where the conversion mounted it, only the edges of the free runs that do not
    # fill a whole 64 KiB overlay cluster stay (about 220 KiB here).
    assert _blocks_of(payload, out) < 1024
    out_data = outdir / "debian-uefi-sdb"
    assert out_data.stat().st_size == 64 << 20
    assert _allocated(out_data) < 8 << 20
    assert "<os firmware='efi'>" in (outdir / "debian-uefi.xml").read_text().replace('"', "'")
    # -q: only the verdict.
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vmshift: ")


def test_preallocated_output_is_fully_allocated(
    linux_guests: dict[str, BuiltGuest], outdir: Path
) -> None:
    guest = linux_guests["rhel"]
    proc = vmshift([
        "convert", "-i", "disk", *guest.disks, "-o", "local", "-os", outdir,
        "-oa", "preallocated", "--machine-readable",
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = outdir / "rhel-sda"
    size = int(_qemu_img_info(out)["virtual-size"])  # type: ignore[call-overload]
    assert _allocated(out) >= size
    copy_lines = [line for line in proc.stdout.splitlines() if line.startswith("copy ")]
    assert copy_lines[0].startswith("copy rhel-sda 0 ")
    assert copy_lines[-1].endswith(" 100%")


def test_null_target(linux_guests: dict[str, BuiltGuest]) -> None:
    proc = vmshift(["convert", "-i", "disk", *linux_guests["suse"].disks, "-o", "null"])
    assert proc.returncode == 0, proc.stderr
    assert "vmshift: " in proc.stdout.strip().splitlines()[-1]


def test_failed_conversion_leaves_nothing_and_source_untouched(
    linux_guests: dict[str, BuiltGuest], outdir: Path, workdir: Path
) -> None:
    guest = linux_guests["empty"]
    before = sha256(guest.disks[0])
    proc = vmshift([
        "convert", "-i", "disk", guest.disks[0], "-o", "local", "-os", outdir,
        "--workdir", workdir,
    ])  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    want = f"{guest.disks[0]}: no operating system found (filesystems: /dev/sda1 (ext4))"
    assert errors == [f"vmshift: error: {want}"]
    assert "Traceback" not in proc.stderr
    assert list(outdir.iterdir()) == []
    assert list(workdir.iterdir()) == []
    assert sha256(guest.disks[0]) == before


def test_missing_output_directory_fails_before_any_work(
    linux_guests: dict[str, BuiltGuest], tmp_path: Path
) -> None:
    missing = tmp_path / "does-not-exist"
    started = time.monotonic()
    proc = vmshift(["convert", "-i", "disk", *linux_guests["debian"].disks, "-o", "local",
                    "-os", missing])  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1
    assert str(missing) in errors[0]
    assert "Traceback" not in proc.stderr
    # Refused before the appliance starts (which alone takes 15 s or more under TCG).
    assert time.monotonic() - started < 15


def test_unknown_input_and_output(tmp_path: Path) -> None:
    proc = vmshift(["convert", "-i", "floppy", "x", "-o", "local", "-os", tmp_path])
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith("vmshift: error: -i floppy: unknown input")
    proc = vmshift(["convert", "-i", "disk", "x", "-o", "cloud9", "-os", tmp_path])
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith("vmshift: error: -o cloud9: unknown output")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "2m") as path:
        yield path


def test_not_enough_space_is_checked_before_copying(
    linux_guests: dict[str, BuiltGuest], tiny_fs: Path
) -> None:
    proc = vmshift(["convert", "-i", "disk", *linux_guests["ubuntu"].disks, "-o", "local",
                    "-os", tiny_fs, "-oa", "preallocated"])  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"vmshift: error: {tiny_fs}: not enough free space")
    assert list(tiny_fs.iterdir()) == []


def test_ctrl_c_removes_partial_outputs_and_temporary_files(
    linux_guests: dict[str, BuiltGuest], outdir: Path, workdir: Path
) -> None:
    exe = Path(sys.executable).parent / "vmshift"
    guest = linux_guests["rhel"]
    proc = subprocess.Popen(
        [str(exe), "convert", "-i", "disk", *map(str, guest.disks), "-o", "local",
         "-os", str(outdir), "--workdir", str(workdir), "--machine-readable"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    # Interrupt in the middle of the work: once the guest is being inspected.
    for line in proc.stdout:
        if line.startswith("stage inspect"):
            break
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert list(outdir.iterdir()) == []
    assert list(workdir.iterdir()) == []
