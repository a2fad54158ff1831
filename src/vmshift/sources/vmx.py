"""-i vmx: a VMware guest described by a .vmx file, with its VMDKs on a local filesystem, or
with -it ssh on an ESXi host's datastore read over SSH (vmx_ssh.py).

The VMX gives the hardware; each disk's VMDK descriptor (and, for a snapshot, the chain of
parent descriptors) is checked before anything opens it: every extent and parent must exist
and no file name may reach outside the VM's directory. qemu then reads the disk as the VMX
names it; it follows the extents and the snapshot chain itself, so the endpoint of a disk
with snapshots is its current state.

Where qemu would misread a descriptor that VMware reads fine (a file named by an absolute
ESXi path but copied next to the VMX, a RDONLY or ZERO extent, a createType qemu does not
know), an equivalent descriptor is written under workdir and the endpoint names that one.
Source files are only ever opened read-only.

The files are read through a transport (vmx_files.py): the checks here are the same for a
local VM and one read over SSH; the transport says how qemu then gets at each disk's data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePath

from vmshift.blockio.imageinfo import probe_image
from vmshift.errors import DiskImageError, SourceError, UsageError
from vmshift.formats.file_references import (
    UnsafeReference,
    is_absolute_reference,
    resolve_reference,
)
from vmshift.formats.vmdk_descriptor import (
    CREATE_TYPES,
    Extent,
    VmdkDescriptor,
    VmdkDescriptorError,
    format_descriptor,
    read_descriptor_from,
)
from vmshift.formats.vmx import VmxFile, load_vmx
from vmshift.model.devnames import scsi_disk_name
from vmshift.model.vm import (
    Controller,
    DiskEndpoint,
    Removable,
    SourceDisk,
    SourceVM,
)
from vmshift.sources import vmx_hardware as hw
from vmshift.sources.base import RemoteSource, ReopenableSource, SourceOptions
from vmshift.sources.vmx_files import CheckedDisk, Layer, LocalFiles, VmxTransport

MIB = 1 << 20
MAX_VMX = 16 * MIB  # a VMX is a few KiB; a bigger file was named by mistake
MAX_CHAIN = 255  # VMware's own limit on the depth of a snapshot chain
# VMware's defaults when the VMX does not say.
DEFAULT_MEMORY_MIB = 32
CDROM_TYPES = frozenset({"cdrom-image", "atapi-cdrom", "cdrom-raw"})

# createTypes whose data is not in files vmshift could copy.
# fmt: off
DEVICE_CREATE_TYPES = frozenset({
    "vmfsRaw", "vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap", "fullDevice", "partitionedDevice"
})
UNSUPPORTED_CREATE_TYPES = frozenset({"vsanSparse", "custom"})
# The text-descriptor createTypes qemu's vmdk driver accepts.
QEMU_CREATE_TYPES = frozenset({
    "monolithicFlat", "vmfs", "vmfsSparse", "seSparse", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"
})
# fmt: on


class VmxSource:
    """Reads a .vmx file and the VMDKs it names (see the module docstring)."""

    def __init__(self, opts: SourceOptions) -> None:
        if len(opts.args) != 1:
            what = "ssh:// URI" if opts.transport == "ssh" else ".vmx file"
            raise UsageError(f"-i vmx takes exactly one argument: the guest's {what}")
        self._transport: VmxTransport
        if opts.transport is None:
            self._transport = _LocalTransport(opts.args[0])
        elif opts.transport == "ssh":
            from vmshift.sources.vmx_ssh import SshTransport

            self._transport = SshTransport(opts)
        else:
            raise UsageError(f"-i vmx: -it {opts.transport} is not supported (-it ssh is)")
        self._files = self._transport.files
        self.display = self._transport.display
        self.path = self._transport.vmx_path

    def open(self, workdir: Path) -> SourceVM:
        vmx = self._load()
        disks = [self._check_disk(vmx, slot) for slot in hw.disk_slots(vmx)]
        if not disks:
            raise SourceError(
                f"{self.display}: no disks found (no present scsiN:M, sataN:M, ideN:M or "
                "nvmeN:M hard disk)"
            )
        for disk in disks:
            self._transport.accept(disk, self._where(disk.slot))
        # Every disk's files were checked above, before anything is written or probed.
        source_disks = tuple(
            self._expose(disk, workdir, scsi_disk_name(i)) for i, disk in enumerate(disks)
        )
        warnings: list[str] = []
        vcpus = vmx.get_int("numvcpus", 1)
        memory_mib = vmx.get_int("memsize", DEFAULT_MEMORY_MIB)
        if vcpus < 1 or memory_mib < 1:
            raise SourceError(f"{self.display}: numvcpus and memsize must be positive")
        return SourceVM(
            name=vmx.get("displayname") or self.path.stem,
            memory=memory_mib * MIB,
            vcpus=vcpus,
            topology=hw.topology(vmx, vcpus),
            firmware=hw.firmware(vmx, warnings),
            disks=source_disks,
            removables=self._removables(vmx),
            nics=hw.nics(vmx),
            origin="vmware",
            os_hint=vmx.get("guestos") or None,
            source_file=self._transport.source_file,
            genid=hw.genid(vmx, warnings),
            secure_boot=vmx.get_bool("uefi.secureboot.enabled"),
            warnings=tuple(warnings),
            extra=hw.extra(vmx),
        )

    def fetched(self) -> dict[str, int]:
        """What crossed the network (RemoteSource): -it ssh; nothing for local files."""
        return self._transport.fetched() if isinstance(self._transport, RemoteSource) else {}

    def lost(self) -> SourceError | None:
        return self._transport.lost() if isinstance(self._transport, RemoteSource) else None

    def identity(self) -> tuple[str, ...] | None:
        """ReopenableSource.identity() of -it ssh; None for local files (not reopened)."""
        if isinstance(self._transport, ReopenableSource):
            return self._transport.identity()
        return None

    def close(self) -> None:
        self._transport.close()

    def _load(self) -> VmxFile:
        try:
            data = self._files.read_small(self.path, MAX_VMX + 1)
        except FileNotFoundError as exc:
            raise SourceError(f"{self.display}: no such file") from exc
        except IsADirectoryError as exc:
            raise SourceError(f"{self.display}: is a directory, not a .vmx file") from exc
        except PermissionError as exc:
            raise SourceError(f"{self.display}: permission denied") from exc
        except OSError as exc:
            raise SourceError(f"{self.display}: cannot read: {exc.strerror}") from exc
        if len(data) > MAX_VMX:
            raise SourceError(f"{self.display}: not a .vmx file (too large)")
        return load_vmx(data, path=self.display)

    # Disks: check everything first ------------------------------------------------------

    def _check_disk(self, vmx: VmxFile, slot: hw.Slot) -> CheckedDisk:
        key = slot.label
        name = vmx.get(f"{key}.filename", "")
        where = self._where(slot)
        if not name:
            raise SourceError(f"{where}: no fileName")
        top = self._reference(name, self.path.parent, where)
        if not self._files.is_file(top):
            raise DiskImageError(f'{where}: "{name}" not found ({top})')
        chain: list[Layer] = []
        seen: set[str] = set()
        path: PurePath | None = top
        context = f"{where} {name}"
        while path is not None:
            identity = self._files.identity(path)
            if identity in seen or len(chain) >= MAX_CHAIN:
                raise DiskImageError(f"{context}: snapshot chain loops or is too long")
            seen.add(identity)
            layer = self._check_layer(path, context)
            expected, actual = chain[-1].desc.parent_cid if chain else None, layer.desc.cid
            if expected is not None and actual is not None and expected != actual:
                raise DiskImageError(
                    f"{context}: changed after the snapshot above it was taken (CID mismatch)",
                    hint="VMware would refuse this chain too; consolidate the snapshots first",
                )
            chain.append(layer)
            if layer.parent is not None:
                context = f'{where} {name}: parent "{self._shown(layer.parent)}"'
            path = layer.parent
        model = vmx.get(f"{slot.kind}{slot.bus}.virtualdev") if slot.kind == "scsi" else None
        return CheckedDisk(slot, model.lower() if model else None, tuple(chain))

    def _check_layer(self, path: PurePath, where: str) -> Layer:
        try:
            with self._files.open(path) as f:
                desc = read_descriptor_from(f, str(path))
        except VmdkDescriptorError as exc:
            raise DiskImageError(f"{where}: {exc.message}", hint=exc.hint) from exc
        except OSError as exc:
            raise DiskImageError(f"{where}: cannot read: {exc.strerror}") from exc
        ctype = desc.create_type
        if ctype in DEVICE_CREATE_TYPES or any(
            e.kind in ("VMFSRDM", "VMFSRAW") for e in desc.extents
        ):
            raise DiskImageError(
                f"{where}: a raw device mapping or physical disk ({ctype}); its data is on the "
                "device, not in a file",
                hint="convert the VM from vSphere, or copy the LUN into a disk image first",
            )
        if ctype in UNSUPPORTED_CREATE_TYPES or ctype not in CREATE_TYPES:
            raise DiskImageError(f"{where}: VMDK type {ctype!r} cannot be read")
        rewrite = not desc.embedded and ctype not in QEMU_CREATE_TYPES
        files: list[PurePath | None] = []
        for extent in () if desc.embedded else desc.extents:
            if extent.access == "NOACCESS":
                raise DiskImageError(f'{where}: extent "{extent.filename}" is NOACCESS')
            # qemu skips RDONLY and ZERO lines, wants an offset on FLAT lines and refuses
            # one on VMFS lines, where VMware accepts all of these: rewrite.
            rewrite |= extent.access != "RW" or extent.kind == "ZERO"
            rewrite |= extent.kind == "FLAT" and extent.offset is None
            rewrite |= extent.kind == "VMFS" and extent.offset is not None
            if extent.filename is None:
                files.append(None)
                continue
            rewrite |= is_absolute_reference(extent.filename)
            file = self._reference(extent.filename, path.parent, f"{where}: extent")
            if not self._files.is_file(file):
                raise DiskImageError(f'{where}: extent "{extent.filename}" not found')
            files.append(file)
        parent = None
        hint = desc.parent_filename_hint
        if hint is not None:
            rewrite |= is_absolute_reference(hint)
            parent = self._reference(hint, path.parent, f"{where}: parent")
            if not self._files.is_file(parent):
                raise DiskImageError(f'{where}: parent "{hint}" not found')
        elif desc.has_parent:
            raise DiskImageError(f"{where}: a snapshot (delta) disk without parentFileNameHint")
        return Layer(path, desc, tuple(files), parent, rewrite)

    def _reference(self, name: str, base: PurePath, where: str) -> PurePath:
        try:
            return resolve_reference(name, base, self._files.is_file)
        except UnsafeReference as exc:
            raise DiskImageError(
                f"{where} {exc}",
                hint="keep the VM's files in one directory, with the names the VMX uses",
            ) from exc

    def _shown(self, path: PurePath) -> str:
        try:
            return str(path.relative_to(self.path.parent))
        except ValueError:
            return str(path)

    # Disks: expose them to qemu --------------------------------------------------------

    def _where(self, slot: hw.Slot) -> str:
        return f"{self.display}: disk {slot.label}"

    def _expose(self, disk: CheckedDisk, workdir: Path, name: str) -> SourceDisk:
        return SourceDisk(
            endpoint=self._transport.expose(disk, workdir, name, self._where(disk.slot)),
            controller=disk.slot.controller,
            bus=disk.slot.bus,
            unit=disk.slot.unit,
            controller_model=disk.model,
            name=name,
        )

    # Removable media -------------------------------------------------------------------

    def _removables(self, vmx: VmxFile) -> tuple[Removable, ...]:
        found: list[Removable] = []
        for slot in hw.device_slots(vmx):
            key = slot.label
            if vmx.get(f"{key}.devicetype", "").lower() not in CDROM_TYPES:
                continue
            # atapi-cdrom and cdrom-raw are the host's drive: nothing of the guest's is in it.
            image = vmx.get(f"{key}.devicetype", "").lower() == "cdrom-image"
            path = self._media_path(vmx.get(f"{key}.filename")) if image else None
            found.append(Removable("cdrom", slot.controller, slot.bus, slot.unit, path))
        for n in hw.indexes(vmx, "floppy"):
            is_file = vmx.get(f"floppy{n}.filetype", "file").lower() == "file"
            path = self._media_path(vmx.get(f"floppy{n}.filename")) if is_file else None
            found.append(Removable("floppy", Controller.UNKNOWN, 0, n, path))
        return tuple(found)

    def _media_path(self, name: str | None) -> str | None:
        # Never opened, so never validated: only reported, as the source host's path.
        if not name:
            return None
        return name if is_absolute_reference(name) else str(self.path.parent / name)


class _LocalTransport:
    """The VM's files on this host: qemu reads the VMDKs itself."""

    files = LocalFiles()

    def __init__(self, arg: str) -> None:
        self.display = arg
        self.vmx_path = Path(arg).absolute()
        self.source_file = str(self.vmx_path)

    def accept(self, disk: CheckedDisk, where: str) -> None:
        """qemu reads every kind of disk the checks let through."""

    def expose(self, disk: CheckedDisk, workdir: Path, name: str, where: str) -> DiskEndpoint:
        top = _rewrite_chain(disk.chain, workdir / "vmx", name)
        try:
            info = probe_image(top)
        except DiskImageError as exc:
            raise DiskImageError(f"{where}: {exc.message}", hint=exc.hint) from exc
        if info.format != "vmdk":
            raise DiskImageError(f"{where}: {top}: qemu does not read it as a VMDK")
        return DiskEndpoint(uri=str(top), format="vmdk", virtual_size=info.virtual_size)

    def close(self) -> None:
        """Nothing to stop: the disks are local files qemu opens itself."""


