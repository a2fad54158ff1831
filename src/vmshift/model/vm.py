"""The source guest as vmshift understands it, whatever it was read from (VMX, OVF, libvirt
XML, a bare disk, a physical machine).

Sources fill these in; targets read them. Frozen, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    UNKNOWN = "unknown"  # the source does not say: inspection decides


class Controller(StrEnum):
    """The bus a disk hangs off in the source (what the guest's drivers had to handle)."""

    IDE = "ide"
    SATA = "sata"
    SCSI = "scsi"
    NVME = "nvme"
    VIRTIO_BLK = "virtio-blk"
    VIRTIO_SCSI = "virtio-scsi"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class DiskEndpoint:
    """A disk a copier can read: a local path or an NBD URI, with its format and size."""

    uri: str  # a local path, or nbd+unix:///?socket=...
    format: str  # qemu driver name: raw, qcow2, vmdk ...
    virtual_size: int

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith("nbd")


@dataclass(frozen=True)
class SourceDisk:
    endpoint: DiskEndpoint
    controller: Controller = Controller.UNKNOWN
    # Position on the source controller (e.g. scsi0:1 -> bus 0, unit 1); keeps the disk order.
    bus: int = 0
    unit: int = 0
    # A scsi controller's model in the source (pvscsi, lsilogic, buslogic, lsisas1068).
    controller_model: str | None = None
    name: str = ""  # a short name for progress and output files, e.g. "sda"


@dataclass(frozen=True)
class Removable:
    kind: str  # "cdrom" or "floppy"
    controller: Controller
    bus: int = 0
    unit: int = 0
    source_path: str | None = None  # an ISO on the source side; never copied


@dataclass(frozen=True)
class Nic:
    mac: str | None  # lower-case colon form; None: let the target generate one
    model: str  # source model: vmxnet3, e1000, e1000e, virtio, rtl8139 ...
    network: str | None  # the source's network (VMware port group, libvirt network, bridge)
    network_type: str = "network"  # "network" or "bridge"


@dataclass(frozen=True)
class CpuFeature:
    name: str  # libvirt's name: vmx, avx2, x2apic ...
    policy: str = "require"  # libvirt's <feature policy>: force, require, optional, disable, forbid


@dataclass(frozen=True)
class CpuModel:
    """The CPU model the source guest was given (libvirt <cpu> custom mode); all optional."""

    vendor: str | None = None  # Intel, AMD
    model: str | None = None  # a libvirt/qemu model name: Broadwell, EPYC-Rome ...
    features: tuple[CpuFeature, ...] = ()


@dataclass(frozen=True)
class CpuTopology:
    sockets: int
    cores: int
    threads: int = 1


@dataclass(frozen=True)
class SourceVM:
    name: str
    memory: int  # bytes
    vcpus: int
    topology: CpuTopology | None
    firmware: Firmware
    disks: tuple[SourceDisk, ...]
    removables: tuple[Removable, ...] = ()
    nics: tuple[Nic, ...] = ()
    origin: str = "unknown"  # vmware, libvirt, xen, hyperv, disk, physical
    os_hint: str | None = None  # what the source says the guest OS is (VMX guestOS, OVF osType)
    # Where this was read from, for messages.
    source_file: str | None = None
    # VM generation id in the form libvirt's <genid> and qemu's vmgenid guid take (see
    # docs/convert.md: VMware's two signed halves are byte-swapped into this form).
    genid: str | None = None
    secure_boot: bool = False  # the source's UEFI firmware enforced secure boot
    cpu: CpuModel | None = None  # the CPU model the source described, if it named one
    features: tuple[str, ...] = ()  # hypervisor features the source enabled: acpi, apic, pae
    # Things the source read past (a manifest line it could not parse ...): printed, not fatal.
    warnings: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def read_remotely(self) -> bool:
        """Some disk is read over the network (an nbd endpoint: vSphere, -it ssh): its blocks
        are fetched once (copy-on-read overlays) and its copy is not read again to verify it.
        A source of a remote kind whose disks are files here (-i vmx of local files, an export
        downloaded whole) is read as local files are."""
        return any(not d.endpoint.is_local for d in self.disks)
