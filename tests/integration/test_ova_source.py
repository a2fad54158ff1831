"""-i ova against real OVAs built here: a streamOptimized VMDK with known data, an OVF, a
manifest, tarred the way ovftool does it (descriptor first) or zipped, the quirks of real
exports virt-v2v reads (snapshot files, per-disk manifests, stray manifest lines, wrong
ovf:size), and broken or hostile variants.

Every open() is checked to leave the OVA byte-for-byte as it was, and every disk is read back
through its endpoint by qemu, both directly and through the qcow2 overlay the pipeline puts on
top of it.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import stat
import struct
import subprocess
import tarfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import sha256
from tests.ovf_samples import SampleDisk as Disk
from tests.ovf_samples import build_ova, build_zip_ova, manifest, vmware_ovf
from vmshift.blockio.overlay import create_overlay
from vmshift.errors import DiskImageError, SourceError
from vmshift.model.vm import Controller, DiskEndpoint, Firmware, Nic, SourceVM
from vmshift.sources.base import SourceOptions
from vmshift.sources.ova import OvaSource

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="needs qemu-img and qemu-io",
)

MiB = 1 << 20
DISK_SIZE = 8 * MiB
EXPECTED = b"\xcd" * MiB + bytes(DISK_SIZE - MiB)  # what qemu-io wrote, then zeroes


def _run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)


@pytest.fixture(scope="module")
def vmdk(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A streamOptimized VMDK, as ovftool exports, holding 1 MiB of 0xcd then zeroes."""
    work = tmp_path_factory.mktemp("vmdk")
    _run("qemu-img", "create", "-f", "vmdk", work / "base.vmdk", str(DISK_SIZE))
    _run("qemu-io", "-f", "vmdk", "-c", "write -P 0xcd 0 1M", work / "base.vmdk")
    _run(
        "qemu-img",
        "convert",
        "-f",
        "vmdk",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        work / "base.vmdk",
        work / "disk.vmdk",
    )
    return (work / "disk.vmdk").read_bytes()


def standard_ova(tmp: Path, vmdk: bytes, *, alg: str = "sha256", spaced: bool = False) -> Path:
    ovf = vmware_ovf([Disk("web01-disk1.vmdk", f'ovf:size="{len(vmdk)}"')])
    files = {"web01.ovf": ovf, "web01-disk1.vmdk": vmdk}
    mf = manifest(files, alg, spaced=spaced)
    return build_ova(
        tmp / "web01.ova", {"web01.ovf": ovf, "web01.mf": mf, "web01-disk1.vmdk": vmdk}
    )


def open_source(source: Path, tmp: Path) -> SourceVM:
    """open() the way the pipeline does, checking the source is untouched afterwards."""
    before = _fingerprint(source)
    workdir = tmp / "work"
    workdir.mkdir(exist_ok=True)
    src = OvaSource(SourceOptions(args=(str(source),)))
    try:
        return src.open(workdir)
    finally:
        src.close()
        assert _fingerprint(source) == before, "open() changed the source"


def _fingerprint(source: Path) -> dict[str, str]:
    files = sorted(source.rglob("*")) if source.is_dir() else [source]
    return {str(f): sha256(f) for f in files if f.is_file() and not f.is_symlink()}


def refused(
    source: Path, tmp: Path, *words: str, error: type[SourceError] = SourceError
) -> SourceError:
    with pytest.raises(error) as info:
        open_source(source, tmp)
    message = str(info.value)
    assert message.startswith(f"{source}: "), message
    for word in words:
        assert word in message, message
    return info.value


def read_back(endpoint: DiskEndpoint, tmp: Path) -> bytes:
    out = tmp / "readback.raw"
    out.unlink(missing_ok=True)
    _run("qemu-img", "convert", "-f", endpoint.format, "-O", "raw", endpoint.uri, out)
    return out.read_bytes()


def read_through_overlay(endpoint: DiskEndpoint, tmp: Path) -> bytes:
    """What the pipeline does: a qcow2 overlay backed by the endpoint, written to, read back."""
    overlay = tmp / "overlay.qcow2"
    overlay.unlink(missing_ok=True)
    _run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        endpoint.uri,
        "-F",
        endpoint.format,
        overlay,
    )
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 4M 64k", overlay)
    data = read_back(DiskEndpoint(str(overlay), "qcow2", DISK_SIZE), tmp)
    assert data[4 * MiB : 4 * MiB + 65536] == b"\x11" * 65536
    return data[: 4 * MiB] + data[4 * MiB + 65536 :]


UNWRITTEN = EXPECTED[: 4 * MiB] + EXPECTED[4 * MiB + 65536 :]
QCOW2_URL = "http://www.gnome.org/~markmc/qcow-image-format.html"
RAW_URL = "http://en.wikipedia.org/wiki/Byte"


