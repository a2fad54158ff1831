"""-o local -os DIR: disks as DIR/NAME-sda, DIR/NAME-sdb ... and DIR/NAME.xml for libvirt.

Nothing appears under its final name until the guest is complete: disks are copied to hidden
temporary names (DIR/.NAME-sda.tmp), the XML is written to a temporary name
(DIR/.NAME.xml.XXXXXXXX.tmp), and only then are they renamed, the XML last, so a DIR/NAME.xml
always describes disks that are all there. Existing files are never overwritten: check()
refuses a name whose files exist, and every rename into place is fsops.rename_noreplace, so a
file that appears meanwhile is not replaced either (the run fails and abort() removes its own
files). The renames are recorded in the lock first (output_lock.py): a run killed among them
leaves final files that the next run for the name removes, saying so.

One run per name: check() takes DIR/.NAME.vmshift-lock (output_lock.py) before looking at the
names, and holds it to the end of finalize() or abort(). Another live run's lock is refused
naming its pid; a killed run's lock and temporary files are removed by the next run, which
says so (`swept`).

OutputDirectory holds the -os DIR logic that -o qemu shares.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from vmshift import fsops
from vmshift.errors import TargetError
from vmshift.formats.libvirt_xml import domain_xml
from vmshift.model.caps import GuestCaps
from vmshift.model.devnames import drive_letters
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM
from vmshift.process import CommandFailed, run
from vmshift.targets.base import OutputDisk, TargetOptions, TargetResult
from vmshift.targets.output_lock import OutputLock, temporary_names
from vmshift.targets.platform import (
    cpu_model_decision,
    libvirt_knows_cpu_model,
    secure_boot_decision,
)
from vmshift.targets.writable import check_writable

FORMATS = ("raw", "qcow2")
ALLOCATIONS = ("sparse", "preallocated")


def check_format_options(opts: TargetOptions) -> None:
    if opts.format not in FORMATS:
        raise TargetError(f"-of {opts.format}: the output format must be raw or qcow2")
    if opts.allocation not in ALLOCATIONS:
        raise TargetError(f"-oa {opts.allocation}: must be sparse or preallocated")


def output_name(opts: TargetOptions, vm: SourceVM) -> str:
    """-on NAME, or the source's name; checked to be usable as part of a file name."""
    name = opts.name or vm.name
    what = f"-on {name}" if opts.name else f"guest name {name!r}"
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise TargetError(
            f"{what}: cannot be used as a file name (empty, contains '/', or starts with '.')",
            hint="choose another name with -on",
        )
    if len(name.encode()) > 200:
        raise TargetError(f"{what}: too long for a file name", hint="choose another with -on")
    return name


def disk_file_name(name: str, index: int) -> str:
    """NAME-sda, NAME-sdb ...: virt-v2v's names, whatever bus the disk ends up on."""
    return f"{name}-sd{drive_letters(index)}"


def domain_type(opts: TargetOptions) -> str:
    """libvirt's domain type for a guest whose host is not known: kvm unless --domain-type
    says qemu. The conversion host's lack of KVM says nothing about the target's."""
    return opts.domain_type or "kvm"


def validate_domain_xml(path: Path) -> None:
    """Check path against libvirt's schema, when virt-xml-validate is installed."""
    if shutil.which("virt-xml-validate") is None:
        return
    try:
        run(["virt-xml-validate", str(path), "domain"], timeout=60)
    except CommandFailed as exc:
        raise TargetError(
            f"{path}: the libvirt XML vmshift wrote does not validate: {exc.stderr.strip()}",
            hint="this is a bug in vmshift; please report it with the XML",
        ) from exc


def refuse_to_overwrite(path: Path) -> TargetError:
    return TargetError(
        f"{path}: already exists; refusing to overwrite it",
        hint="remove it, or choose another name with -on",
    )


