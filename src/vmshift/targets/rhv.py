"""-o rhv (aliases rhev, ovirt): the guest into an oVirt/RHV export storage domain, for import.

    <SD_UUID>/images/<IMAGE_UUID>/<VOL_UUID>        one volume per disk
    <SD_UUID>/images/<IMAGE_UUID>/<VOL_UUID>.meta   VDSM's description of it
    <SD_UUID>/master/vms/<VM_UUID>/<VM_UUID>.ovf    the VM, in oVirt's OVF dialect

RHV lists a VM for import as soon as its OVF is there, so nothing appears under those names
until the guest is complete: disks are copied into a hidden staging directory in the domain,
<SD_UUID>/.NAME.vmshift-staging (same filesystem, so moving is a rename), each image directory
is renamed into images/ once its .meta is written, and the VM's directory with the OVF is
renamed into master/vms/ last; no rename replaces anything (fsops.rename_noreplace).

One run per VM name in a domain: check() takes <SD_UUID>/.NAME.vmshift-lock (output_lock.py)
and holds it until finalize() or abort() ends; the staging directory of a run that was killed
is removed by the next run for that name, which says so, and so is what it had moved into
images/ and master/vms/ (recorded in the lock before the first move).
"""

from __future__ import annotations

import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from vmshift.convert.windows.osdirs import SERVER, guest_kind
from vmshift.errors import TargetError
from vmshift.formats.libvirt_xml import effective_topology, source_cpu_model
from vmshift.formats.ovirt_ovf import (
    BiosType,
    DisplayType,
    NicType,
    Origin,
    OvfDisk,
    OvfNic,
    OvirtVm,
    render_ovf,
)
from vmshift.formats.vdsm import SECTOR, VolumeMeta
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import Firmware, SourceVM
from vmshift.targets.base import OutputDisk, TargetOptions, TargetResult
from vmshift.targets.export_domain import ExportDomain, is_nfs_spec
from vmshift.targets.local import check_format_options, output_name, put_into_place
from vmshift.targets.output_lock import OutputLock
from vmshift.targets.ovirt_osinfo import osinfo_name
from vmshift.targets.platform import (
    cpu_model_decision,
    libvirt_knows_cpu_model,
    secure_boot_decision,
)
from vmshift.verify.ovf_domain import ovf_domain_xml

# What RHV data domains can import a volume as (format, allocation); qcow2 preallocated is
# not a volume kind RHV has at all.
DATA_DOMAIN_KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    "nfs": (("raw", "sparse"), ("raw", "preallocated"), ("qcow2", "sparse")),
    "iscsi": (("raw", "preallocated"), ("qcow2", "sparse")),
    "fc": (("raw", "preallocated"), ("qcow2", "sparse")),
}
NEVER = ("qcow2", "preallocated")

DISK_INTERFACES = {
    "virtio-blk": "VirtIO",
    "virtio-scsi": "VirtIO_SCSI",
    "ide": "IDE",
    "sata": "IDE",
}
NIC_TYPES = {
    "virtio": NicType.PV,
    "e1000": NicType.E1000,
    "e1000e": NicType.E1000,
    "rtl8139": NicType.RTL8139,
}
ORIGINS = {
    "vmware": Origin.VMWARE,
    "xen": Origin.XEN,
    "libvirt": Origin.KVM,
    "hyperv": Origin.HYPERV,
    "physical": Origin.PHYSICAL_MACHINE,
}
# A NIC that no --network/--bridge covers keeps its source network's name, or gets this one.
DEFAULT_NETWORK = "ovirtmgmt"