# --- OVAs that open ----------------------------------------------------------------------------


def test_sha256_manifest_disk_read_in_place(tmp_path: Path, vmdk: bytes) -> None:
    ova = standard_ova(tmp_path, vmdk)
    vm = open_source(ova, tmp_path)
    assert (vm.name, vm.memory, vm.vcpus, vm.firmware) == ("web01", 1 << 30, 2, Firmware.UEFI)
    assert (vm.origin, vm.source_file, vm.os_hint) == ("vmware", str(ova), "debian11_64Guest")
    assert vm.nics == (Nic("00:50:56:12:34:56", "vmxnet3", "VM Network", "bridge"),)
    assert vm.extra["manifest"] == "verified"
    assert (vm.warnings, vm.genid, vm.secure_boot) == ((), None, False)
    (disk,) = vm.disks
    assert (disk.controller, disk.controller_model, disk.bus, disk.unit, disk.name) == (
        Controller.SCSI,
        "pvscsi",
        0,
        0,
        "sda",
    )
    endpoint = disk.endpoint
    assert (endpoint.format, endpoint.virtual_size) == ("vmdk", DISK_SIZE)
    # Read in place: a slice of the OVA itself, at the member's data offset.
    with tarfile.open(ova) as tar:
        member = tar.getmember("web01-disk1.vmdk")
    spec = json.loads(endpoint.uri.removeprefix("json:"))
    assert spec == {
        "file": {
            "driver": "raw",
            "offset": member.offset_data,
            "size": len(vmdk),
            "file": {"driver": "file", "filename": str(ova.resolve()), "read-only": True},
        }
    }
    assert not any((tmp_path / "work").iterdir()), "nothing should be copied into workdir"
    assert read_back(endpoint, tmp_path) == EXPECTED
    assert read_through_overlay(endpoint, tmp_path) == UNWRITTEN
    # And through the pipeline's own overlay stage.
    overlay = create_overlay(endpoint, tmp_path, disk.name)
    assert read_back(DiskEndpoint(str(overlay.path), "qcow2", DISK_SIZE), tmp_path) == EXPECTED


def test_sha1_manifest_with_spaces_and_two_disks(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("disk-a.vmdk"), Disk("disk-b.vmdk")])
    files = {"vm.ovf": ovf, "disk-a.vmdk": vmdk, "disk-b.vmdk": vmdk}
    ova = build_ova(
        tmp_path / "vm.ova", {"vm.ovf": ovf, "vm.mf": manifest(files, "sha1", spaced=True), **files}
    )
    vm = open_source(ova, tmp_path)
    assert [(d.name, d.unit) for d in vm.disks] == [("sda", 0), ("sdb", 1)]
    for disk in vm.disks:
        assert read_back(disk.endpoint, tmp_path) == EXPECTED


@pytest.mark.parametrize("attr", ['ovf:compression="gzip"', ""])
def test_gzip_disk_inflated_into_workdir(tmp_path: Path, vmdk: bytes, attr: str) -> None:
    packed = gzip.compress(vmdk)
    ovf = vmware_ovf([Disk("web01-disk1.vmdk.gz", f'ovf:size="{len(packed)}" {attr}')])
    files = {"web01.ovf": ovf, "web01-disk1.vmdk.gz": packed}
    ova = build_ova(tmp_path / "gz.ova", {"web01.ovf": ovf, "web01.mf": manifest(files), **files})
    (disk,) = open_source(ova, tmp_path).disks
    assert Path(disk.endpoint.uri).parent == tmp_path / "work"
    assert Path(disk.endpoint.uri).read_bytes() == vmdk
    assert read_through_overlay(disk.endpoint, tmp_path) == UNWRITTEN


def test_chunked_disk_joined(tmp_path: Path, vmdk: bytes) -> None:
    chunk = 65536
    chunks = {
        f"web01-disk1.vmdk.{i:09d}": vmdk[o : o + chunk]
        for i, o in enumerate(range(0, len(vmdk), chunk))
    }
    attrs = f'ovf:size="{len(vmdk)}" ovf:chunkSize="{chunk}"'
    ovf = vmware_ovf([Disk("web01-disk1.vmdk", attrs)])
    files = {"web01.ovf": ovf, **chunks}
    ova = build_ova(
        tmp_path / "chunked.ova", {"web01.ovf": ovf, "web01.mf": manifest(files), **chunks}
    )
    (disk,) = open_source(ova, tmp_path).disks
    assert read_back(disk.endpoint, tmp_path) == EXPECTED