def put_into_place(src: Path, dst: Path) -> None:
    """Rename src to dst, never replacing what is there (fsops.rename_noreplace)."""
    try:
        fsops.rename_noreplace(src, dst)
    except FileExistsError:
        raise refuse_to_overwrite(dst) from None
    except OSError as exc:
        raise TargetError(f"{dst}: cannot put into place: {exc.strerror or exc}") from exc


def write_temporary(
    path: Path,
    text: str,
    mode: int = 0o644,
    check: Callable[[Path], None] | None = None,
    *,
    copy_of: Path | None = None,
) -> Path:
    """Write text (or a copy of the file copy_of) to a hidden temporary name in path's
    directory, .NAME.XXXXXXXX.tmp, for put_into_place to rename to path; return it.

    check runs on the temporary file: a file that fails it never gets its final name.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise TargetError(f"{path}: cannot write: {exc.strerror}") from exc
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if copy_of is not None:
                with copy_of.open("rb") as src:
                    shutil.copyfileobj(src, f.buffer)
            else:
                f.write(text)
        tmp.chmod(mode)
        if check is not None:
            check(tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TargetError(f"{path}: cannot write: {exc.strerror}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)  # check refused it, or a signal
        raise
    return tmp


class OutputDirectory:
    """A -os DIR that receives NAME-sdX disks plus files named by the target (NAME.xml ...)."""

    def __init__(self, opts: TargetOptions, option: str) -> None:
        self._opts = opts
        self._option = option  # "-o local": for messages
        self.dir = Path(opts.storage) if opts.storage else Path()
        self.name = ""
        self._lock: OutputLock | None = None
        self._temps: list[Path] = []
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final) of files besides disks
        self._made: list[Path] = []  # final files this run created; abort removes them

    @property
    def swept(self) -> list[str]:
        """What check() removed that a killed run had left, one line each."""
        return self._lock.swept if self._lock is not None else []

    def check(self, vm: SourceVM, extra_files: Sequence[str]) -> None:
        """extra_files: the target's files besides the disks (NAME.xml ...), written with
        stage()."""
        if not self._opts.storage:
            raise TargetError(f"{self._option} needs -os DIR, the directory to write the guest to")
        check_format_options(self._opts)
        self.name = output_name(self._opts, vm)
        d = self.dir
        if not d.exists():
            raise TargetError(f"-os {d}: no such directory")
        if not d.is_dir():
            raise TargetError(f"-os {d}: not a directory")
        self._check_writable()
        if self._lock is None:
            self._lock = OutputLock(d, self.name, temporary_names(self.name, extra_files))
        self._lock.acquire()  # before looking at the names: no other run changes them now
        try:
            names = [disk_file_name(self.name, i) for i in range(len(vm.disks))]
            for file in [*names, *extra_files]:
                if (d / file).exists() or (d / file).is_symlink():
                    raise refuse_to_overwrite(d / file)
        except BaseException:
            self._lock.release()
            raise

    def _check_writable(self) -> None:
        # os.access gives the clearer message when it knows; a probe file the honest answer.
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise TargetError(f"-os {self.dir}: directory is not writable")
        check_writable(self.dir, f"-os {self.dir}")

    def setup(self, sizes: list[int]) -> list[OutputDisk]:
        outs = []
        for i, size in enumerate(sizes):
            final = self.dir / disk_file_name(self.name, i)
            tmp = self.dir / f".{final.name}.tmp"
            self._temps.append(tmp)
            outs.append(
                OutputDisk(
                    path=tmp,
                    final_path=final,
                    format=self._opts.format,
                    preallocated=self._opts.allocation == "preallocated",
                    virtual_size=size,
                )
            )
        return outs

    def stage(
        self,
        file: str,
        text: str = "",
        mode: int = 0o644,
        check: Callable[[Path], None] | None = None,
        *,
        copy_of: Path | None = None,
    ) -> Path:
        """Write file (text, or a copy of copy_of) under a temporary name, checked by check,
        for commit() to put into place; return its final path."""
        path = self.dir / file
        tmp = write_temporary(path, text, mode, check, copy_of=copy_of)
        self._temps.append(tmp)
        self._staged.append((tmp, path))
        return path

    def commit(self, disks: list[OutputDisk]) -> list[Path]:
        """The guest is complete: record in the lock, then rename into place, the copied disks
        and then the staged files in the order staged, never replacing a file; drop the lock.
        Return the disks' final paths."""
        for disk in disks:
            if not disk.path.exists():
                raise TargetError(f"{disk.path}: the copied disk is missing")
        moves = [*((d.path, d.final_path) for d in disks), *self._staged]
        for _, dst in moves:
            if dst.exists() or dst.is_symlink():
                raise refuse_to_overwrite(dst)  # before renaming any
        if self._lock is not None:
            self._lock.record_finals(moves)
        for src, dst in moves:
            put_into_place(src, dst)
            self._made.append(dst)
        self._staged.clear()
        if self._lock is not None:
            self._lock.release()
        return [d.final_path for d in disks]

    def abort(self) -> None:
        for path in [*self._temps, *reversed(self._made)]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._temps.clear()
        self._staged.clear()
        self._made.clear()
        if self._lock is not None:
            self._lock.release()  # last: the name is free once nothing of this run is left

    def keep_for_resume(self) -> None:
        """The copy was interrupted and is kept for a --resume (resume.py): the temporary
        disks stay, claimed by the resume state (output_lock.claim), and the name is free;
        nothing final was made yet."""
        self._temps.clear()
        if self._lock is not None:
            self._lock.release()


