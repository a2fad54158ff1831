"""-i vmx against real VMDKs made by qemu-img: every subformat, snapshot chains, descriptors qemu
would misread, and the errors for bad input. Fast: qemu-img and qemu-io only, no appliance."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.conftest import sha256
from vmshift.errors import DiskImageError, SourceError, UsageError
from vmshift.formats.vmdk_descriptor import read_descriptor
from vmshift.model.vm import Controller, CpuTopology, Firmware, Nic, Removable, SourceVM
from vmshift.sources.base import SourceOptions
from vmshift.sources.vmx import VmxSource

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="needs qemu-img and qemu-io",
)

MIB = 1 << 20
Pattern = Mapping[int, tuple[int, int]]  # offset -> (byte, length)


def _run(*argv: str) -> None:
    subprocess.run(list(argv), check=True, capture_output=True)


def make_vmdk(path: Path, size: int, subformat: str, data: Pattern | None = None) -> Path:
    """A VMDK of subformat holding data (qemu-io writes it; streamOptimized is write-once,
    so that one is converted from a raw file the way such files are usually made)."""
    if subformat != "streamOptimized":
        _run(
            "qemu-img", "create", "-f", "vmdk", "-o", f"subformat={subformat}", str(path), str(size)
        )
        for offset, (byte, length) in (data or {}).items():
            qemu_io_write(path, byte, offset, length)
        _text_only(path)
        return path
    raw = path.with_suffix(".src.raw")
    with raw.open("wb") as f:
        f.truncate(size)
        for offset, (byte, length) in (data or {}).items():
            f.seek(offset)
            f.write(bytes([byte]) * length)
    _run(
        "qemu-img",
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        f"subformat={subformat}",
        str(raw),
        str(path),
    )
    raw.unlink()
    return path


def _text_only(path: Path) -> None:
    """A text descriptor as VMware writes it: no NULs. qemu pads the ones it writes with NULs,
    and rewriting the CID on its first write (unpadded hex, so of varying length) now and then
    leaves one inside the text, which vmshift rightly takes for binary data."""
    data = path.read_bytes()
    if data.startswith(b"# Disk DescriptorFile"):
        path.write_bytes(data.replace(b"\0", b""))


def qemu_io_write(path: Path, byte: int, offset: int, length: int) -> None:
    _run("qemu-io", "-f", "vmdk", "-c", f"write -P {byte:#x} {offset} {length}", str(path))


def snapshot(parent: Path, child: Path, backing: str | None = None) -> Path:
    backing = backing or parent.name  # relative to the child's directory
    _run("qemu-img", "create", "-f", "vmdk", "-b", backing, "-F", "vmdk", str(child))
    return child


def edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, text
    path.write_text(text.replace(old, new))


def edit_embedded(path: Path, old: str, new: str) -> None:
    """Edit the descriptor inside a sparse VMDK (what VMware or ESXi would have written)."""
    data = bytearray(path.read_bytes())
    start = 512 * int.from_bytes(data[28:36], "little")
    size = 512 * int.from_bytes(data[36:44], "little")
    text = bytes(data[start : start + size]).split(b"\0", 1)[0].decode()
    assert old in text, text
    data[start : start + size] = text.replace(old, new).encode().ljust(size, b"\0")
    path.write_bytes(bytes(data))


def write_vmx(
    vm: Path, disks: Mapping[str, str], extra: Sequence[str] = (), name: str = "guest.vmx"
) -> Path:
    lines = ['.encoding = "UTF-8"', 'config.version = "8"', 'virtualHW.version = "19"']
    for slot, file in disks.items():
        lines += [f'{slot}.present = "TRUE"', f'{slot}.fileName = "{file}"']
    path = vm / name
    path.write_text("\n".join([*lines, *extra]) + "\n")
    return path


def sparse_sha256(path: Path) -> str:
    """sha256 over the data regions and where they lie: hashing the holes of a 2 GiB flat
    extent would take seconds and could not differ without a data region appearing."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            f.seek(start)
            h.update(f"{start}-{end}:".encode())
            h.update(f.read(end - start))
            pos = end
    h.update(str(size).encode())
    return h.hexdigest()