def test_unpacked_directory(tmp_path: Path, vmdk: bytes) -> None:
    ova = standard_ova(tmp_path, vmdk)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(ova) as tar:
        tar.extractall(unpacked)
    for source in (unpacked, unpacked / "web01.ovf"):
        (disk,) = open_source(source, tmp_path).disks
        spec = json.loads(disk.endpoint.uri.removeprefix("json:"))
        assert spec["file"]["filename"] == str((unpacked / "web01-disk1.vmdk").resolve())
        assert read_through_overlay(disk.endpoint, tmp_path) == UNWRITTEN


def test_gzip_compressed_tar(tmp_path: Path, vmdk: bytes) -> None:
    plain = standard_ova(tmp_path, vmdk)
    ova = tmp_path / "packed.ova"
    ova.write_bytes(gzip.compress(plain.read_bytes()))
    vm = open_source(ova, tmp_path)
    assert vm.source_file == str(ova)
    assert read_back(vm.disks[0].endpoint, tmp_path) == EXPECTED


def test_virtualbox_without_manifest(tmp_path: Path, vmdk: bytes) -> None:
    # A name past ustar's 100 bytes puts a PAX header before the data: offsets must allow for it.
    disk = "deb12-" + "x" * 120 + "-disk001.vmdk"
    ovf = vmware_ovf([Disk(disk)], name="deb12").replace(
        b"</VirtualSystem>",
        b'<vbox:Machine xmlns:vbox="http://www.virtualbox.org/ovf/machine" name="deb12">'
        b"</vbox:Machine></VirtualSystem>",
    )
    ova = build_ova(tmp_path / "deb12.ova", {"deb12.ovf": ovf, disk: vmdk}, fmt=tarfile.PAX_FORMAT)
    vm = open_source(ova, tmp_path)
    assert (vm.origin, vm.extra["manifest"]) == ("virtualbox", "absent")
    assert vm.warnings == (f"{ova}: no manifest (.mf); checksums cannot be checked",)
    assert read_back(vm.disks[0].endpoint, tmp_path) == EXPECTED


def test_blank_disk_is_created(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk")]).replace(b' ovf:fileRef="file0"', b"")
    ova = build_ova(tmp_path / "blank.ova", {"vm.ovf": ovf})
    (disk,) = open_source(ova, tmp_path).disks
    assert (disk.endpoint.format, disk.endpoint.virtual_size) == ("qcow2", DISK_SIZE)
    assert read_back(disk.endpoint, tmp_path) == bytes(DISK_SIZE)


# --- OVAs that are refused, cleanly, naming the OVA --------------------------------------------


def test_wrong_checksum(tmp_path: Path, vmdk: bytes) -> None:
    ova = standard_ova(tmp_path, vmdk)
    data = bytearray(ova.read_bytes())
    at = data.index(b"SHA256(web01-disk1.vmdk)= ") + 26
    data[at : at + 1] = b"0" if data[at : at + 1] != b"0" else b"1"
    ova.write_bytes(data)
    refused(ova, tmp_path, "web01-disk1.vmdk", "SHA256 checksum does not match")


def test_corrupt_disk_data(tmp_path: Path, vmdk: bytes) -> None:
    damaged = bytearray(vmdk)
    damaged[-2048] ^= 0xFF
    ovf = vmware_ovf([Disk("d.vmdk")])
    files = {"vm.ovf": ovf, "d.vmdk": vmdk}
    ova = build_ova(
        tmp_path / "bad.ova",
        {"vm.ovf": ovf, "vm.mf": manifest(files, "sha1"), "d.vmdk": bytes(damaged)},
    )
    refused(ova, tmp_path, "d.vmdk", "SHA1 checksum does not match")


def test_disk_missing_from_manifest(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk")])
    ova = build_ova(
        tmp_path / "vm.ova", {"vm.ovf": ovf, "vm.mf": manifest({"vm.ovf": ovf}), "d.vmdk": vmdk}
    )
    refused(ova, tmp_path, "d.vmdk", "not listed in the manifest")


def test_manifest_lists_a_missing_file(tmp_path: Path, vmdk: bytes) -> None:
    # As virt-v2v: a warning (VMware lists files its OVAs lack), every other line verified.
    ovf = vmware_ovf([Disk("d.vmdk")])
    mf = manifest({"vm.ovf": ovf, "d.vmdk": vmdk, "gone.nvram": b"x"})
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "vm.mf": mf, "d.vmdk": vmdk})
    vm = open_source(ova, tmp_path)
    assert vm.warnings == (
        f"{ova}: the manifest vm.mf lists gone.nvram, which is not in the OVA (ignored)",
    )
    assert read_back(vm.disks[0].endpoint, tmp_path) == EXPECTED


