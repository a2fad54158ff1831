"""-i ova against real OVAs built here: a streamOptimized VMDK with known data, an OVF, a
manifest, tarred the way ovftool does it (descriptor first), and broken or hostile variants.

Every open() is checked to leave the OVA byte-for-byte as it was, and every disk is read back
through its endpoint by qemu, both directly and through the qcow2 overlay the pipeline puts on
top of it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import shutil
import struct
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import sha256
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


@dataclass(frozen=True)
class Disk:
    href: str
    file_attrs: str = ""  # extra ovf: attributes of its References/File
    capacity: int = DISK_SIZE


def vmware_ovf(disks: Sequence[Disk], *, name: str = "web01") -> bytes:
    files = "".join(
        f'<File ovf:href="{d.href}" ovf:id="file{i}" {d.file_attrs}/>' for i, d in enumerate(disks)
    )
    disk_section = "".join(
        f'<Disk ovf:capacity="{d.capacity}" ovf:diskId="vmdisk{i}" ovf:fileRef="file{i}" '
        'ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>'
        for i, d in enumerate(disks)
    )
    items = "".join(
        f"<Item><rasd:AddressOnParent>{i}</rasd:AddressOnParent>"
        f"<rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>"
        f"<rasd:InstanceID>{10 + i}</rasd:InstanceID><rasd:Parent>3</rasd:Parent>"
        "<rasd:ResourceType>17</rasd:ResourceType></Item>"
        for i in range(len(disks))
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>{files}</References>
  <DiskSection><Info>Virtual disk information</Info>{disk_section}</DiskSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="96" vmw:osType="debian11_64Guest"><Info>os</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>1024</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType></Item>
      {items}
      <Item><rasd:Address>00:50:56:12:34:56</rasd:Address>
        <rasd:Connection>VM Network</rasd:Connection><rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType></Item>
      <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
""".encode()


def manifest(files: dict[str, bytes], alg: str = "sha256", *, spaced: bool = False) -> bytes:
    sep = ("{} ({}) = {}\n", "{}({})= {}\n")[not spaced]
    return "".join(
        sep.format(alg.upper(), name, hashlib.new(alg, data).hexdigest())
        for name, data in files.items()
    ).encode()


def build_ova(path: Path, members: dict[str, bytes], *, fmt: int = tarfile.USTAR_FORMAT) -> Path:
    """Tar members in the order given (the OVF first, as the OVF spec asks)."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


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


# --- OVAs that open ----------------------------------------------------------------------------


def test_sha256_manifest_disk_read_in_place(tmp_path: Path, vmdk: bytes) -> None:
    ova = standard_ova(tmp_path, vmdk)
    vm = open_source(ova, tmp_path)
    assert (vm.name, vm.memory, vm.vcpus, vm.firmware) == ("web01", 1 << 30, 2, Firmware.UEFI)
    assert (vm.origin, vm.source_file, vm.os_hint) == ("vmware", str(ova), "debian11_64Guest")
    assert vm.nics == (Nic("00:50:56:12:34:56", "vmxnet3", "VM Network"),)
    assert vm.extra["manifest"] == "verified"
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


def test_virtualbox_without_manifest(
    tmp_path: Path, vmdk: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # A name past ustar's 100 bytes puts a PAX header before the data: offsets must allow for it.
    disk = "deb12-" + "x" * 120 + "-disk001.vmdk"
    ovf = vmware_ovf([Disk(disk)], name="deb12").replace(
        b"</VirtualSystem>",
        b'<vbox:Machine xmlns:vbox="http://www.virtualbox.org/ovf/machine" name="deb12">'
        b"</vbox:Machine></VirtualSystem>",
    )
    ova = build_ova(tmp_path / "deb12.ova", {"deb12.ovf": ovf, disk: vmdk}, fmt=tarfile.PAX_FORMAT)
    with caplog.at_level(logging.WARNING, logger="vmshift.sources.ova"):
        vm = open_source(ova, tmp_path)
    assert (vm.origin, vm.extra["manifest"]) == ("virtualbox", "absent")
    assert "no manifest" in caplog.text
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
    ovf = vmware_ovf([Disk("d.vmdk")])
    mf = manifest({"vm.ovf": ovf, "d.vmdk": vmdk, "gone.nvram": b"x"})
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "vm.mf": mf, "d.vmdk": vmdk})
    refused(ova, tmp_path, "gone.nvram", "not in the OVA")


def test_ovf_refers_to_a_missing_disk(tmp_path: Path, vmdk: bytes) -> None:
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": vmware_ovf([Disk("d.vmdk")])})
    refused(ova, tmp_path, "d.vmdk", "not in the OVA")


@pytest.mark.parametrize(
    "href", ["../outside.vmdk", "/etc/passwd", "file:///etc/passwd", "http://example.com/d.vmdk"]
)
def test_href_outside_the_package(tmp_path: Path, vmdk: bytes, href: str) -> None:
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": vmware_ovf([Disk(href)]), "d.vmdk": vmdk})
    refused(ova, tmp_path, repr(href), "outside the package")


def test_size_differs_from_the_ovf(tmp_path: Path, vmdk: bytes) -> None:
    ovf = vmware_ovf([Disk("d.vmdk", f'ovf:size="{len(vmdk) + 512}"')])
    ova = build_ova(tmp_path / "vm.ova", {"vm.ovf": ovf, "d.vmdk": vmdk})
    refused(ova, tmp_path, "d.vmdk", f"the OVF says {len(vmdk) + 512}")


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


def test_zip_is_refused_with_a_hint(tmp_path: Path, vmdk: bytes) -> None:
    ova = tmp_path / "vm.ova"
    with zipfile.ZipFile(ova, "w") as z:
        z.writestr("vm.ovf", vmware_ovf([Disk("d.vmdk")]))
    assert "unzip" in (refused(ova, tmp_path, "zip archive").hint or "")


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