def check_storage_kind(fmt: str, allocation: str, data_domain: str | None) -> None:
    """Refuse a volume kind the RHV data domain (when known: any domain) cannot hold."""
    pair = (fmt, allocation)
    if data_domain is None:
        if pair == NEVER:
            raise TargetError(
                "-of qcow2 -oa preallocated: RHV cannot import preallocated qcow2 volumes",
                hint="use -of raw -oa preallocated, or -of qcow2 -oa sparse",
            )
        return
    allowed = DATA_DOMAIN_KINDS[data_domain]
    if pair not in allowed:
        names = ", ".join(f"-of {f} -oa {a}" for f, a in allowed)
        raise TargetError(
            f"-of {fmt} -oa {allocation}: an {data_domain.upper()} data domain cannot hold "
            f"{fmt} {allocation} volumes",
            hint=f"with --rhv-data-domain-type {data_domain} use one of: {names}",
        )


def bios_type(caps: GuestCaps, secure_boot: bool = False) -> BiosType:
    if caps.firmware == Firmware.UEFI:
        return BiosType.Q35_SECURE_BOOT if secure_boot else BiosType.Q35_OVMF
    return BiosType.Q35_SEA_BIOS if caps.machine == "q35" else BiosType.I440FX_SEA_BIOS


def rhv_platform(vm: SourceVM, caps: GuestCaps) -> tuple[str | None, bool, tuple[str, ...]]:
    """(CustomCpuName or None, secure boot?, warnings).

    The cluster that will run the guest is unknown here, so secure boot is written as asked
    (its hosts need a secure-boot OVMF build) and the CPU model when libvirt knows the name:
    the engine hands CustomCpuName to libvirt on the host. The generation id is not written:
    the engine's OVF reader has no field for it (docs/rhv.md).
    """
    secure_boot, warnings = secure_boot_decision(caps, True, "")
    runnable, why_not = libvirt_knows_cpu_model(vm, caps.arch)
    use, cpu_warnings = cpu_model_decision(vm, runnable, why_not, "the cluster's CPU type")
    model = source_cpu_model(vm)
    name = model.model if use and model is not None else None
    return name, secure_boot, (*warnings, *cpu_warnings)