def test_ovf_refers_to_a_missing_disk(tmp_path: Path, vmdk: bytes) -> None:
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": vmware_ovf([Disk("d.vmdk")])})
    refused(ova, tmp_path, "d.vmdk", "not in the OVA")


@pytest.mark.parametrize(
    "href", ["../outside.vmdk", "/etc/passwd", "file:///etc/passwd", "http://example.com/d.vmdk"]
)
def test_href_outside_the_package(tmp_path: Path, vmdk: bytes, href: str) -> None:
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": vmware_ovf([Disk(href)]), "d.vmdk": vmdk})
    refused(ova, tmp_path, repr(href), "outside the package")


@pytest.mark.parametrize("delta", [512, -512, 1])
def test_wrong_ovf_size_of_a_whole_image_is_a_warning(
    tmp_path: Path, vmdk: bytes, delta: int
) -> None:
    ovf = vmware_ovf([Disk("d.vmdk", f'ovf:size="{len(vmdk) + delta}"')])
    files = {"vm.ovf": ovf, "d.vmdk": vmdk}
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "vm.mf": manifest(files), **files})
    vm = open_source(ova, tmp_path)
    assert vm.warnings == (
        f"{ova}: d.vmdk: {len(vmdk)} bytes, but the OVF says {len(vmdk) + delta}; the image "
        "itself is whole, so the OVF's size is ignored",
    )
    assert read_back(vm.disks[0].endpoint, tmp_path) == EXPECTED


def test_truncated_stream_vmdk_is_refused(tmp_path: Path, vmdk: bytes) -> None:
    # A download cut short after its last grain: the tar around it is sound, the OVF's size is
    # the whole file's, and only the missing end-of-stream marker tells.
    end = (max(i for i, b in enumerate(vmdk) if b) // 512 + 1) * 512
    ovf = vmware_ovf([Disk("d.vmdk", f'ovf:size="{len(vmdk)}"')])
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "d.vmdk": vmdk[:end]})
    refused(ova, tmp_path, "d.vmdk", "end-of-stream marker", "truncated", error=DiskImageError)


def test_truncated_sparse_vmdk_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "d.vmdk"
    _run("qemu-img", "create", "-q", "-f", "vmdk", image, str(DISK_SIZE))
    _run("qemu-io", "-f", "vmdk", "-c", "write -P 0xcd 0 1M", image)  # its last grain is data
    data = image.read_bytes()
    ovf = vmware_ovf([Disk("d.vmdk", f'ovf:size="{len(data)}"')])
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "d.vmdk": data[:-512]})
    refused(ova, tmp_path, "d.vmdk", "past its end", "truncated", error=DiskImageError)


@pytest.mark.parametrize("cut", [0, 512])
def test_raw_image_with_a_wrong_ovf_size(tmp_path: Path, cut: int) -> None:
    data = EXPECTED[: DISK_SIZE - cut]
    ovf = vmware_ovf([Disk("d.img", f'ovf:size="{DISK_SIZE + 1}"', format_url=RAW_URL)])
    files = {"vm.ovf": ovf, "d.img": data}
    ova = build_ova(tmp_path / "vm.ova", {**files, "vm.mf": manifest(files)})
    if cut:
        refused(ova, tmp_path, "d.img", "truncated", error=DiskImageError)
    else:
        vm = open_source(ova, tmp_path)
        assert [w.split(": ", 1)[1] for w in vm.warnings] == [
            f"d.img: {DISK_SIZE} bytes, but the OVF says {DISK_SIZE + 1}; the image itself is "
            "whole, so the OVF's size is ignored"
        ]
        assert read_back(vm.disks[0].endpoint, tmp_path) == EXPECTED


@pytest.mark.parametrize(("cut", "words"), [(512, "past its end"), (65536, "damaged")])
def test_truncated_qcow2_is_refused(tmp_path: Path, cut: int, words: str) -> None:
    image = tmp_path / "d.qcow2"
    _run("qemu-img", "create", "-q", "-f", "qcow2", image, str(DISK_SIZE))
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 0 2M", image)  # data to its last cluster
    data = image.read_bytes()
    ovf = vmware_ovf([Disk("d.qcow2", f'ovf:size="{len(data)}"', format_url=QCOW2_URL)])
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "d.qcow2": data[:-cut]})
    refused(ova, tmp_path, "d.qcow2", words, "truncated", error=DiskImageError)


