"""-o libvirt [-oc URI] [-os POOL]: disks in a libvirt storage pool, the guest defined there.

Directory-backed pools (dir, fs, netfs) are written like -o local writes a directory: the
copier creates DIR/.NAME-sda.tmp, finalize renames it to DIR/NAME-sda (never replacing a file)
and refreshes the pool, so a half-copied disk never shows up as a volume; the run holds
DIR/.NAME.vmshift-lock from check() on (output_lock.py: another live run is refused, a killed
one's temporary disks removed, and if it was killed in finalize, the volumes it had renamed and
the guest it had defined, which finalize records in the lock first). Any other pool (logical,
disk, iscsi ...) gets its volumes created through the API first (raw only: a block device has
no qcow2), and the copier writes into the existing device. The guest is defined, never started.

The pool must be on this host: vmshift writes the disks itself rather than streaming them
through libvirt's volume upload API.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any, cast

from lxml import etree

from vmshift.errors import TargetError
from vmshift.formats.libvirt_domcaps import DomainCapabilities, parse_domain_capabilities
from vmshift.formats.libvirt_xml import domain_xml, source_cpu_model
from vmshift.formats.safexml import untrusted_parser
from vmshift.guest.accel import detect_accelerator
from vmshift.libvirt_binding import import_libvirt
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM
from vmshift.targets.base import OutputDisk, TargetOptions, TargetResult
from vmshift.targets.local import (
    check_format_options,
    disk_file_name,
    output_name,
    put_into_place,
)
from vmshift.targets.output_lock import OutputLock, temporary_names
from vmshift.targets.platform import cpu_model_decision, secure_boot_decision
from vmshift.targets.writable import check_writable

DEFAULT_URI = "qemu:///system"
DEFAULT_POOL = "default"
DIRECTORY_POOLS = ("dir", "fs", "netfs")


def _libvirt() -> Any:
    return import_libvirt(TargetError, "-o libvirt")


def _xml(text: str) -> etree._Element:
    return etree.fromstring(text.encode(), untrusted_parser())


class LibvirtTarget:
    def __init__(self, opts: TargetOptions) -> None:
        self._opts = opts
        self._uri = opts.conn or DEFAULT_URI
        self._pool_name = opts.storage or DEFAULT_POOL
        self._lv: Any = None
        self._conn: Any = None
        self._pool: Any = None
        self._pool_dir: Path | None = None  # set for directory-backed pools
        self._name = ""
        self._lock: OutputLock | None = None  # for directory-backed pools
        self._temps: list[Path] = []
        self._files: list[Path] = []  # final disk files this run made in a directory pool
        self._volumes: list[str] = []  # volumes this run created through the API
        self._domain: Any = None

    @property
    def swept(self) -> list[str]:
        """What check() removed that a killed run had left in a directory pool."""
        return self._lock.swept if self._lock is not None else []

    # -- check ----------------------------------------------------------------------------

    def check(self, vm: SourceVM) -> None:
        check_format_options(self._opts)
        self._name = output_name(self._opts, vm)
        self._lv = lv = _libvirt()
        try:
            self._conn = lv.open(self._uri)
        except lv.libvirtError as exc:
            raise TargetError(
                f"-oc {self._uri}: cannot connect to libvirt: {exc.get_error_message()}",
                hint="is libvirtd running, and is -oc right?",
            ) from None
        try:
            self._check_pool(vm)
            if self._pool_dir is not None:
                where = f"pool {self._pool_name} ({self._pool_dir}), {self._name}"
                pattern = temporary_names(self._name)
                self._lock = OutputLock(
                    self._pool_dir, self._name, pattern, where, self._undefine_left
                )
                self._lock.acquire()  # before looking at the names
                if self._lock.swept:
                    self._pool.refresh(0)  # volumes a killed run had made are gone
            self._check_free(vm)
        except lv.libvirtError as exc:
            self._close()
            raise TargetError(f"-oc {self._uri}: {exc.get_error_message()}") from None
        except BaseException:
            self._close()
            raise

    def _check_pool(self, vm: SourceVM) -> None:
        lv = self._lv
        try:
            self._pool = self._conn.storagePoolLookupByName(self._pool_name)
        except lv.libvirtError as exc:
            if exc.get_error_code() != lv.VIR_ERR_NO_STORAGE_POOL:
                raise
            raise TargetError(
                f"-os {self._pool_name}: no such storage pool on {self._uri}",
                hint="'virsh pool-list --all' shows the pools",
            ) from None
        if not self._pool.isActive():
            raise TargetError(
                f"-os {self._pool_name}: the storage pool is not active",
                hint=f"virsh pool-start {self._pool_name}",
            )
        desc = _xml(cast(str, self._pool.XMLDesc(0)))
        if desc.get("type") in DIRECTORY_POOLS:
            path = Path(desc.findtext("target/path") or "")
            if not path.is_absolute() or not path.is_dir():
                raise TargetError(
                    f"-os {self._pool_name}: the pool's directory {path} is not on this host"
                )
            check_writable(path, f"-os {self._pool_name}: the pool's directory {path}")
            self._pool_dir = path
        elif self._opts.format != "raw":
            raise TargetError(
                f"-of {self._opts.format}: pool {self._pool_name} ({desc.get('type')}) holds "
                "block devices, which can only be raw",
                hint="use -of raw, or a directory pool",
            )
        with contextlib.suppress(lv.libvirtError):
            self._pool.refresh(0)  # see volumes someone copied in by hand

    def _check_free(self, vm: SourceVM) -> None:
        lv = self._lv
        try:
            self._conn.lookupByName(self._name)
        except lv.libvirtError as exc:
            if exc.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                raise
        else:
            raise TargetError(
                f"{self._name}: a guest with this name already exists on {self._uri}",
                hint="choose another name with -on, or remove the old guest",
            )
        existing = set(cast(list[str], self._pool.listVolumes()))
        for i in range(len(vm.disks)):
            vol = disk_file_name(self._name, i)
            on_disk = self._pool_dir is not None and (self._pool_dir / vol).exists()
            if vol in existing or on_disk:
                raise TargetError(
                    f"{vol}: a volume with this name already exists in pool {self._pool_name}",
                    hint="choose another name with -on, or delete the volume",
                )

    # -- setup ----------------------------------------------------------------------------

    def setup(self, vm: SourceVM, sizes: list[int]) -> list[OutputDisk]:
        if self._conn is None:
            self.check(vm)
        prealloc = self._opts.allocation == "preallocated"
        outs = []
        for i, size in enumerate(sizes):
            vol = disk_file_name(self._name, i)
            if self._pool_dir is not None:
                tmp = self._pool_dir / f".{vol}.tmp"
                self._temps.append(tmp)
                final = self._pool_dir / vol
                outs.append(OutputDisk(tmp, final, self._opts.format, prealloc, size))
            else:
                path = self._create_volume(vol, size, prealloc)
                outs.append(OutputDisk(path, path, "raw", prealloc, size))
        return outs

    def _create_volume(self, vol: str, size: int, prealloc: bool) -> Path:
        root = etree.Element("volume")  # built, not formatted: a name cannot inject elements
        etree.SubElement(root, "name").text = vol
        etree.SubElement(root, "capacity", unit="bytes").text = str(size)
        etree.SubElement(root, "allocation", unit="bytes").text = str(size if prealloc else 0)
        etree.SubElement(etree.SubElement(root, "target"), "format", type="raw")
        try:
            created = self._pool.createXML(etree.tostring(root, encoding="unicode"), 0)
        except self._lv.libvirtError as exc:
            raise TargetError(f"{vol}: cannot create volume: {exc.get_error_message()}") from None
        self._volumes.append(vol)
        return Path(cast(str, created.path()))

    # -- resume ---------------------------------------------------------------------------

    @property
    def resumable(self) -> bool:
        """Whether a copy into this pool can be kept for a --resume (resume.py): a directory
        pool's can, its disks being temporaries (.NAME-sda.tmp) that a claim keeps from the
        lock's sweep. A pool of block devices (logical, disk, iscsi ...) cannot, by decision:
        its volumes are created through libvirt under their final names, where a kept half
        copy would look like any other volume, and no lock or claim guards them."""
        return self._pool_dir is not None

    def keep_for_resume(self) -> None:
        """The copy was interrupted and is kept for a --resume (directory pools only): the
        temporary disks stay, claimed by the resume state (output_lock.claim); the lock is
        released and the connection closed, nothing final having been made. The resume's
        check() takes the lock again (leaving the claimed disks alone) and its setup() names
        the same temporaries."""
        assert self._pool_dir is not None, "a directory pool's copy only (resumable)"
        self._temps.clear()
        self._close()

    # -- finalize -------------------------------------------------------------------------

    def finalize(
        self, vm: SourceVM, os: OperatingSystem, caps: GuestCaps, disks: list[OutputDisk]
    ) -> TargetResult:
        lv = self._lv
        guest_uuid = str(uuid.uuid4())
        if self._lock is not None:  # a directory pool: for the next run to undo if killed
            moves = [(d.path, d.final_path) for d in disks]
            self._lock.record_finals(moves, (self._name, guest_uuid, self._uri))
        for disk in disks:
            if disk.path != disk.final_path:
                put_into_place(disk.path, disk.final_path)
                self._files.append(disk.final_path)
        try:
            self._pool.refresh(0)
            paths = [
                cast(str, self._pool.storageVolLookupByName(d.final_path.name).path())
                if self._pool_dir is not None
                else str(d.final_path)
                for d in disks
            ]
            domain_type = self._domain_type(caps.arch)
            cpu_model, secure_boot, warnings = self._platform(vm, caps, domain_type)
            xml = domain_xml(
                vm,
                caps,
                [(p, d.format) for p, d in zip(paths, disks, strict=True)],
                name=self._name,
                networks=self._opts.networks,
                domain_type=domain_type,
                os_type=os.type,
                cpu_model=cpu_model,
                secure_boot=secure_boot,
                uuid=guest_uuid,
            )
            self._domain = self._conn.defineXMLFlags(xml, lv.VIR_DOMAIN_DEFINE_VALIDATE)
        except lv.libvirtError as exc:
            raise TargetError(
                f"{self._name}: libvirt refused the guest: {exc.get_error_message()}"
            ) from None
        result = TargetResult(
            name=self._name,
            description=f"guest {self._name} defined on {self._uri} "
            f"(start it with: virsh -c {self._uri} start {self._name})",
            files=tuple(Path(p) for p in paths),
            warnings=warnings,
            domain_xml=xml,
        )
        self._close()
        return result

    def _platform(
        self, vm: SourceVM, caps: GuestCaps, domain_type: str
    ) -> tuple[bool, bool, tuple[str, ...]]:
        """(describe the source's CPU model?, enforce secure boot?, warnings), as the target
        libvirt's domain capabilities allow."""
        model = source_cpu_model(vm)
        domcaps, problem = None, ""
        if caps.secure_boot or model is not None:
            domcaps, problem = self._domain_capabilities(caps, domain_type)
        where = f"libvirt on {self._uri}"
        secure_boot, sb_warnings = secure_boot_decision(
            caps,
            domcaps is not None and domcaps.secure_boot,
            problem or f"{where} has no secure-boot UEFI firmware for {caps.machine} guests",
        )
        runnable = bool(domcaps and model and model.model and domcaps.can_run(model.model))
        if domcaps is None:
            why_not = problem
        elif model is not None and model.model in domcaps.cpu_models:
            why_not = f"{where} cannot run it ({domain_type} domains)"
        else:
            why_not = f"{where} does not know it"
        mode = "host-model" if domain_type == "kvm" else "maximum"
        cpu_model, cpu_warnings = cpu_model_decision(
            vm, runnable, why_not, f"the default CPU (mode {mode})"
        )
        return cpu_model, secure_boot, (*sb_warnings, *cpu_warnings)

    def _domain_capabilities(
        self, caps: GuestCaps, domain_type: str
    ) -> tuple[DomainCapabilities | None, str]:
        """The target's domain capabilities for this guest, or None and why not."""
        try:
            text = cast(
                str,
                self._conn.getDomainCapabilities(None, caps.arch, caps.machine, domain_type, 0),
            )
            return parse_domain_capabilities(text, f"-oc {self._uri}"), ""
        except self._lv.libvirtError as exc:
            reason = exc.get_error_message()
        except TargetError as exc:
            reason = exc.message
        return None, f"cannot ask libvirt on {self._uri} what it supports: {reason}"

    def _domain_type(self, arch: str) -> str:
        """--domain-type, or kvm if the target's libvirtd offers it for arch, else qemu.

        The target's libvirtd runs where its pool is, on this host: so KVM must also really
        work here. libvirt offers kvm wherever /dev/kvm opens, also in nested setups where
        the CPU cannot virtualise and qemu with KVM aborts (guest/accel.py).
        """
        if self._opts.domain_type is not None:
            return self._opts.domain_type
        if not detect_accelerator().is_kvm:
            return "qemu"
        caps = _xml(cast(str, self._conn.getCapabilities()))
        kvm = caps.xpath("guest[arch/@name=$arch]/arch/domain[@type='kvm']", arch=arch)
        return "kvm" if kvm else "qemu"

    # -- abort ----------------------------------------------------------------------------

    def abort(self) -> None:
        lv = self._lv
        if self._domain is not None:
            with contextlib.suppress(Exception):
                self._domain.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_NVRAM)
            self._domain = None
        for path in [*self._temps, *self._files]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for vol in self._volumes:
            with contextlib.suppress(Exception):
                self._pool.storageVolLookupByName(vol).delete(0)
        self._temps.clear()
        self._files.clear()
        self._volumes.clear()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.refresh(0)
        self._close()

    def _undefine_left(self, name: str, guest_uuid: str, uri: str) -> bool:
        """Undefine the guest a killed run recorded defining (output_lock.py), if it is that
        run's: on this run's URI, with its UUID, not running. True if it was undefined."""
        lv = self._lv
        if uri != self._uri:
            raise TargetError(
                f"a vmshift run killed while finishing may have defined guest {name} on {uri}",
                hint=f"convert with -oc {uri}, or undefine that guest if it is half made "
                f"and remove the lock in {self._pool_dir}",
            )
        try:
            dom = self._conn.lookupByName(name)
            if dom.UUIDString() != guest_uuid or dom.isActive():
                return False  # not that run's, or started: check() then refuses the name
            dom.undefineFlags(lv.VIR_DOMAIN_UNDEFINE_NVRAM)
        except lv.libvirtError as exc:
            if exc.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                return False
            raise
        return True

    def _close(self) -> None:
        """The end of the run's hold on the target: success, failure or a refusal in check."""
        if self._lock is not None:
            self._lock.release()
        conn, self._conn, self._pool = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
