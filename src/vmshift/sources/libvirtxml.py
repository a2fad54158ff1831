"""-i libvirtxml FILE: a guest described by a libvirt domain XML file, disks on this host.

Relative disk paths are taken relative to the XML file's directory, so a guest exported as
"guest.xml + guest-sda" can be moved around as a folder. The XML's <driver type> is the
authority on each disk's format (probing a raw disk that happens to start with a qcow2 header
would let guest data name host files), so a disagreement with what qemu-img finds is refused
rather than guessed around.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from vmshift.blockio.imageinfo import probe_image
from vmshift.errors import DiskImageError, SourceError
from vmshift.formats.libvirt_domain import Domain, DomainDisk, parse_domain
from vmshift.model.vm import DiskEndpoint, SourceVM
from vmshift.sources.base import SourceOptions

# (pool, volume) -> the volume's local path; only a libvirt connection can answer.
VolumeResolver = Callable[[str, str], str]

MAX_XML_BYTES = 4 << 20  # a domain XML is a few KiB; anything huge is not one


def _block_size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def disk_endpoint(path: Path, declared: str | None, where: str) -> DiskEndpoint:
    """Check that path is a readable image of the declared format; describe it for a reader."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DiskImageError(f"{path}: no such file (a disk of {where})") from None
    except OSError as exc:
        raise DiskImageError(f"{path}: cannot access: {exc.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        # qemu-img's answer for a device says nothing new, and probe_image wants a file size.
        try:
            size = _block_size(path)
        except OSError as exc:
            raise DiskImageError(f"{path}: cannot read: {exc.strerror}") from None
        return DiskEndpoint(uri=str(path), format=declared or "raw", virtual_size=size)
    info = probe_image(path)
    if declared is not None and declared != info.format:
        raise DiskImageError(
            f"{path}: {where} says the disk is {declared}, but it is {info.display_format}",
            hint="correct <driver type=...> in the XML",
        )
    return DiskEndpoint(uri=str(path), format=info.format, virtual_size=info.virtual_size)


def _disk_path(
    disk: DomainDisk, base_dir: Path, resolve: VolumeResolver | None, where: str
) -> Path:
    label = disk.dev or "a disk"
    if disk.source_type == "volume":
        if resolve is None or not disk.pool or not disk.volume:
            raise SourceError(
                f"{where}: {label} is a storage pool volume, which only libvirt can resolve",
                hint="convert it with -i libvirt instead",
            )
        return Path(resolve(disk.pool, disk.volume))
    if disk.source_type not in ("file", "block"):
        raise SourceError(
            f"{where}: {label} is a {disk.source_type!r} disk; only local files and block "
            "devices can be converted"
        )
    if not disk.path:
        raise SourceError(f"{where}: {label} has no source path")
    path = Path(disk.path)
    return path if path.is_absolute() else base_dir / path


def origin_of(domain: Domain) -> str:
    """Which hypervisor the guest ran on, as SourceVM.origin names it."""
    return {"xen": "xen", "vmware": "vmware", "hyperv": "hyperv"}.get(domain.domain_type, "libvirt")


def vm_from_domain(
    domain: Domain,
    *,
    base_dir: Path,
    source_file: str,
    resolve_volume: VolumeResolver | None = None,
) -> SourceVM:
    """The SourceVM for a parsed domain, every hard disk checked and probed."""
    endpoints = [
        disk_endpoint(_disk_path(d, base_dir, resolve_volume, source_file), d.format, source_file)
        for d in domain.disks
        if d.device == "disk"
    ]
    if not endpoints:
        raise SourceError(f"{source_file}: the domain has no disks to convert")
    return domain.source_vm(endpoints, origin=origin_of(domain), source_file=source_file)


class LibvirtXmlSource:
    def __init__(self, opts: SourceOptions) -> None:
        if len(opts.args) != 1:
            raise SourceError(
                "-i libvirtxml takes exactly one argument, the domain XML file",
                hint="e.g. vmshift convert -i libvirtxml guest.xml -o local -os /var/tmp",
            )
        self._path = Path(opts.args[0])

    def open(self, workdir: Path) -> SourceVM:
        path = self._path
        try:
            with path.open("rb") as f:
                data = f.read(MAX_XML_BYTES + 1)
        except FileNotFoundError:
            raise SourceError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise SourceError(f"{path}: is a directory, not a domain XML file") from None
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror}") from None
        if len(data) > MAX_XML_BYTES:
            raise SourceError(f"{path}: too large to be a libvirt domain XML file")
        domain = parse_domain(data, str(path))
        return vm_from_domain(domain, base_dir=path.absolute().parent, source_file=str(path))

    def close(self) -> None:
        pass