def local_platform(vm: SourceVM, caps: GuestCaps, kind: str) -> tuple[bool, bool, tuple[str, ...]]:
    """(describe the source's CPU model?, enforce secure boot?, warnings) for an XML whose
    host is not known yet: secure boot as asked (the host needs a secure-boot OVMF build), the
    CPU model if libvirt knows its name at all."""
    secure_boot, sb_warnings = secure_boot_decision(caps, True, "")
    runnable, why_not = libvirt_knows_cpu_model(vm, caps.arch)
    mode = "host-model" if kind == "kvm" else "maximum"
    cpu_model, cpu_warnings = cpu_model_decision(
        vm, runnable, why_not, f"the default CPU (mode {mode})"
    )
    return cpu_model, secure_boot, (*sb_warnings, *cpu_warnings)


class LocalTarget:
    def __init__(self, opts: TargetOptions) -> None:
        self._opts = opts
        self._out = OutputDirectory(opts, "-o local")

    @property
    def swept(self) -> list[str]:
        return self._out.swept

    def check(self, vm: SourceVM) -> None:
        name = output_name(self._opts, vm)
        self._out.check(vm, [f"{name}.xml"])

    def setup(self, vm: SourceVM, sizes: list[int]) -> list[OutputDisk]:
        if not self._out.name:
            self.check(vm)
        return self._out.setup(sizes)

    def finalize(
        self, vm: SourceVM, os: OperatingSystem, caps: GuestCaps, disks: list[OutputDisk]
    ) -> TargetResult:
        name = self._out.name
        kind = domain_type(self._opts)
        cpu_model, secure_boot, warnings = local_platform(vm, caps, kind)
        xml = domain_xml(
            vm,
            caps,
            [(d.final_path.absolute(), d.format) for d in disks],
            name=name,
            networks=self._opts.networks,
            domain_type=kind,
            os_type=os.type,
            cpu_model=cpu_model,
            secure_boot=secure_boot,
        )
        # Validated under its temporary name: an invalid XML must never look finished.
        xml_path = self._out.stage(f"{name}.xml", xml, check=validate_domain_xml)
        finals = self._out.commit(disks)
        return TargetResult(
            name=name,
            description=f"{xml_path} (define it with: virsh define {xml_path})",
            files=(*finals, xml_path),
            warnings=warnings,
            domain_xml=xml,
        )

    def abort(self) -> None:
        self._out.abort()

    def keep_for_resume(self) -> None:
        self._out.keep_for_resume()
