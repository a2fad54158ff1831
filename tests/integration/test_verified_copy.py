"""The copy is checked against the converted disk it came from, on real qemu-img (no appliance).

Faults are injected the way failing storage would make them: one byte of the output file is
changed below its format (at the host offset `qemu-img map` gives for a disk offset), between
the end of the copy and the check. The moment comes from the copier's own events: the first
event of a disk's "verify" phase is sent before anything is read back (copy_disks' contract),
so the tests need no hook in the copier and no wrapper around qemu-img.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from vmshift.blockio import windows
from vmshift.blockio.copier import CopyJob, copy_disks
from vmshift.blockio.overlay import Overlay, create_overlay
from vmshift.blockio.progress import CopyProgress, Event
from vmshift.cli import convert_cmd
from vmshift.cli.main import build_parser
from vmshift.cli.render import ProgressPrinter
from vmshift.errors import CopyError
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import DiskEndpoint, Firmware, SourceVM
from vmshift.pipeline import ConversionResult, RunOptions
from vmshift.report import conversion_report
from vmshift.targets.base import TargetResult

MIB = 1 << 20
SIZE = 64 * MIB
DATA = (0, 5 * MIB, 40 * MIB)  # 1 MiB of random data at each
HOLE = 30 * MIB  # never written: a hole in the source and in a sparse output


@pytest.fixture
def overlay(tmp_path: Path) -> Overlay:
    """An overlay over a sparse raw disk with data at DATA and 4 MiB of written zeros."""
    src = tmp_path / "src.raw"
    with src.open("wb") as f:
        f.truncate(SIZE)
        for offset in DATA:
            f.seek(offset)
            f.write(os.urandom(MIB))
        f.seek(20 * MIB)
        f.write(bytes(4 * MIB))
    return create_overlay(DiskEndpoint(str(src), "raw", SIZE), tmp_path, "sda")


def flip_byte(image: Path, fmt: str, offset: int) -> None:
    """Invert the byte that holds the disk's byte at `offset`, in the file itself."""
    argv = ["qemu-img", "map", "--output=json", "-f", fmt, str(image)]
    extents = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    extent = next(e for e in extents if e["start"] <= offset < e["start"] + e["length"])
    host = extent["offset"] + offset - extent["start"]  # KeyError: not stored in the file
    fd = os.open(image, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, host)[0] ^ 0xFF]), host)
    finally:
        os.close(fd)


def at_verify(action: Callable[[], None], events: list[Event]) -> Callable[[Event], None]:
    """A sink that records events and runs action once, when the check is about to start."""

    def sink(event: Event) -> None:
        # Only the phase's first event: qemu-img's own "(0.00/100%)" follows once it reads.
        first = (
            isinstance(event, CopyProgress)
            and event.phase == "verify"
            and not any(isinstance(e, CopyProgress) and e.phase == "verify" for e in events)
        )
        events.append(event)
        if first:
            action()

    return sink


def phases(events: list[Event]) -> list[str]:
    seen = [e.phase for e in events if isinstance(e, CopyProgress)]
    return [p for i, p in enumerate(seen) if i == 0 or seen[i - 1] != p]


@pytest.mark.parametrize(
    ("fmt", "offset"),
    [("raw", 5 * MIB + 1234), ("raw", HOLE + 7), ("qcow2", 40 * MIB + 4096 + 99)],
    ids=["raw-data", "raw-hole", "qcow2-data"],
)
def test_a_corrupted_copy_fails_naming_disk_and_offset(
    overlay: Overlay, tmp_path: Path, fmt: str, offset: int
) -> None:
    out = tmp_path / f"out.{fmt}"
    events: list[Event] = []
    job = CopyJob(overlay, out, fmt, preallocated=False, label="guest-sda")
    with pytest.raises(CopyError) as caught:
        copy_disks([job], at_verify(lambda: flip_byte(out, fmt, offset), events))
    # qemu-img compare names the first differing 512-byte sector.
    sector = offset - offset % 512
    assert str(caught.value) == (
        f"guest-sda: the copy differs from the converted disk at offset {sector} "
        "(the output was removed)"
    )
    assert caught.value.hint and "storage" in caught.value.hint
    assert not out.exists()
    assert phases(events) == ["copy", "verify"]
    assert not any(isinstance(e, CopyProgress) and e.finished for e in events)


# --- a disk copied in several windows ------------------------------------------------------

WINDOW = 16 * MIB  # 4 windows of SIZE


@pytest.fixture
def windowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Overlay:
    """An overlay over a disk copied in 4 windows (they do not grow): a MiB of random data in
    the first, second and last, the third full of it."""
    monkeypatch.setattr(windows, "WINDOW", WINDOW)
    monkeypatch.setattr(windows, "WINDOW_SECONDS", 0.0)
    src = tmp_path / "src.raw"
    with src.open("wb") as f:
        f.truncate(SIZE)
        for offset, size in ((0, MIB), (20 * MIB, MIB), (2 * WINDOW, WINDOW), (56 * MIB, MIB)):
            f.seek(offset)
            f.write(os.urandom(size))
    return create_overlay(DiskEndpoint(str(src), "raw", SIZE), tmp_path, "sda")