def _member(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        data = b"" if kind != tarfile.REGTYPE else b"pwned\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


@pytest.mark.parametrize(
    ("add", "words"),
    [
        (_member("../evil", tarfile.REGTYPE), "'../evil' has a '..' component"),
        (_member("dir/../../evil", tarfile.REGTYPE), "'..' component"),
        (_member("/abs", tarfile.REGTYPE), "'/abs' has an absolute path"),
        (_member("web01-link.vmdk", tarfile.SYMTYPE, "/etc/shadow"), "is a link"),
        (_member("hard.vmdk", tarfile.LNKTYPE, "web01.ovf"), "is a link"),
        (_member("sda", tarfile.BLKTYPE), "device"),
        (_member("pipe", tarfile.FIFOTYPE), "device, FIFO"),
        (_member("web01.ovf", tarfile.REGTYPE), "appears twice"),
    ],
)
def test_unsafe_members(
    tmp_path: Path, vmdk: bytes, add: Callable[[tarfile.TarFile], None], words: str
) -> None:
    ova = standard_ova(tmp_path, vmdk)
    with tarfile.open(ova, "a", format=tarfile.USTAR_FORMAT) as tar:
        add(tar)
    refused(ova, tmp_path, "refusing OVA", words)
    assert not any((tmp_path / "work").iterdir())
    assert not (tmp_path / "evil").exists() and not Path("/abs").exists()


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write sparse members")
@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_sparse_member(tmp_path: Path, vmdk: bytes, fmt: str) -> None:
    ova = standard_ova(tmp_path, vmdk)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(ova) as tar:
        tar.extractall(unpacked)
    with (unpacked / "web01-disk1.vmdk").open("r+b") as f:
        f.truncate(64 * MiB)  # a hole GNU tar records as a sparse map, not as data
    _run(
        "tar",
        "--sparse",
        f"--format={fmt}",
        "-cf",
        ova,
        "-C",
        unpacked,
        "web01.ovf",
        "web01.mf",
        "web01-disk1.vmdk",
    )
    refused(ova, tmp_path, "refusing OVA", "'web01-disk1.vmdk' is a GNU sparse file")


def test_truncated_ova(tmp_path: Path, vmdk: bytes) -> None:
    ova = standard_ova(tmp_path, vmdk)
    with ova.open("r+b") as f:
        f.truncate(ova.stat().st_size - 20 * 1024)
    refused(ova, tmp_path, "truncated")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"these are not the sectors you are looking for\n", "not a readable tar archive"),
        (b"", "not a readable tar archive"),
    ],
)
def test_not_a_tar(tmp_path: Path, content: bytes, words: str) -> None:
    ova = tmp_path / "notes.ova"
    ova.write_bytes(content)
    refused(ova, tmp_path, words)


def test_no_or_several_descriptors(tmp_path: Path, vmdk: bytes) -> None:
    ova = build_ova(tmp_path / "none.ova", {"d.vmdk": vmdk})
    refused(ova, tmp_path, "no OVF descriptor")
    ovf = vmware_ovf([Disk("d.vmdk")])
    ova = build_ova(tmp_path / "two.ova", {"a.ovf": ovf, "b.ovf": ovf, "d.vmdk": vmdk})
    refused(ova, tmp_path, "several OVF descriptors")


def test_malformed_descriptor_names_ova_and_member(tmp_path: Path, vmdk: bytes) -> None:
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": b"<Envelope><oops></Envelope>"})
    refused(ova, tmp_path, f"{tmp_path / 'vm.ova'}: vm.ovf: not well-formed XML")


def _with_descriptor(vmdk: bytes, descriptor: str, *, capacity: int | None = None) -> bytes:
    """The VMDK with its embedded descriptor replaced (and the header's capacity, if given)."""
    data = bytearray(vmdk)
    offset = struct.unpack_from("<Q", data, 28)[0] * 512
    size = struct.unpack_from("<Q", data, 36)[0] * 512
    text = descriptor.encode()
    data[offset : offset + size] = text + bytes(size - len(text))
    if capacity is not None:
        struct.pack_into("<Q", data, 12, capacity)
    return bytes(data)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        # A sparse header without capacity makes qemu follow the descriptor's extent lines.
        (
            lambda v: _with_descriptor(
                v,
                "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID="
                'ffffffff\ncreateType="monolithicFlat"\nRW 16 FLAT "/etc/hostname" 0\n',
                capacity=0,
            ),
            "points at other files",
        ),
        # A parent hint makes qemu open it as a backing file.
        (
            lambda v: _with_descriptor(
                v,
                "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=2\n"
                'parentFileNameHint="/etc/hostname"\ncreateType="streamOptimized"\n'
                'RW 16384 SPARSE "d.vmdk"\n',
            ),
            "backing file",
        ),
        (
            lambda v: (
                b"# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n"
                b'createType="monolithicFlat"\nRW 16 FLAT "/etc/hostname" 0\n'
            ),
            "descriptor naming",
        ),
        (lambda v: b"\0" * 4096, "no VMDK or qcow2 header"),
    ],
)
def test_disks_that_reach_outside_are_refused(
    tmp_path: Path, vmdk: bytes, make: Callable[[bytes], bytes], words: str
) -> None:
    ova = build_ova(
        tmp_path / "vm.ova", {"vm.ovf": vmware_ovf([Disk("d.vmdk")]), "d.vmdk": make(vmdk)}
    )
    refused(ova, tmp_path, "d.vmdk", words, error=DiskImageError)