class RhvTarget:
    def __init__(self, opts: TargetOptions) -> None:
        self._opts = opts
        self._domain: ExportDomain | None = None
        self.name = ""
        self.vm_id = ""
        self._lock: OutputLock | None = None
        self._staging: Path | None = None
        self._moved: list[Path] = []  # final paths this run made; abort removes them

    @property
    def swept(self) -> list[str]:
        """What check() removed that a killed run had left: its mount, its files there."""
        mounts = self._domain.swept if self._domain is not None else []
        return mounts + (self._lock.swept if self._lock is not None else [])

    @property
    def domain(self) -> ExportDomain:
        if self._domain is None:
            raise TargetError("-o rhv: the export domain was not opened (check() not called)")
        return self._domain

    def check(self, vm: SourceVM) -> None:
        if not self._opts.storage:
            raise TargetError(
                "-o rhv needs -os: the export storage domain (HOST:/PATH or a mounted directory)"
            )
        check_format_options(self._opts)
        check_storage_kind(
            self._opts.format, self._opts.allocation, self._opts.rhv_data_domain_type
        )
        self.name = output_name(self._opts, vm)
        for n, disk in enumerate(vm.disks, start=1):
            if disk.endpoint.virtual_size % SECTOR:
                raise TargetError(
                    f"disk {n} ({disk.endpoint.uri}): its size, {disk.endpoint.virtual_size} "
                    f"bytes, is not a whole number of {SECTOR}-byte sectors, as RHV volumes are",
                    hint="resize a copy with qemu-img resize and convert that",
                )
        domain = ExportDomain(self._opts.storage)
        domain.open()
        self._domain = domain
        try:
            staging = re.escape(self._staging_name())
            where = f"-os {self._opts.storage}: VM {self.name}"
            self._lock = OutputLock(domain.root, self.name, staging, where)
            self._lock.acquire()  # before looking at the VMs there
            self._check_name_free()
        except BaseException:
            self.abort()
            raise

    def _check_name_free(self) -> None:
        """RHV tells VMs apart by UUID, so a second import of a name is only noticed late."""
        vms = self.domain.root / "master" / "vms"
        for ovf in sorted(vms.glob("*/*.ovf")):
            try:
                head = ovf.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            if f"<Name>{escape(self.name)}</Name>" in head:
                raise TargetError(
                    f"{ovf}: the export domain already holds a VM named {self.name!r}",
                    hint="remove it from the export domain, or choose another name with -on",
                )

    def setup(self, vm: SourceVM, sizes: list[int]) -> list[OutputDisk]:
        if self._domain is None:
            self.check(vm)
        self.vm_id = str(uuid.uuid4())
        staging = self.domain.root / self._staging_name()
        try:
            staging.mkdir(mode=0o755)
        except OSError as exc:
            raise TargetError(f"{staging}: cannot create: {exc.strerror}") from exc
        self._staging = staging
        outs = []
        for size in sizes:
            image, volume = str(uuid.uuid4()), str(uuid.uuid4())
            image_dir = staging / "images" / image
            image_dir.mkdir(mode=0o755, parents=True)
            outs.append(
                OutputDisk(
                    path=image_dir / volume,
                    final_path=self.domain.root / "images" / image / volume,
                    format=self._opts.format,
                    preallocated=self._opts.allocation == "preallocated",
                    virtual_size=size,
                )
            )
        return outs

    def finalize(
        self, vm: SourceVM, os_: OperatingSystem, caps: GuestCaps, disks: list[OutputDisk]
    ) -> TargetResult:
        try:
            return self._finalize(vm, os_, caps, disks)
        except OSError as exc:
            where = exc.filename or self.domain.root
            raise TargetError(f"{where}: cannot write the guest: {exc.strerror}") from exc

    def _finalize(
        self, vm: SourceVM, os_: OperatingSystem, caps: GuestCaps, disks: list[OutputDisk]
    ) -> TargetResult:
        domain = self.domain
        if self._staging is None:
            raise TargetError("-o rhv: finalize() before setup()")
        created = datetime.now(UTC).replace(microsecond=0)
        ovf_disks = []
        for i, disk in enumerate(disks):
            if not disk.path.exists():
                raise TargetError(f"{disk.path}: the copied disk is missing")
            st = disk.path.stat()
            ovf_disks.append(self._ovf_disk(i, disk, caps, st.st_blocks * 512))
            meta = VolumeMeta(
                domain=domain.sd_uuid,
                image=disk.final_path.parent.name,
                capacity=disk.virtual_size,
                format=_volume_format(disk),
                allocation="PREALLOCATED" if disk.preallocated else "SPARSE",
                description=f"{self.name} disk {i + 1}, converted by vmshift",
                ctime=int(created.timestamp()),
            )
            meta_path = disk.path.with_name(disk.path.name + ".meta")
            meta_path.write_text(meta.render(domain.metadata.version), encoding="utf-8")
            for path in (disk.path, meta_path, disk.path.parent):
                domain.chown(path)

        cpu_name, secure_boot, platform_warnings = rhv_platform(vm, caps)
        ovf = OvirtVm(
            vm_id=self.vm_id,
            name=self.name,
            description=f"{self.name}: converted by vmshift from {vm.origin} on {created:%Y-%m-%d}",
            sd_uuid=domain.sd_uuid,
            created=created,
            os_name=osinfo_name(os_),
            os_description=os_.product_name or os_.distro,
            origin=ORIGINS.get(vm.origin),
            bios_type=bios_type(caps, secure_boot),
            memory_mib=max(1, -(-vm.memory // (1 << 20))),
            **_topology(vm),
            disks=ovf_disks,
            nics=self._nics(vm, caps),
            display=DisplayType.QXL if caps.video == "qxl" else DisplayType.VGA,
            server=_is_server(os_),
            rng=caps.virtio_rng,
            balloon=caps.virtio_balloon,
            custom_cpu_name=cpu_name,
        )
        vm_dir = self._staging / "vms" / self.vm_id
        vm_dir.mkdir(mode=0o755, parents=True)
        ovf_path = vm_dir / f"{self.vm_id}.ovf"
        ovf_path.write_text(render_ovf(ovf), encoding="utf-8")
        domain.chown(ovf_path)
        domain.chown(vm_dir)

        # Images first, the OVF last: RHV must never list a VM whose disks are not all there.
        final_vm = domain.root / "master" / "vms" / self.vm_id
        moves = [*((d.path.parent, d.final_path.parent) for d in disks), (vm_dir, final_vm)]
        if self._lock is not None:
            self._lock.record_finals(moves)  # for the next run to undo if this one is killed
        for src, dst in moves:
            self._move(src, dst)
        # What --verify-boot boots: the OVF as RHV will read it, from the domain. Not for a
        # HOST:/PATH: its private mount ends with this run (--verify-boot refuses it).
        xml = None
        if not is_nfs_spec(self._opts.storage or ""):
            xml = ovf_domain_xml(final_vm / ovf_path.name, domain.root)
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging = None
        if self._lock is not None:
            self._lock.release()
        warnings = platform_warnings
        if domain.ownership.warning:
            warnings += (domain.ownership.warning,)
        # Named as the user knows them: on the NFS export, not on the private mount point.
        files = tuple(
            domain.shown(p) for p in (*[d.final_path for d in disks], final_vm / ovf_path.name)
        )
        domain.close()
        return TargetResult(
            name=self.name,
            description=f"{files[-1]} in export storage domain {self._opts.storage} "
            "(import it in RHV: Storage > Domains > the export domain > VM Import)",
            files=files,
            warnings=warnings,
            domain_xml=xml,
            console_dir=None if xml is None else Path(self._opts.storage or "."),
        )

    def _ovf_disk(self, i: int, disk: OutputDisk, caps: GuestCaps, actual: int) -> OvfDisk:
        return OvfDisk(
            image_id=disk.final_path.parent.name,
            volume_id=disk.final_path.name,
            snapshot_id=str(uuid.uuid4()),
            virtual_size=disk.virtual_size,
            actual_size=actual,
            volume_format=_volume_format(disk),
            volume_type="Preallocated" if disk.preallocated else "Sparse",
            interface=DISK_INTERFACES.get(caps.block_bus, "IDE"),
            boot=i == 0,
        )

    def _nics(self, vm: SourceVM, caps: GuestCaps) -> list[OvfNic]:
        nics = []
        for n, nic in enumerate(vm.nics):
            mapped = self._opts.networks.lookup(nic.mac, nic.network, nic.network_type)
            # RHV has logical networks only: a --bridge mapping names one just the same.
            network = mapped[1] if mapped else (nic.network or DEFAULT_NETWORK)
            nics.append(
                OvfNic(
                    name=f"eth{n}",
                    network=network,
                    mac=nic.mac.lower() if nic.mac else None,
                    nic_type=NIC_TYPES.get(caps.net_model, NicType.E1000),
                )
            )
        return nics

    def _staging_name(self) -> str:
        return f".{self.name}.vmshift-staging"

    def _move(self, src: Path, dst: Path) -> None:
        put_into_place(src, dst)
        self._moved.append(dst)

    def abort(self) -> None:
        for path in reversed(self._moved):
            shutil.rmtree(path, ignore_errors=True)
        self._moved.clear()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._lock is not None:
            self._lock.release()  # before unmounting: it is a file in the domain
        if self._domain is not None:
            self._domain.close()


def _is_server(os_: OperatingSystem) -> bool:
    """VmType: Windows clients are desktops; everything else runs as a server."""
    return os_.type != "windows" or guest_kind(os_.product_variant, os_.product_name) == SERVER


def _topology(vm: SourceVM) -> dict[str, int]:
    topo = effective_topology(vm)
    if topo is None:
        return {"sockets": 1, "cores": max(1, vm.vcpus), "threads": 1}
    return {"sockets": topo.sockets, "cores": topo.cores, "threads": topo.threads}


def _volume_format(disk: OutputDisk) -> str:
    """VDSM's and oVirt's name for the disk's format."""
    return "COW" if disk.format == "qcow2" else "RAW"
