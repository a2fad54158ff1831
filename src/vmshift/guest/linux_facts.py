"""Facts about an inspected Linux guest that libguestfs inspection does not give directly:
kernels and their virtio support, the bootloader, network configuration files, and foreign
hypervisor software installed outside the package manager.

Every function takes a libguestfs handle with the guest's filesystems mounted (read-only is
enough) and only reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from vmshift.formats import netconf
from vmshift.formats.initramfs import InitramfsError, list_initramfs
from vmshift.formats.kmod import module_name, module_names
from vmshift.model.inspection import (
    Bootloader,
    DriverPresence,
    ForeignSoftware,
    LinuxKernel,
    NetworkConfig,
)

log = logging.getLogger(__name__)

# An initramfs bigger than this is not read for inspection.
MAX_INITRAMFS = 512 << 20
# The most one pread returns: the appliance protocol's messages are at most 4 MiB.
_PREAD_CHUNK = 2 << 20


@dataclass(frozen=True)
class VirtioDriver:
    module: str  # module file name without .ko
    config: str  # Kconfig symbol


VIRTIO_BLK = VirtioDriver("virtio_blk", "CONFIG_VIRTIO_BLK")
VIRTIO_NET = VirtioDriver("virtio_net", "CONFIG_VIRTIO_NET")
VIRTIO_SCSI = VirtioDriver("virtio_scsi", "CONFIG_SCSI_VIRTIO")

KERNEL_GLOBS = ("/boot/vmlinuz-*", "/boot/vmlinux-*")
INITRAMFS_NAMES = (
    "/boot/initrd.img-{v}",  # Debian, Ubuntu
    "/boot/initramfs-{v}.img",  # RHEL, Fedora (dracut)
    "/boot/initrd-{v}",  # SUSE
    "/boot/initrd-{v}.img",  # RHEL 5 and older
)


def read_guest_file(g: Any, path: str, limit: int) -> bytes | None:
    """A guest file's bytes (symlinks followed inside the guest), or None when it is missing,
    not a regular file (a FIFO would block the read) or over limit bytes.

    One statns and a pread per 2 MiB: read_file and download go through the appliance's file
    transfer, which costs about 0.15 s a file under TCG; pread answers in a few milliseconds.
    """
    try:
        stat = g.statns(path)
        size = int(stat["st_size"])
        if stat["st_mode"] & 0o170000 != 0o100000 or size > limit:
            return None
        chunks = []
        offset = 0
        while offset < size:
            chunk: bytes = g.pread(path, min(_PREAD_CHUNK, size - offset), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
    except RuntimeError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None
    return b"".join(chunks)


def _read_text(g: Any, path: str, limit: int = 4 << 20) -> str | None:
    data = read_guest_file(g, path, limit)
    return None if data is None else data.decode("utf-8", errors="replace")


def glob_paths(g: Any, pattern: str) -> list[str]:
    """The guest paths matching pattern, sorted; none when the pattern's directory is missing."""
    try:
        found = g.glob_expand(pattern)
    except RuntimeError:
        return []
    # glob_expand marks directories with a trailing slash.
    return sorted(str(p).rstrip("/") or "/" for p in found)


def _module_dir(g: Any, version: str) -> str | None:
    for base in ("/lib/modules", "/usr/lib/modules"):
        path = f"{base}/{version}"
        try:
            if g.is_dir(path, followsymlinks=True):
                return path
        except RuntimeError:
            continue
    return None