# --- what VMware and other exporters write, read as virt-v2v reads it -------------------------


def test_vmware_snapshot_files_stand_in_for_the_named_disk(tmp_path: Path, vmdk: bytes) -> None:
    # The OVF names web01-disk1.vmdk; the OVA holds only its snapshot files. The highest number
    # is read; a look-alike of another name is not.
    ovf = vmware_ovf([Disk("web01-disk1.vmdk")])
    files = {
        "web01.ovf": ovf,
        "web01-disk1.vmdk.000000000": b"an older state, not a disk image",
        "web01-disk1.vmdk.000000001": vmdk,
        "xweb01-disk1.vmdk.000000002": b"another file",
    }
    ova = build_ova(tmp_path / "snap.ova", {"web01.ovf": ovf, "web01.mf": manifest(files), **files})
    vm = open_source(ova, tmp_path)
    assert vm.warnings == ()
    assert read_back(vm.disks[0].endpoint, tmp_path) == EXPECTED


def test_snapshot_file_when_the_manifest_lists_the_absent_name(tmp_path: Path, vmdk: bytes) -> None:
    # What RHBZ#1570407 reported: the manifest lists disk1.vmdk, the OVA holds disk1.vmdk.N.
    ovf = vmware_ovf([Disk("disk1.vmdk")])
    mf = manifest({"vm.ovf": ovf, "disk1.vmdk": vmdk})
    ova = build_ova(
        tmp_path / "snap.ova", {"vm.ovf": ovf, "vm.mf": mf, "disk1.vmdk.000000009": vmdk}
    )
    vm = open_source(ova, tmp_path)
    assert vm.warnings == (
        f"{ova}: the manifest vm.mf lists disk1.vmdk, which is not in the OVA (ignored)",
        f"{ova}: disk1.vmdk.000000009 is read for disk1.vmdk, which a manifest lists but the OVA "
        "lacks (a VMware snapshot file); its checksum cannot be checked",
    )
    assert read_back(vm.disks[0].endpoint, tmp_path) == EXPECTED


def test_snapshot_file_in_no_manifest_is_refused(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("disk1.vmdk")])
    mf = manifest({"vm.ovf": ovf})
    ova = build_ova(
        tmp_path / "snap.ova", {"vm.ovf": ovf, "vm.mf": mf, "disk1.vmdk.000000001": vmdk}
    )
    refused(ova, tmp_path, "disk1.vmdk.000000001", "not listed in the manifest")


def test_unparsable_manifest_lines_are_warnings(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk")])
    good = manifest({"vm.ovf": ovf, "d.vmdk": vmdk})
    mf = b"MD5(d.vmdk)= 0123\n" + good + b"# exported by hand\n"
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "vm.mf": mf, "d.vmdk": vmdk})
    vm = open_source(ova, tmp_path)
    assert vm.warnings == (
        f"{ova}: vm.mf: line 1 is not a checksum vmshift can read (ignored): 'MD5(d.vmdk)= 0123'",
        f"{ova}: vm.mf: line 4 is not a checksum vmshift can read (ignored): '# exported by hand'",
    )
    assert vm.extra["manifest"] == "verified"


def test_unparsable_lines_do_not_excuse_a_wrong_digest(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk")])
    mf = b"garbage\n" + manifest({"vm.ovf": ovf, "d.vmdk": vmdk + b"x"})
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "vm.mf": mf, "d.vmdk": vmdk})
    refused(ova, tmp_path, "d.vmdk", "SHA256 checksum does not match the manifest vm.mf")


def test_many_unparsable_lines_are_counted(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk")])
    mf = b"junk\n" * 8 + manifest({"vm.ovf": ovf, "d.vmdk": vmdk})
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "vm.mf": mf, "d.vmdk": vmdk})
    vm = open_source(ova, tmp_path)
    assert len(vm.warnings) == 6
    assert (
        vm.warnings[-1]
        == f"{ova}: vm.mf: 3 more lines are not checksums vmshift can read (ignored)"
    )