def digests(directory: Path) -> dict[str, str]:
    """Every file's content (sha256); big sparse files hashed by their data regions."""
    return {
        p.name: sparse_sha256(p) if p.stat().st_size > 64 * MIB else sha256(p)
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def open_vmx(vmx: Path, workdir: Path) -> SourceVM:
    """Open, and check the source was not written while doing it."""
    before = digests(vmx.parent)
    source = VmxSource(SourceOptions(args=(str(vmx),)))
    try:
        return source.open(workdir)
    finally:
        source.close()
        assert digests(vmx.parent) == before


def read_raw(uri: str, tmp: Path) -> bytes:
    out = tmp / "readback.raw"
    _run("qemu-img", "convert", "-f", "vmdk", "-O", "raw", uri, str(out))
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def assert_data(uri: str, tmp: Path, size: int, data: Pattern) -> None:
    expected = bytearray(size)
    for offset, (byte, length) in data.items():
        expected[offset : offset + length] = bytes([byte]) * length
    assert read_raw(uri, tmp) == expected


@pytest.fixture
def vm(tmp_path: Path) -> Path:
    path = tmp_path / "vm"
    path.mkdir()
    return path


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


# A whole VM --------------------------------------------------------------------------------

FULL_VMX = """\
displayName = "web |22front|22"
guestOS = "ubuntu-64"
memSize = "3072"
numvcpus = "4"
cpuid.coresPerSocket = "2"
firmware = "efi"
uefi.secureBoot.enabled = "TRUE"
uuid.bios = "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
sata0.present = "TRUE"
scsi0:1.present = "TRUE"
scsi0:1.deviceType = "scsi-hardDisk"
scsi0:1.fileName = "logs.vmdk"
scsi0:2.present = "FALSE"
scsi0:2.fileName = "gone.vmdk"
sata0:0.deviceType = "disk"
nvme0.present = "TRUE"
nvme0:0.present = "TRUE"
nvme0:0.fileName = "fast.vmdk"
ide0:0.present = "TRUE"
ide0:0.deviceType = "atapi-cdrom"
ide0:0.fileName = "auto detect"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "/vmfs/volumes/datastore1/iso/ubuntu-22.04.iso"
floppy0.present = "TRUE"
floppy0.fileType = "file"
floppy0.fileName = "drivers.flp"
floppy1.present = "FALSE"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "static"
ethernet0.address = "00:50:56:AB:CD:EF"
ethernet1.present = "TRUE"
ethernet1.virtualDev = "e1000"
ethernet1.networkName = "backup"
ethernet1.addressType = "generated"
ethernet1.generatedAddress = "00-0C-29-12-34-56"
ethernet1.address = "00:50:56:00:00:01"
ethernet2.present = "FALSE"
ethernet2.virtualDev = "e1000e"
"""


def test_whole_vm(vm: Path, work: Path, tmp_path: Path) -> None:
    root = {0: (0xAB, MIB)}
    make_vmdk(vm / "root.vmdk", 64 * MIB, "monolithicSparse", root)
    make_vmdk(vm / "logs.vmdk", 16 * MIB, "monolithicFlat", {MIB: (0x10, MIB)})
    make_vmdk(vm / "data.vmdk", 32 * MIB, "monolithicFlat", {MIB: (0xCD, MIB)})
    make_vmdk(vm / "fast.vmdk", 8 * MIB, "streamOptimized", {0: (0xEF, 4096)})
    disks = {"sata0:0": "data.vmdk", "scsi0:0": "root.vmdk"}  # order in the file is not the order
    vmx = write_vmx(vm, disks, FULL_VMX.splitlines())

    guest = open_vmx(vmx, work)

    assert guest.name == 'web "front"'
    assert guest.memory == 3072 * MIB
    assert guest.vcpus == 4
    assert guest.topology == CpuTopology(sockets=2, cores=2, threads=1)
    assert guest.firmware is Firmware.UEFI
    assert guest.os_hint == "ubuntu-64"
    assert guest.origin == "vmware"
    assert guest.source_file == str(vmx)
    assert guest.secure_boot is True
    assert guest.genid is None
    assert guest.warnings == ()
    assert guest.extra == {
        "vmware.uuid": "56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc",
        "vmware.hw_version": "19",
    }
    layout = [
        (d.name, d.controller, d.bus, d.unit, d.controller_model, d.endpoint.uri)
        for d in guest.disks
    ]
    assert layout == [
        ("sda", Controller.SCSI, 0, 0, "pvscsi", str(vm / "root.vmdk")),
        ("sdb", Controller.SCSI, 0, 1, "pvscsi", str(vm / "logs.vmdk")),
        ("sdc", Controller.SATA, 0, 0, None, str(vm / "data.vmdk")),
        ("sdd", Controller.NVME, 0, 0, None, str(vm / "fast.vmdk")),
    ]
    sizes = [64 * MIB, 16 * MIB, 32 * MIB, 8 * MIB]
    assert [d.endpoint.virtual_size for d in guest.disks] == sizes
    assert all(d.endpoint.format == "vmdk" and d.endpoint.is_local for d in guest.disks)
    assert guest.removables == (
        Removable("cdrom", Controller.IDE, 0, 0, None),
        Removable("cdrom", Controller.IDE, 1, 0, "/vmfs/volumes/datastore1/iso/ubuntu-22.04.iso"),
        Removable("floppy", Controller.UNKNOWN, 0, 0, str(vm / "drivers.flp")),
    )
    assert guest.nics == (
        Nic(mac="00:50:56:ab:cd:ef", model="vmxnet3", network="VM Network"),
        Nic(mac="00:0c:29:12:34:56", model="e1000", network="backup"),
    )
    assert_data(guest.disks[0].endpoint.uri, tmp_path, 64 * MIB, root)
    assert_data(guest.disks[2].endpoint.uri, tmp_path, 32 * MIB, {MIB: (0xCD, MIB)})
    assert not any(work.iterdir()), "nothing needed rewriting"


def test_defaults_when_the_vmx_says_little(vm: Path, work: Path) -> None:
    make_vmdk(vm / "disk.vmdk", 4 * MIB, "monolithicSparse")
    vmx = write_vmx(vm, {"ide0:0": "disk.vmdk"}, ['ethernet0.present = "TRUE"'], name="old.vmx")
    guest = open_vmx(vmx, work)
    assert guest.name == "old"
    assert guest.memory == 32 * MIB
    assert guest.vcpus == 1
    assert guest.topology is None
    assert guest.firmware is Firmware.BIOS  # VMware's default, whatever the disk holds
    assert guest.secure_boot is False
    assert guest.genid is None
    assert guest.os_hint is None
    assert guest.disks[0].controller is Controller.IDE
    assert guest.disks[0].controller_model is None
    assert guest.nics == (Nic(mac=None, model="vlance", network="ethernet0"),)


@pytest.mark.parametrize(("value", "firmware"), [("bios", Firmware.BIOS), ("EFI", Firmware.UEFI)])
def test_firmware(vm: Path, work: Path, value: str, firmware: Firmware) -> None:
    make_vmdk(vm / "disk.vmdk", 4 * MIB, "monolithicSparse")
    vmx = write_vmx(vm, {"scsi0:0": "disk.vmdk"}, [f'firmware = "{value}"'])
    assert open_vmx(vmx, work).firmware is firmware


# Every subformat -----------------------------------------------------------------------------

SUBFORMATS = [
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
    "vmfs",
    "vmfsThin",
]


@pytest.mark.parametrize("subformat", SUBFORMATS)
def test_subformats(vm: Path, work: Path, tmp_path: Path, subformat: str) -> None:
    split = subformat.startswith("twoGb")
    size = 2304 * MIB if split else 16 * MIB  # over 2 GiB: more than one extent
    data: dict[int, tuple[int, int]] = {0: (0xAB, MIB), size - MIB: (0x5A, MIB)}
    disk = vm / "disk.vmdk"
    make_vmdk(disk, size, "monolithicFlat" if subformat.startswith("vmfs") else subformat, data)
    if subformat.startswith("vmfs"):  # what ESXi writes: no offset on VMFS extent lines
        edit_text(disk, 'createType="monolithicFlat"', f'createType="{subformat}"')
        edit_text(disk, 'FLAT "disk-flat.vmdk" 0', 'VMFS "disk-flat.vmdk"')
    if split:
        assert len(read_descriptor(disk).extents) == 2
    vmx = write_vmx(vm, {"scsi0:0": "disk.vmdk"}, ['scsi0.virtualDev = "lsilogic"'])

    guest = open_vmx(vmx, work)

    (only,) = guest.disks
    assert only.endpoint.format == "vmdk"
    assert only.endpoint.virtual_size == size
    assert only.controller_model == "lsilogic"
    if subformat == "vmfsThin":  # qemu does not know the createType: a rewritten descriptor
        assert Path(only.endpoint.uri).parent.parent == work
        assert read_descriptor(Path(only.endpoint.uri)).create_type == "vmfs"
    else:
        assert only.endpoint.uri == str(disk)
    if split:  # reading 2 GiB back is slow: check the two ends
        _run(
            "qemu-io",
            "-r",
            "-f",
            "vmdk",
            "-c",
            f"read -P 0xab 0 {MIB}",
            "-c",
            f"read -P 0x5a {size - MIB} {MIB}",
            "-c",
            f"read -P 0 {MIB} {MIB}",
            only.endpoint.uri,
        )
    else:
        assert_data(only.endpoint.uri, tmp_path, size, data)


# Snapshot chains ---------------------------------------------------------------------------

# What the guest sees at the top of make_chain's chain: each layer hides part of the one below.
CHAIN_DATA = {
    0: (0xAB, MIB),  # base only
    MIB: (0xCD, MIB),  # first snapshot
    2 * MIB: (0x22, MIB // 2),  # second snapshot, over the base's 0x11
    5 * MIB // 2: (0x11, MIB // 2),  # the rest of the base's write
}


def make_chain(vm: Path) -> tuple[Path, Path, Path]:
    base = make_vmdk(vm / "guest.vmdk", 16 * MIB, "monolithicSparse", {0: (0xAB, MIB)})
    qemu_io_write(base, 0x11, 2 * MIB, MIB)
    first = snapshot(base, vm / "guest-000001.vmdk")
    qemu_io_write(first, 0xCD, MIB, MIB)
    second = snapshot(first, vm / "guest-000002.vmdk")
    qemu_io_write(second, 0x22, 2 * MIB, MIB // 2)
    return base, first, second


def test_snapshot_chain_exposes_the_current_state(vm: Path, work: Path, tmp_path: Path) -> None:
    _, first, second = make_chain(vm)
    assert read_descriptor(first).parent_filename_hint == "guest.vmdk"
    assert read_descriptor(second).parent_filename_hint == "guest-000001.vmdk"
    vmx = write_vmx(vm, {"scsi0:0": second.name})

    (disk,) = open_vmx(vmx, work).disks

    assert disk.endpoint.uri == str(second)
    assert disk.endpoint.virtual_size == 16 * MIB
    assert_data(disk.endpoint.uri, tmp_path, 16 * MIB, CHAIN_DATA)


def test_chain_with_esxi_absolute_parent_paths(vm: Path, work: Path, tmp_path: Path) -> None:
    _, first, second = make_chain(vm)
    edit_embedded(first, '"guest.vmdk"', '"/vmfs/volumes/ds1/guest/guest.vmdk"')
    edit_embedded(second, '"guest-000001.vmdk"', '"C:\\VMs\\guest\\guest-000001.vmdk"')
    vmx = write_vmx(vm, {"scsi0:0": "/vmfs/volumes/ds1/guest/guest-000002.vmdk"})

    (disk,) = open_vmx(vmx, work).disks

    top = Path(disk.endpoint.uri)
    assert top.is_relative_to(work), "qemu cannot follow those paths: descriptors rewritten"
    assert read_descriptor(top).parent_filename_hint == str(work / "vmx" / "sda-1.vmdk")
    assert_data(disk.endpoint.uri, tmp_path, 16 * MIB, CHAIN_DATA)


def test_rdonly_and_zero_extents_read_as_vmware_reads_them(
    vm: Path, work: Path, tmp_path: Path
) -> None:
    disk = make_vmdk(vm / "disk.vmdk", MIB, "monolithicFlat", {0: (0xAB, MIB)})
    zero_tail = 'RDONLY 2048 FLAT "disk-flat.vmdk"\nRW 2048 ZERO'
    edit_text(disk, 'RW 2048 FLAT "disk-flat.vmdk" 0', zero_tail)
    vmx = write_vmx(vm, {"scsi0:0": "disk.vmdk"})
    (only,) = open_vmx(vmx, work).disks
    assert only.endpoint.virtual_size == 2 * MIB
    assert_data(only.endpoint.uri, tmp_path, 2 * MIB, {0: (0xAB, MIB)})


def test_absolute_extent_path_of_a_file_copied_next_to_it(
    vm: Path, work: Path, tmp_path: Path
) -> None:
    disk = make_vmdk(vm / "disk.vmdk", MIB, "monolithicFlat", {0: (0x77, MIB)})
    edit_text(disk, '"disk-flat.vmdk"', '"/vmfs/volumes/ds1/web/disk-flat.vmdk"')
    vmx = write_vmx(vm, {"scsi0:0": "disk.vmdk"})
    (only,) = open_vmx(vmx, work).disks
    assert Path(only.endpoint.uri).is_relative_to(work)
    assert_data(only.endpoint.uri, tmp_path, MIB, {0: (0x77, MIB)})


def test_vmfs_extent_with_an_offset(vm: Path, work: Path, tmp_path: Path) -> None:
    disk = make_vmdk(vm / "disk.vmdk", 2 * MIB, "monolithicFlat", {MIB: (0x42, MIB)})
    edit_text(disk, 'createType="monolithicFlat"', 'createType="vmfs"')
    edit_text(disk, 'RW 4096 FLAT "disk-flat.vmdk" 0', 'RW 2048 VMFS "disk-flat.vmdk" 2048')
    vmx = write_vmx(vm, {"scsi0:0": "disk.vmdk"})
    (only,) = open_vmx(vmx, work).disks
    assert Path(only.endpoint.uri).is_relative_to(work)
    assert_data(only.endpoint.uri, tmp_path, MIB, {0: (0x42, MIB)})


# Bad input -----------------------------------------------------------------------------------


def expect_error(vmx: Path, work: Path, kind: type[SourceError], *words: str) -> str:
    before = digests(vmx.parent) if vmx.parent.is_dir() else {}
    with pytest.raises(kind) as info:
        VmxSource(SourceOptions(args=(str(vmx),))).open(work)
    message = str(info.value)
    assert message.startswith(f"{vmx}: "), message
    assert "\n" not in message
    for word in words:
        assert word in message, message
    if before:
        assert digests(vmx.parent) == before
    return message


def test_missing_vmdk(vm: Path, work: Path) -> None:
    vmx = write_vmx(vm, {"scsi0:0": "gone.vmdk"})
    expect_error(vmx, work, DiskImageError, "disk scsi0:0", '"gone.vmdk" not found')


def test_missing_extent(vm: Path, work: Path) -> None:
    make_vmdk(vm / "guest.vmdk", MIB, "monolithicFlat")
    (vm / "guest-flat.vmdk").unlink()
    vmx = write_vmx(vm, {"scsi0:0": "guest.vmdk"})
    message = expect_error(vmx, work, DiskImageError)
    assert message == f'{vmx}: disk scsi0:0 guest.vmdk: extent "guest-flat.vmdk" not found'


def test_missing_extent_of_a_parent(vm: Path, work: Path) -> None:
    base = make_vmdk(vm / "base.vmdk", MIB, "monolithicFlat")
    snapshot(base, vm / "base-000001.vmdk")
    (vm / "base-flat.vmdk").unlink()
    vmx = write_vmx(vm, {"sata0:0": "base-000001.vmdk"})
    expect_error(
        vmx,
        work,
        DiskImageError,
        'disk sata0:0 base-000001.vmdk: parent "base.vmdk": extent "base-flat.vmdk" not found',
    )


def test_missing_parent(vm: Path, work: Path) -> None:
    base = make_vmdk(vm / "base.vmdk", MIB, "monolithicSparse")
    snapshot(base, vm / "base-000001.vmdk")
    base.unlink()
    vmx = write_vmx(vm, {"scsi0:0": "base-000001.vmdk"})
    expect_error(vmx, work, DiskImageError, 'base-000001.vmdk: parent "base.vmdk" not found')


def test_parent_changed_after_the_snapshot(vm: Path, work: Path) -> None:
    base = make_vmdk(vm / "base.vmdk", MIB, "monolithicSparse")
    snapshot(base, vm / "base-000001.vmdk")
    qemu_io_write(base, 0x99, 0, 4096)  # a new CID in the parent
    vmx = write_vmx(vm, {"scsi0:0": "base-000001.vmdk"})
    expect_error(vmx, work, DiskImageError, "CID mismatch")


def test_bad_extent_line(vm: Path, work: Path) -> None:
    disk = make_vmdk(vm / "guest.vmdk", MIB, "monolithicFlat")
    edit_text(disk, "RW 2048 FLAT", "RW 2O48 FLAT")
    vmx = write_vmx(vm, {"scsi0:0": "guest.vmdk"})
    expect_error(
        vmx,
        work,
        DiskImageError,
        f"{disk}: line 8: bad extent line",
        'RW 2O48 FLAT "guest-flat.vmdk" 0',
    )


def test_absolute_extent_path_to_a_host_file(vm: Path, work: Path) -> None:
    disk = make_vmdk(vm / "guest.vmdk", MIB, "monolithicFlat")
    edit_text(disk, '"guest-flat.vmdk"', '"/etc/passwd"')
    vmx = write_vmx(vm, {"scsi0:0": "guest.vmdk"})
    expect_error(vmx, work, DiskImageError, '"/etc/passwd"', "absolute path on the source host")


def test_absolute_vmx_file_name(vm: Path, work: Path) -> None:
    make_vmdk(vm / "guest.vmdk", MIB, "monolithicSparse")
    found = write_vmx(vm, {"scsi0:0": "/vmfs/volumes/ds1/guest/guest.vmdk"})
    assert open_vmx(found, work).disks[0].endpoint.uri == str(vm / "guest.vmdk")
    missing = write_vmx(vm, {"scsi0:0": "/vmfs/volumes/ds2/other/other.vmdk"}, name="o.vmx")
    expect_error(missing, work, DiskImageError, "disk scsi0:0", '"other.vmdk" next to it')


def test_dotdot_paths(tmp_path: Path, vm: Path, work: Path) -> None:
    outside = make_vmdk(tmp_path / "outside.vmdk", MIB, "monolithicFlat")
    vmx = write_vmx(vm, {"scsi0:0": "../outside.vmdk"})
    expect_error(vmx, work, DiskImageError, '"../outside.vmdk"', '".." is not allowed')

    disk = make_vmdk(vm / "guest.vmdk", MIB, "monolithicFlat")
    edit_text(disk, '"guest-flat.vmdk"', '"../outside-flat.vmdk"')
    vmx = write_vmx(vm, {"scsi0:0": "guest.vmdk"}, name="b.vmx")
    expect_error(vmx, work, DiskImageError, "extent", '".." is not allowed')

    (vm / "sub").mkdir()
    snapshot(outside, vm / "sub" / "delta.vmdk", "../../outside.vmdk")
    assert read_descriptor(vm / "sub" / "delta.vmdk").parent_filename_hint == "../../outside.vmdk"
    vmx = write_vmx(vm, {"scsi0:0": "sub/delta.vmdk"}, name="c.vmx")
    expect_error(vmx, work, DiskImageError, "parent", '".." is not allowed')


def test_raw_device_mapping_and_noaccess(vm: Path, work: Path) -> None:
    disk = make_vmdk(vm / "guest.vmdk", MIB, "monolithicFlat")
    edit_text(disk, 'createType="monolithicFlat"', 'createType="vmfsPassthroughRawDeviceMap"')
    edit_text(disk, 'FLAT "guest-flat.vmdk" 0', 'VMFSRDM "guest-flat.vmdk"')
    vmx = write_vmx(vm, {"scsi0:0": "guest.vmdk"})
    expect_error(vmx, work, DiskImageError, "raw device mapping")
    other = make_vmdk(vm / "other.vmdk", MIB, "monolithicFlat")
    edit_text(other, "RW 2048", "NOACCESS 2048")
    vmx = write_vmx(vm, {"scsi0:0": "other.vmdk"}, name="n.vmx")
    expect_error(vmx, work, DiskImageError, "NOACCESS")


def test_snapshot_loop(vm: Path, work: Path) -> None:
    base = make_vmdk(vm / "base.vmdk", MIB, "monolithicSparse")
    delta = snapshot(base, vm / "base-000001.vmdk")
    edit_embedded(delta, 'parentFileNameHint="base.vmdk"', 'parentFileNameHint="base-000001.vmdk"')
    edit_embedded(delta, "parentCID=", "parentCID=ffffffff\n#")
    vmx = write_vmx(vm, {"scsi0:0": "base-000001.vmdk"})
    expect_error(vmx, work, DiskImageError, "loops")


def test_truncated_sparse_vmdk(vm: Path, work: Path) -> None:
    disk = make_vmdk(vm / "guest.vmdk", 4 * MIB, "monolithicSparse", {0: (0xAB, MIB)})
    with disk.open("r+b") as f:
        f.truncate(200_000)
    vmx = write_vmx(vm, {"scsi0:0": "guest.vmdk"})
    expect_error(vmx, work, DiskImageError, "disk scsi0:0", f"{disk}: damaged vmdk image")


def test_vmdk_that_is_no_descriptor(vm: Path, work: Path) -> None:
    _run("qemu-img", "create", "-f", "qcow2", str(vm / "guest.vmdk"), "1M")
    vmx = write_vmx(vm, {"scsi0:0": "guest.vmdk"})
    expect_error(vmx, work, DiskImageError, "not a VMDK descriptor")


def test_no_disks(vm: Path, work: Path) -> None:
    vmx = write_vmx(
        vm, {"ide1:0": "ubuntu.iso"}, ['ide1:0.deviceType = "cdrom-image"', 'memsize = "1024"']
    )
    expect_error(vmx, work, SourceError, "no disks found")


def test_unreadable_vmx(vm: Path, work: Path) -> None:
    expect_error(vm / "nope.vmx", work, SourceError, "no such file")
    expect_error(vm, work, SourceError, "is a directory")
    bad = vm / "bad.vmx"
    bad.write_text('displayName = "x"\nscsi0:0.present "TRUE"\n')
    expect_error(bad, work, SourceError, "line 2", 'expected key = "value"')
    bad.write_text('memsize = "lots"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "d.vmdk"\n')
    make_vmdk(vm / "d.vmdk", MIB, "monolithicSparse")
    expect_error(bad, work, SourceError, "line 1", "memsize")
    if os.geteuid() != 0:
        locked = write_vmx(vm, {}, name="locked.vmx")
        locked.chmod(0)
        expect_error(locked, work, SourceError, "permission denied")


def test_source_options() -> None:
    with pytest.raises(UsageError):
        VmxSource(SourceOptions(args=("a.vmx", "b.vmx")))
    with pytest.raises(UsageError):
        VmxSource(SourceOptions(args=("a.vmx",), transport="ssh"))
