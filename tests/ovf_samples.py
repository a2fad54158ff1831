"""OVF descriptors, manifests and OVA archives shared by the tests that need a VMware export.

vmware_ovf() writes what ovftool writes for a plain VM (trimmed of Info/Description noise): one
pvscsi controller with the disks given on it, a vmxnet3 NIC, firmware and other VMX keys as
vmw:Config / vmw:ExtraConfig. build_ova() tars members in the order given (the OVF first, as
the OVF spec asks); build_zip_ova() zips them, as some exporters do.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MIB = 1 << 20
VMDK_STREAM = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


@dataclass(frozen=True)
class SampleDisk:
    href: str
    file_attrs: str = ""  # extra ovf: attributes of its References/File, e.g. 'ovf:size="1"'
    capacity: int = 8 * MIB
    format_url: str = VMDK_STREAM


def vmware_ovf(
    disks: Sequence[SampleDisk],
    *,
    name: str = "web01",
    vcpus: int = 2,
    cores_per_socket: int | None = None,
    memory_mb: int = 1024,
    os_id: int = 96,
    os_type: str = "debian11_64Guest",
    nics: Sequence[tuple[str, str]] = (("00:50:56:12:34:56", "VM Network"),),
    config: Mapping[str, str] | None = None,
    extra_config: Mapping[str, str] | None = None,
) -> bytes:
    """An ovftool-style descriptor. nics: (MAC, Connection) pairs; config: vmw:Config keys
    (default: firmware efi); extra_config: vmw:ExtraConfig keys (VMX keys such as vm.genid)."""
    config = {"firmware": "efi"} if config is None else config
    files = "".join(
        f'<File ovf:href="{d.href}" ovf:id="file{i}" {d.file_attrs}/>' for i, d in enumerate(disks)
    )
    disk_section = "".join(
        f'<Disk ovf:capacity="{d.capacity}" ovf:diskId="vmdisk{i}" ovf:fileRef="file{i}" '
        f'ovf:format="{d.format_url}"/>'
        for i, d in enumerate(disks)
    )
    cores = (
        f'<vmw:CoresPerSocket ovf:required="false">{cores_per_socket}</vmw:CoresPerSocket>'
        if cores_per_socket
        else ""
    )
    items = "".join(
        f"<Item><rasd:AddressOnParent>{i}</rasd:AddressOnParent>"
        f"<rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>"
        f"<rasd:InstanceID>{10 + i}</rasd:InstanceID><rasd:Parent>3</rasd:Parent>"
        "<rasd:ResourceType>17</rasd:ResourceType></Item>"
        for i in range(len(disks))
    )
    nic_items = "".join(
        f"<Item><rasd:Address>{mac}</rasd:Address>"
        f"<rasd:Connection>{network}</rasd:Connection>"
        f"<rasd:InstanceID>{100 + i}</rasd:InstanceID>"
        "<rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>"
        "<rasd:ResourceType>10</rasd:ResourceType></Item>"
        for i, (mac, network) in enumerate(nics)
    )
    vmw = "".join(
        f'<vmw:{kind} ovf:required="false" vmw:key="{key}" vmw:value="{value}"/>'
        for kind, keys in (("Config", config), ("ExtraConfig", extra_config or {}))
        for key, value in keys.items()
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
    <OperatingSystemSection ovf:id="{os_id}" vmw:osType="{os_type}"><Info>os</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{vcpus}</rasd:VirtualQuantity>{cores}</Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{memory_mb}</rasd:VirtualQuantity></Item>
      <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType></Item>
      {items}
      {nic_items}
      {vmw}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
""".encode()


def manifest(files: Mapping[str, bytes], alg: str = "sha256", *, spaced: bool = False) -> bytes:
    """ovftool's `SHA256(name)= hex` lines, or `SHA1 (name) = hex` as other exporters write."""
    line = "{} ({}) = {}\n" if spaced else "{}({})= {}\n"
    return "".join(
        line.format(alg.upper(), name, hashlib.new(alg, data).hexdigest())
        for name, data in files.items()
    ).encode()


def _pairs(members: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return list(members.items()) if isinstance(members, Mapping) else list(members)


def build_ova(
    path: Path,
    members: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
    *,
    fmt: int = tarfile.USTAR_FORMAT,
) -> Path:
    """Tar members in the order given."""
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, data in _pairs(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def build_zip_ova(
    path: Path,
    members: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
    *,
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    """Zip members in the order given."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in _pairs(members):
            z.writestr(name, data)
    return path