def test_one_manifest_per_disk(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("disk-a.vmdk"), Disk("disk-b.vmdk")])
    members = {
        "vm.ovf": ovf,
        "vm.mf": manifest({"vm.ovf": ovf}),
        "disk-a.mf": manifest({"disk-a.vmdk": vmdk}, "sha1"),
        "disk-b.mf": manifest({"disk-b.vmdk": vmdk}, "sha512"),
        "disk-a.vmdk": vmdk,
        "disk-b.vmdk": vmdk,
    }
    vm = open_source(build_ova(tmp_path / "vm.ova", members), tmp_path)
    assert (vm.warnings, vm.extra["manifest"]) == ((), "verified")
    assert [read_back(d.endpoint, tmp_path) == EXPECTED for d in vm.disks] == [True, True]


def test_every_manifest_is_verified(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("disk-a.vmdk"), Disk("disk-b.vmdk")])
    members = {
        "vm.ovf": ovf,
        "vm.mf": manifest({"vm.ovf": ovf, "disk-a.vmdk": vmdk}),
        "disk-b.mf": manifest({"disk-b.vmdk": vmdk[:-1]}),
        "disk-a.vmdk": vmdk,
        "disk-b.vmdk": vmdk,
    }
    ova = build_ova(tmp_path / "vm.ova", members)
    refused(ova, tmp_path, "disk-b.vmdk", "checksum does not match the manifest disk-b.mf")