@pytest.mark.parametrize(
    ("fmt", "offset"),
    [
        ("raw", 20 * MIB + 777),  # the second window's data
        ("raw", 30 * MIB + 7),  # the second window's hole
        ("qcow2", 2 * WINDOW + 5 * MIB + 99),  # the third window
        ("raw", 56 * MIB + 4096),  # the last window
        ("qcow2", 56 * MIB + 513),
    ],
    ids=["raw-middle", "raw-middle-hole", "qcow2-middle", "raw-last", "qcow2-last"],
)
def test_a_window_that_differs_fails_at_its_offset_in_the_disk(
    windowed: Overlay, tmp_path: Path, fmt: str, offset: int
) -> None:
    out = tmp_path / f"out.{fmt}"
    events: list[Event] = []
    sink = at_verify(lambda: flip_byte(out, fmt, offset), events)
    with pytest.raises(CopyError) as caught:
        copy_disks([CopyJob(windowed, out, fmt, False, "guest-sda")], sink)
    assert str(caught.value) == (
        f"guest-sda: the copy differs from the converted disk at offset {offset - offset % 512} "
        "(the output was removed)"
    )
    assert not out.exists()
    copied = {e.done for e in events if isinstance(e, CopyProgress) and e.phase == "copy"}
    assert {n * WINDOW for n in range(1, 5)} <= copied  # every window was copied
    assert phases(events) == ["copy", "verify"]


def test_a_cancel_during_the_check_of_a_windowed_copy_leaves_nothing(
    windowed: Overlay, tmp_path: Path
) -> None:
    """Ctrl-C while the check reads the third window: it is stopped, the output removed."""
    out = tmp_path / "out.qcow2"
    seen: list[str] = []

    def sink(event: Event) -> None:
        if isinstance(event, CopyProgress) and event.phase == "verify" and event.done > 2 * WINDOW:
            seen.extend(_processes_naming(out))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_disks([CopyJob(windowed, out, "qcow2", False, "guest-sda")], sink)
    assert any("compare" in p for p in seen), "the check should be running then"
    assert not out.exists()
    assert _processes_naming(out) == [] and _processes_naming(windowed.path) == []


def test_a_cancel_during_the_copy_starts_no_check(windowed: Overlay, tmp_path: Path) -> None:
    """Ctrl-C while the third window is copied: the copy is stopped, nothing is checked or
    left behind."""
    out = tmp_path / "out.raw"
    events: list[Event] = []

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, CopyProgress) and event.done > 2 * WINDOW:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_disks([CopyJob(windowed, out, "raw", False, "guest-sda")], sink)
    assert phases(events) == ["copy"]
    assert not out.exists()
    assert _processes_naming(out) == [] and _processes_naming(windowed.path) == []


def test_a_copy_of_the_wrong_size_fails(overlay: Overlay, tmp_path: Path) -> None:
    """qemu-img compare passes a longer output whose tail is zero: the size is checked apart."""
    out = tmp_path / "out.raw"
    job = CopyJob(overlay, out, "raw", preallocated=False, label="guest-sda")
    with pytest.raises(CopyError, match=rf"guest-sda: the copy is {SIZE + MIB} bytes, the "):
        copy_disks([job], at_verify(lambda: os.truncate(out, SIZE + MIB), []))
    assert not out.exists()


@pytest.mark.parametrize(
    ("fmt", "preallocated", "compressed"),
    [
        ("raw", False, False),
        ("raw", True, False),
        ("qcow2", False, False),
        ("qcow2", True, False),
        ("qcow2", False, True),
    ],
    ids=["raw", "raw-preallocated", "qcow2", "qcow2-preallocated", "qcow2-compressed"],
)
def test_good_copies_verify_clean(
    overlay: Overlay, tmp_path: Path, fmt: str, preallocated: bool, compressed: bool
) -> None:
    out = tmp_path / f"out.{fmt}"
    events: list[Event] = []
    job = CopyJob(overlay, out, fmt, preallocated, "guest-sda", compressed=compressed)
    copy_disks([job], events.append)
    progress = [e for e in events if isinstance(e, CopyProgress)]
    assert phases(events) == ["copy", "verify"]
    check = [e for e in progress if e.phase == "verify"]
    assert check[0].done == 0 and check[-1].done == SIZE and check[-1].finished
    assert [e for e in progress if e.finished] == [check[-1]]
    assert out.exists()


