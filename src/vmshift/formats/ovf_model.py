"""What an OVF descriptor says, as frozen dataclasses: the package's files, its disks, the
virtual hardware of its one VirtualSystem. Built by formats/ovf.py; read by sources/ova.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmshift.errors import SourceError
from vmshift.model.vm import Controller, CpuTopology, Firmware, Nic, Removable

VMDK_URL = "http://www.vmware.com/interfaces/specifications/vmdk.html"
_FORMAT_URLS = {
    VMDK_URL: "vmdk",
    "http://www.gnome.org/~markmc/qcow-image-format.html": "qcow2",
    "http://en.wikipedia.org/wiki/Byte": "raw",
}


class OvfError(SourceError):
    """An OVF descriptor or manifest that cannot be parsed, or lacks a part vmshift needs."""

    def __init__(self, path: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"{path}: {problem}", hint=hint)
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class OvfFile:
    """A References/File: one file of the package."""

    file_id: str
    href: str
    size: int | None = None
    compression: str | None = None  # "gzip" when the stored file must be inflated
    chunk_size: int | None = None  # stored as href.000000000, href.000000001 ... when set


@dataclass(frozen=True)
class OvfDisk:
    """A DiskSection/Disk; file is None for an empty disk the importer is to create."""

    disk_id: str
    capacity: int  # bytes
    file: OvfFile | None
    format_url: str | None = None
    populated_size: int | None = None

    @property
    def format(self) -> str | None:
        """The qemu driver the format URL names (vmdk, qcow2, raw), or None if unknown."""
        if not self.format_url:
            return None
        return _FORMAT_URLS.get(self.format_url.split("#", 1)[0])

    @property
    def subformat(self) -> str | None:
        """The URL's fragment: streamOptimized, monolithicSparse ..."""
        if not self.format_url or "#" not in self.format_url:
            return None
        return self.format_url.split("#", 1)[1]


@dataclass(frozen=True)
class OvfController:
    instance_id: str
    kind: Controller
    model: str | None  # lsilogic, pvscsi, lsisas1068, buslogic, piix4, ahci ...
    bus: int  # rasd:Address, else the count of earlier controllers of this kind


@dataclass(frozen=True)
class OvfDiskAttachment:
    """A disk Item (ResourceType 17) with what it refers to resolved."""

    disk: OvfDisk
    controller: OvfController | None  # None: the Item names no (known) Parent
    unit: int
    label: str = ""  # the Item's ElementName, e.g. "Hard disk 1"


@dataclass(frozen=True)
class OvfDescriptor:
    ovf_version: int  # 1 or 2: the envelope namespace's version
    producer: str  # vmware, virtualbox or unknown
    system_id: str  # VirtualSystem ovf:id
    name: str
    os_id: int | None  # the CIM operating system number in OperatingSystemSection
    os_type: str | None  # vmw:osType (e.g. "debian11_64Guest") or vbox:OSType ("Debian_64")
    os_description: str | None
    vcpus: int
    cores_per_socket: int | None
    memory: int  # bytes
    firmware: Firmware
    secure_boot: bool | None
    controllers: tuple[OvfController, ...]
    disks: tuple[OvfDiskAttachment, ...]
    removables: tuple[Removable, ...]
    nics: tuple[Nic, ...]
    files: tuple[OvfFile, ...]  # every File of References, in order
    # VMware's vm.genid/vm.genidX in libvirt's <genid> form (formats/genid.py); None if absent.
    genid: str | None = None
    # What the parser read past (an unparsable vm.genid ...), each naming the descriptor.
    warnings: tuple[str, ...] = ()

    @property
    def topology(self) -> CpuTopology | None:
        cores = self.cores_per_socket
        if not cores or cores < 1 or self.vcpus % cores:
            return None
        return CpuTopology(sockets=self.vcpus // cores, cores=cores)