def _rewrite_chain(chain: tuple[Layer, ...], outdir: Path, name: str) -> Path:
    """The file to give qemu for the top of chain: the VMX's own file when qemu reads every
    descriptor of the chain correctly, else descriptors written under outdir."""
    exposed: Path | None = None  # the exposed form of the layer below the current one
    rewritten_below = False
    for depth, layer in reversed(list(enumerate(chain))):
        if not (layer.needs_rewrite or rewritten_below):
            exposed = Path(layer.path)
            continue
        outdir.mkdir(parents=True, exist_ok=True)
        target = outdir / f"{name}-{depth}.vmdk"
        parent = str(exposed) if layer.parent is not None and exposed is not None else None
        target.write_text(format_descriptor(_qemu_descriptor(layer, parent, target)))
        exposed, rewritten_below = target, True
    assert exposed is not None
    return exposed


def _qemu_descriptor(layer: Layer, parent: str | None, target: Path) -> VmdkDescriptor:
    desc = layer.desc
    if desc.embedded:
        # The sparse file is its own extent; qemu reads its data through a text descriptor.
        sparse = Extent("RW", desc.capacity_sectors, "SPARSE", str(Path(layer.path).absolute()))
        return dataclasses.replace(
            desc,
            create_type="twoGbMaxExtentSparse",
            extents=(sparse,),
            parent_filename_hint=parent,
            embedded=False,
        )
    extents: list[Extent] = []
    for index, (original, found) in enumerate(zip(desc.extents, layer.extent_files, strict=True)):
        extent, file = original, None if found is None else Path(found)
        if file is None:  # ZERO: a sparse file of zeros costs nothing and qemu reads it
            file = target.with_name(f"{target.stem}-zero{index}.raw")
            with file.open("wb") as f:
                f.truncate(extent.sectors * 512)
            extent = dataclasses.replace(extent, kind="FLAT", offset=0)
        if extent.kind in ("FLAT", "VMFS"):  # the same data; qemu wants FLAT with an offset
            extent = dataclasses.replace(extent, kind="FLAT", offset=extent.offset or 0)
        extents.append(dataclasses.replace(extent, access="RW", filename=str(file.absolute())))
    ctype = desc.create_type
    if ctype not in QEMU_CREATE_TYPES:
        flat = all(e.kind in ("FLAT", "VMFS") for e in extents)
        ctype = "vmfs" if flat else "twoGbMaxExtentSparse"
    return dataclasses.replace(
        desc, create_type=ctype, extents=tuple(extents), parent_filename_hint=parent
    )