@pytest.fixture
def block_device(tmp_path: Path) -> Iterator[Path]:
    """A loop device 4 MiB larger than the disk (as LVM rounds a volume up), with old data
    past the disk's end, reached through a device node of its own in tmp_path (the copier
    removes its output on failure: that must not be /dev's node)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup")
    backing = tmp_path / "volume.img"
    with backing.open("wb") as f:
        f.truncate(SIZE + 4 * MIB)
        f.seek(SIZE + MIB)
        f.write(b"old data")
    argv = ["losetup", "--find", "--show", str(backing)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    try:
        node = tmp_path / "volume"
        os.mknod(node, 0o600 | stat.S_IFBLK, Path(device).stat().st_rdev)
        yield node
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_a_larger_block_device_is_compared_over_the_disk_only(
    overlay: Overlay, block_device: Path
) -> None:
    events: list[Event] = []
    copy_disks([CopyJob(overlay, block_device, "raw", False, "guest-sda")], events.append)
    assert phases(events) == ["copy", "verify"]
    job = CopyJob(overlay, block_device, "raw", False, "guest-sda")
    with pytest.raises(CopyError, match=f"at offset {40 * MIB} "):
        copy_disks([job], at_verify(lambda: flip_byte(block_device, "raw", 40 * MIB), []))


def test_no_verify_copy_skips_the_check(overlay: Overlay, tmp_path: Path) -> None:
    """Unverified, a byte changed right after the copy goes unnoticed: nothing read it back."""
    out = tmp_path / "out.raw"
    events: list[Event] = []

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, CopyProgress) and event.finished:
            flip_byte(out, "raw", 5 * MIB)

    copy_disks([CopyJob(overlay, out, "raw", False, "guest-sda", verify=False)], sink)
    assert phases(events) == ["copy"]
    assert out.exists()
    same = ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", str(overlay.path), str(out)]
    assert subprocess.run(same, check=False).returncode == 1


def _processes_naming(path: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if os.fsencode(path) in args:
            found.append(b" ".join(args).decode(errors="replace"))
    return found


def test_an_interrupted_check_is_killed_and_the_output_removed(
    overlay: Overlay, tmp_path: Path
) -> None:
    """Ctrl-C arrives while qemu-img compare runs: it is stopped and nothing is left."""
    out = tmp_path / "out.raw"

    def sink(event: Event) -> None:
        if isinstance(event, CopyProgress) and event.phase == "verify" and event.done > 0:
            assert _processes_naming(out), "the check should be running now"
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_disks([CopyJob(overlay, out, "raw", False, "guest-sda")], sink)
    assert not out.exists()
    assert _processes_naming(out) == []


def test_the_option_reaches_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[RunOptions] = []

    class Stop(Exception):
        pass

    def fake_run(source: object, target: object, opts: RunOptions, sink: object) -> None:
        seen.append(opts)
        raise Stop

    monkeypatch.setattr(convert_cmd, "run_conversion", fake_run)
    disk = tmp_path / "g.img"
    disk.write_bytes(bytes(MIB))
    for extra, verify in (([], True), (["--no-verify-copy"], False)):
        args = build_parser().parse_args(
            ["convert", "-q", "-i", "disk", str(disk), "-o", "null", *extra]
        )
        with pytest.raises(Stop):
            convert_cmd.run(args)
        assert seen[-1].verify_copy is verify


def test_machine_readable_lines_name_the_phase(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter(
        quiet=False, machine_readable=True, console=Console(file=io.StringIO())
    )
    printer.event(CopyProgress("sda", "g-sda", SIZE, SIZE))
    printer.event(CopyProgress("sda", "g-sda", 0, SIZE, phase="verify"))
    printer.event(CopyProgress("sda", "g-sda", SIZE, SIZE, finished=True, phase="verify"))
    assert capsys.readouterr().out.splitlines() == [
        f"copy g-sda {SIZE} {SIZE} 100%",
        f"verify g-sda 0 {SIZE} 0%",
        f"verify g-sda {SIZE} {SIZE} 100%",
    ]


def test_the_report_says_whether_the_copy_was_verified() -> None:
    vm = SourceVM("g", 1 << 30, 1, None, Firmware.BIOS, ())
    os_ = OperatingSystem(
        root="/dev/sda1", type="linux", distro="debian", product_name="Debian 12",
        product_variant="", major_version=12, minor_version=0, arch="x86_64", hostname="h",
        package_format="deb", package_manager="apt", osinfo="debian12", firmware="bios",
        mountpoints={"/": "/dev/sda1"}, filesystems=(), applications=(), foreign_software=(),
    )  # fmt: skip
    caps = GuestCaps("virtio-blk", "virtio", "vga", "q35", Firmware.BIOS, "x86_64")
    target = TargetResult("g", "written to /out", (Path("/out/g-sda"),), ())
    for verified in (True, False):
        result = ConversionResult(vm, os_, caps, target, copy_verified=verified)
        assert conversion_report(result, "done")["copy"] == {"verified": verified}