def test_vmx_keys_genid_and_secure_boot(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf(
        [Disk("d.vmdk")],
        config={"firmware": "efi", "bootOptions.efiSecureBootEnabled": "true"},
        extra_config={"vm.genid": "-8536374250620066363", "vm.genidX": "1365420504334508194"},
    )
    files = {"vm.ovf": ovf, "d.vmdk": vmdk}
    vm = open_source(build_ova(tmp_path / "vm.ova", {**files, "vm.mf": manifest(files)}), tmp_path)
    assert (vm.firmware, vm.secure_boot) == (Firmware.UEFI, True)
    assert vm.genid == "c1ffe5c5-b4d8-8988-a2a0-e4e1b6f2f212"
    assert "secure_boot" not in vm.extra
    assert vm.warnings == ()


def test_unparsable_genid_is_a_warning(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk")], extra_config={"vm.genid": "1", "vm.genidX": "high"})
    files = {"vm.ovf": ovf, "d.vmdk": vmdk}
    ova = build_ova(tmp_path / "vm.ova", {**files, "vm.mf": manifest(files)})
    vm = open_source(ova, tmp_path)
    assert vm.genid is None
    assert vm.warnings == (
        f'{ova}: vm.ovf: vm.genidX "high" is not a signed 64-bit number; the VM generation id '
        "is not carried over",
    )


# --- zip OVAs -----------------------------------------------------------------------------------


def _zip_data_offset(ova: Path, name: str) -> int:
    with zipfile.ZipFile(ova) as z:
        info = z.getinfo(name)
    with ova.open("rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack_from("<HH", header, 26)
    return int(info.header_offset) + 30 + int(name_len) + int(extra_len)


def test_zip_stored_disk_read_in_place(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("web01-disk1.vmdk", f'ovf:size="{len(vmdk)}"')])
    files = {"web01.ovf": ovf, "web01-disk1.vmdk": vmdk}
    ova = build_zip_ova(
        tmp_path / "web01.ova", {"web01.ovf": ovf, "web01.mf": manifest(files), **files}
    )
    vm = open_source(ova, tmp_path)
    assert (vm.name, vm.extra["manifest"], vm.warnings) == ("web01", "verified", ())
    (disk,) = vm.disks
    spec = json.loads(disk.endpoint.uri.removeprefix("json:"))
    assert spec == {
        "file": {
            "driver": "raw",
            "offset": _zip_data_offset(ova, "web01-disk1.vmdk"),
            "size": len(vmdk),
            "file": {"driver": "file", "filename": str(ova.resolve()), "read-only": True},
        }
    }
    assert not any((tmp_path / "work").iterdir()), "nothing should be copied into workdir"
    assert read_back(disk.endpoint, tmp_path) == EXPECTED
    assert read_through_overlay(disk.endpoint, tmp_path) == UNWRITTEN


def test_zip_deflated_disk_inflated_into_workdir(tmp_path: Path, vmdk: bytes) -> None:
    # Zipped with its folder, as a "send to compressed folder" does; hrefs are OVF-relative.
    ovf = vmware_ovf([Disk("disk1.vmdk")])
    files = {"vm.ovf": ovf, "disk1.vmdk": vmdk}
    members = {f"vm/{n}": d for n, d in {"vm.ovf": ovf, "vm.mf": manifest(files), **files}.items()}
    ova = build_zip_ova(tmp_path / "vm.ova", members, compression=zipfile.ZIP_DEFLATED)
    vm = open_source(ova, tmp_path)
    (disk,) = vm.disks
    assert Path(disk.endpoint.uri).parent == tmp_path / "work"
    assert Path(disk.endpoint.uri).read_bytes() == vmdk
    assert read_through_overlay(disk.endpoint, tmp_path) == UNWRITTEN


def test_zip_wrong_checksum(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk")])
    mf = manifest({"vm.ovf": ovf, "d.vmdk": vmdk[::-1]})
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        ova = build_zip_ova(
            tmp_path / f"vm{compression}.ova",
            {"vm.ovf": ovf, "vm.mf": mf, "d.vmdk": vmdk},
            compression=compression,
        )
        refused(ova, tmp_path, "d.vmdk", "SHA256 checksum does not match")


def _zip_entry(name: str, mode: int = 0) -> Callable[[zipfile.ZipFile], None]:
    def add(z: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo(name)
        if mode:
            info.create_system, info.external_attr = 3, mode << 16
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile's "Duplicate name" is the point here
            z.writestr(info, b"/etc/shadow" if stat.S_ISLNK(mode) else b"pwned\n")

    return add


@pytest.mark.parametrize(
    ("add", "words"),
    [
        (_zip_entry("../evil"), "'../evil' has a '..' component"),
        (_zip_entry("/abs"), "'/abs' has an absolute path"),
        (_zip_entry("dir\\evil"), "unusable name"),
        (_zip_entry("link.vmdk", stat.S_IFLNK | 0o777), "is a link"),
        (_zip_entry("sda", stat.S_IFBLK | 0o600), "device"),
        (_zip_entry("pipe", stat.S_IFIFO | 0o600), "device, FIFO"),
        (_zip_entry("web01.ovf"), "appears twice"),
    ],
)
def test_unsafe_zip_members(
    tmp_path: Path, vmdk: bytes, add: Callable[[zipfile.ZipFile], None], words: str
) -> None:
    ovf = vmware_ovf([Disk("web01-disk1.vmdk")])
    files = {"web01.ovf": ovf, "web01-disk1.vmdk": vmdk}
    ova = build_zip_ova(tmp_path / "web01.ova", {"web01.mf": manifest(files), **files})
    with zipfile.ZipFile(ova, "a") as z:
        add(z)
    refused(ova, tmp_path, "refusing OVA", words)
    assert not any((tmp_path / "work").iterdir())
    assert not (tmp_path / "evil").exists() and not Path("/abs").exists()


def test_encrypted_zip_member(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk")])
    data = bytearray(
        build_zip_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "d.vmdk": vmdk}).read_bytes()
    )
    # Set the "encrypted" flag of the last member (d.vmdk) in both its headers.
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        header = data.rindex(signature)
        data[header + at] |= 1
    ova = tmp_path / "vm.ova"
    ova.write_bytes(data)
    refused(ova, tmp_path, "refusing OVA", "'d.vmdk' is encrypted")


def test_truncated_zip(tmp_path: Path, vmdk: bytes) -> None:
    ova = build_zip_ova(
        tmp_path / "vm.ova", {"vm.ovf": vmware_ovf([Disk("d.vmdk")]), "d.vmdk": vmdk}
    )
    with ova.open("r+b") as f:
        f.truncate(ova.stat().st_size - 4096)
    refused(ova, tmp_path, "not a readable zip archive", "truncated")


@pytest.mark.parametrize("archive", ["tar", "zip", "zip-last"])
def test_qcow2_of_unaligned_size(tmp_path: Path, archive: str) -> None:
    # qemu slices whole sectors: a qcow2 whose size is not one is read in place from a slice
    # rounded up when the archive has bytes to spare after it, else copied into workdir.
    image = tmp_path / "d.qcow2"
    _run("qemu-img", "create", "-q", "-f", "qcow2", image, str(DISK_SIZE))
    data = image.read_bytes()
    assert len(data) % 512
    ovf = vmware_ovf([Disk("d.qcow2", f'ovf:size="{len(data)}"', format_url=QCOW2_URL)])
    if archive == "tar":
        ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "d.qcow2": data})
    else:
        padding = {"notes.txt": bytes(1024)} if archive == "zip" else {}
        ova = build_zip_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "d.qcow2": data, **padding})
    (disk,) = open_source(ova, tmp_path).disks
    copied = not disk.endpoint.uri.startswith("json:")
    assert copied == (archive == "zip-last")
    assert (disk.endpoint.format, read_back(disk.endpoint, tmp_path)) == ("qcow2", bytes(DISK_SIZE))