def _kconfig(text: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            values[key] = value.strip()
    return values


def _presence(
    drv: VirtioDriver, builtin: set[str], modules: set[str], config: dict[str, str]
) -> DriverPresence:
    if drv.module in builtin or config.get(drv.config) == "y":
        return DriverPresence.BUILTIN
    if drv.module in modules:
        return DriverPresence.MODULE
    return DriverPresence.ABSENT


def _installed_modules(g: Any, moddir: str | None) -> set[str]:
    if moddir is None:
        return set()
    dep = _read_text(g, f"{moddir}/modules.dep", limit=64 << 20)
    if dep is not None:
        return module_names(dep)
    # No modules.dep (depmod never ran): look for the files themselves.
    found = []
    for sub in ("drivers/block", "drivers/net", "drivers/scsi", "drivers/virtio"):
        found += glob_paths(g, f"{moddir}/kernel/{sub}/*.ko*")
    return _names(found)


def _initramfs_modules(g: Any, path: str) -> set[str] | None:
    image = read_guest_file(g, path, MAX_INITRAMFS)
    if image is None:
        log.info("cannot read initramfs %s (or it is over %d MiB)", path, MAX_INITRAMFS >> 20)
        return None
    try:
        members = list_initramfs(image)
    except InitramfsError as exc:
        log.info("cannot read initramfs %s: %s", path, exc)
        return None
    return _names(members)


def _names(paths: list[str]) -> set[str]:
    """The module names of the module files among paths (virtio_blk for .../virtio_blk.ko.xz)."""
    return {name for path in paths if (name := module_name(path)) is not None}


def list_kernels(g: Any) -> tuple[LinuxKernel, ...]:
    kernels = []
    for pattern in KERNEL_GLOBS:
        for path in glob_paths(g, pattern):
            name = path.rsplit("/", 1)[-1]
            version = name.split("-", 1)[1]
            # RHEL's rescue kernel is a copy of another kernel with a generic initramfs.
            if "rescue" in version or not g.is_file(path, followsymlinks=True):
                continue
            kernels.append(_kernel(g, path, version))
    return tuple(kernels)


def _kernel(g: Any, path: str, version: str) -> LinuxKernel:
    moddir = _module_dir(g, version)
    builtin = module_names(_read_text(g, f"{moddir}/modules.builtin") or "") if moddir else set()
    modules = _installed_modules(g, moddir)
    config = _kconfig(_read_text(g, f"/boot/config-{version}"))
    initramfs = next(
        (
            p
            for p in (t.format(v=version) for t in INITRAMFS_NAMES)
            if g.is_file(p, followsymlinks=True)
        ),
        None,
    )
    in_initrd = _initramfs_modules(g, initramfs) if initramfs else None

    def has(drv: VirtioDriver) -> bool | None:
        return None if in_initrd is None else drv.module in in_initrd

    return LinuxKernel(
        version=version,
        path=path,
        initramfs=initramfs,
        virtio_blk=_presence(VIRTIO_BLK, builtin, modules, config),
        virtio_net=_presence(VIRTIO_NET, builtin, modules, config),
        virtio_scsi=_presence(VIRTIO_SCSI, builtin, modules, config),
        initramfs_virtio_blk=has(VIRTIO_BLK),
        initramfs_virtio_net=has(VIRTIO_NET),
        initramfs_virtio_scsi=has(VIRTIO_SCSI),
    )


def find_bootloader(g: Any, firmware: str) -> Bootloader:
    efi_grub = glob_paths(g, "/boot/efi/EFI/*/grub.cfg")
    candidates: list[tuple[str, list[str]]] = [
        ("grub2", ["/boot/grub2/grub.cfg", "/boot/grub/grub.cfg", *efi_grub]),
        ("grub1", ["/boot/grub/menu.lst", "/boot/grub/grub.conf"]),
        ("extlinux", ["/boot/extlinux/extlinux.conf", "/boot/syslinux/syslinux.cfg"]),
        ("systemd-boot", ["/boot/efi/loader/loader.conf", "/efi/loader/loader.conf"]),
    ]
    for kind, paths in candidates:
        for path in paths:
            try:
                if g.is_file(path, followsymlinks=True):
                    return Bootloader(kind=kind, firmware=firmware, config=path)
            except RuntimeError:
                continue
    return Bootloader(kind="unknown", firmware=firmware, config=None)


def find_network_configs(g: Any) -> tuple[NetworkConfig, ...]:
    found: list[NetworkConfig] = []

    def add(path: str, kind: str, names: tuple[str, ...], text: str) -> None:
        found.append(NetworkConfig(path, kind, names, netconf.static_ipv4(kind, text)))

    for path in ["/etc/network/interfaces", *glob_paths(g, "/etc/network/interfaces.d/*")]:
        text = _read_text(g, path)
        if text is not None:
            add(path, "ifupdown", netconf.ifupdown_interfaces(text), text)
    for path in glob_paths(g, "/etc/netplan/*.yaml") + glob_paths(g, "/etc/netplan/*.yml"):
        text = _read_text(g, path)
        if text is not None:
            add(path, "netplan", netconf.netplan_interfaces(text), text)
    for directory, kind in (
        ("/etc/sysconfig/network-scripts", "ifcfg"),
        ("/etc/sysconfig/network", "wicked"),
    ):
        for path in glob_paths(g, f"{directory}/ifcfg-*"):
            text = _read_text(g, path)
            if text is not None:
                name = path.rsplit("/", 1)[-1]
                add(path, kind, netconf.ifcfg_interfaces(text, name), text)
    for path in glob_paths(g, "/etc/NetworkManager/system-connections/*"):
        text = _read_text(g, path)
        if text is not None:
            add(path, "networkmanager", netconf.nmconnection_interfaces(text), text)
    for pattern in ("/etc/systemd/network/*.network", "/etc/systemd/network/*.link"):
        for path in glob_paths(g, pattern):
            text = _read_text(g, path)
            if text is not None:
                add(path, "systemd-networkd", netconf.networkd_interfaces(text), text)
    return tuple(found)


def foreign_files(g: Any, table: list[tuple[str, str, Any]]) -> list[ForeignSoftware]:
    found = []
    for pattern, name, kind in table:
        for path in glob_paths(g, pattern):
            found.append(ForeignSoftware(kind, name, f"file {path}"))
            break
    return found
