"""The files a distribution kernel leaves in a guest: /boot/vmlinuz-*, /boot/config-*, the
/lib/modules tree and an initramfs, with virtio built in, modular or missing.

Content is stub but shaped like the real thing wherever a reader could look: `file` calls the
vmlinuz a bzImage of the right version, the .ko files are ELF-headed with a .modinfo-like
string, compressed modules are really compressed, modules.dep lists true dependencies.
"""

from __future__ import annotations

import lzma
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from tests.guests import initramfs_image as cpio
from tests.guests.manifest import ExpectedKernel

# name -> (path below kernel/ without .ko, CONFIG_ symbol, dependencies)
MODULES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "virtio": ("drivers/virtio/virtio", "VIRTIO", ()),
    "virtio_ring": ("drivers/virtio/virtio_ring", "VIRTIO", ()),
    "virtio_pci": ("drivers/virtio/virtio_pci", "VIRTIO_PCI", ("virtio", "virtio_ring")),
    "virtio_balloon": ("drivers/virtio/virtio_balloon", "VIRTIO_BALLOON", ("virtio",)),
    "virtio_blk": ("drivers/block/virtio_blk", "VIRTIO_BLK", ("virtio", "virtio_ring")),
    "failover": ("net/core/failover", "FAILOVER", ()),
    "net_failover": ("drivers/net/net_failover", "NET_FAILOVER", ("failover",)),
    "virtio_net": (
        "drivers/net/virtio_net",
        "VIRTIO_NET",
        ("net_failover", "failover", "virtio", "virtio_ring"),
    ),
    "virtio_scsi": ("drivers/scsi/virtio_scsi", "SCSI_VIRTIO", ("virtio", "virtio_ring")),
    "virtio_console": ("drivers/char/virtio_console", "VIRTIO_CONSOLE", ("virtio",)),
    "vmw_pvscsi": ("drivers/scsi/vmw_pvscsi", "VMWARE_PVSCSI", ()),
    "vmxnet3": ("drivers/net/vmxnet3/vmxnet3", "VMXNET3", ()),
    "libahci": ("drivers/ata/libahci", "SATA_AHCI", ()),
    "ahci": ("drivers/ata/ahci", "SATA_AHCI", ("libahci",)),
    "e1000": ("drivers/net/ethernet/intel/e1000/e1000", "E1000", ()),
    "scsi_transport_spi": ("drivers/scsi/scsi_transport_spi", "SCSI_SPI_ATTRS", ()),
    "mptbase": ("drivers/message/fusion/mptbase", "FUSION_SPI", ()),
    "mptscsih": ("drivers/message/fusion/mptscsih", "FUSION_SPI", ("mptbase",)),
    "mptspi": (
        "drivers/message/fusion/mptspi",
        "FUSION_SPI",
        ("mptscsih", "mptbase", "scsi_transport_spi"),
    ),
    "hv_vmbus": ("drivers/hv/hv_vmbus", "HYPERV", ()),
    "hv_storvsc": ("drivers/scsi/hv_storvsc", "HYPERV_STORAGE", ("hv_vmbus",)),
    "hv_netvsc": ("drivers/net/hyperv/hv_netvsc", "HYPERV_NET", ("hv_vmbus",)),
    "mbcache": ("fs/mbcache", "FS_MBCACHE", ()),
    "jbd2": ("fs/jbd2/jbd2", "JBD2", ()),
    "ext4": ("fs/ext4/ext4", "EXT4_FS", ("mbcache", "jbd2")),
}

VIRTIO = (
    "virtio",
    "virtio_ring",
    "virtio_pci",
    "virtio_balloon",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
)
VIRTIO_SYMBOLS = tuple(dict.fromkeys(MODULES[m][1] for m in VIRTIO))


@dataclass(frozen=True)
class Initramfs:
    filename: str  # below /boot
    style: str  # initramfs-tools | dracut
    compression: str  # none | gzip | zstd | xz
    modules: tuple[str, ...]  # names from MODULES that the image carries
    usrmerge: bool  # modules under usr/lib/modules with lib -> usr/lib, as on merged-/usr
    early_microcode: bool = True


@dataclass(frozen=True)
class Kernel:
    version: str
    virtio: str  # module | builtin | absent
    modules: tuple[str, ...]  # non-virtio modules built as .ko files
    module_suffix: str = ""  # "", ".xz" (RHEL) or ".zst" (SUSE)
    initramfs: Initramfs | None = None
    vmlinuz: str = ""  # file name below /boot; vmlinuz-VERSION when empty
    banner: str = "#1 SMP PREEMPT_DYNAMIC"

    @property
    def vmlinuz_name(self) -> str:
        return self.vmlinuz or f"vmlinuz-{self.version}"

    def module_files(self) -> tuple[str, ...]:
        """Every module installed as a file, virtio ones only when the kernel builds them so."""
        virtio = VIRTIO if self.virtio == "module" else ()
        return tuple(dict.fromkeys((*virtio, *self.modules)))

    def expected(self) -> ExpectedKernel:
        return ExpectedKernel(
            version=self.version,
            virtio_blk=self.virtio,
            virtio_net=self.virtio,
            initramfs_virtio_blk=(
                None if self.initramfs is None else "virtio_blk" in self.initramfs.modules
            ),
        )


def _ko_path(name: str, suffix: str) -> str:
    return f"kernel/{MODULES[name][0]}.ko{suffix}"


def _ko_bytes(name: str, version: str, suffix: str) -> bytes:
    # An ELF64 little-endian relocatable header followed by .modinfo-style strings.
    raw = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + b"\x01\x00\x3e\x00"
        + b"\0" * 44
        + f"license=GPL\0name={name}\0vermagic={version} SMP mod_unload modversions \0".encode()
    )
    if suffix == ".xz":
        return lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    if suffix == ".zst":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def bzimage_stub(version: str, banner: str) -> bytes:
    """Enough of a bzImage boot sector for `file` and version probes to recognise it."""
    img = bytearray(4096)
    img[0x1F1] = 1  # setup_sects
    img[0x1FE:0x200] = b"\x55\xaa"
    img[0x202:0x206] = b"HdrS"
    img[0x206:0x208] = (0x020F).to_bytes(2, "little")  # boot protocol 2.15
    img[0x20E:0x210] = (0x100).to_bytes(2, "little")  # version string at 0x200 + 0x100
    img[0x211] = 1  # loadflags: LOADED_HIGH, i.e. a bzImage
    text = f"{version} (builder@phony) {banner}\0".encode()
    img[0x300 : 0x300 + len(text)] = text
    return bytes(img)


def _config(kernel: Kernel) -> str:
    values = {"64BIT": "y", "X86_64": "y", "MODULES": "y", "BLK_DEV_SD": "y", "EXT4_FS": "y"}
    values["VIRTIO_MENU"] = "n" if kernel.virtio == "absent" else "y"
    virtio = {"module": "m", "builtin": "y", "absent": "n"}[kernel.virtio]
    values.update(dict.fromkeys(VIRTIO_SYMBOLS, virtio))
    values.update({MODULES[m][1]: "m" for m in kernel.modules if m not in VIRTIO})
    lines = [f"# Linux/x86 {kernel.version} Kernel Configuration"]
    lines += [
        f"# CONFIG_{sym} is not set" if v == "n" else f"CONFIG_{sym}={v}"
        for sym, v in values.items()
    ]
    return "\n".join(lines) + "\n"


def _modules_dep(names: Sequence[str], suffix: str) -> str:
    lines = []
    for name in names:
        deps = " ".join(_ko_path(d, suffix) for d in MODULES[name][2] if d in names)
        lines.append(f"{_ko_path(name, suffix)}:{' ' + deps if deps else ''}")
    return "\n".join(lines) + "\n"


def _modules_builtin(kernel: Kernel) -> str:
    names = VIRTIO if kernel.virtio == "builtin" else ()
    return "".join(f"{_ko_path(n, '')}\n" for n in names)


def modules_dir_files(kernel: Kernel, names: Sequence[str]) -> dict[str, bytes]:
    """The files of lib/modules/VERSION holding `names`, keyed by path below that directory."""
    files = {
        "modules.dep": _modules_dep(names, kernel.module_suffix).encode(),
        "modules.builtin": _modules_builtin(kernel).encode(),
        "modules.order": "".join(f"{_ko_path(n, '')}\n" for n in names).encode(),
    }
    for name in names:
        files[_ko_path(name, kernel.module_suffix)] = _ko_bytes(
            name, kernel.version, kernel.module_suffix
        )
    return files


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def install(root: Path, kernel: Kernel) -> None:
    """Write the kernel's files into the staged guest tree at `root`."""
    install_boot_files(root, kernel)
    boot = root / "boot"
    _write(boot / f"config-{kernel.version}", _config(kernel).encode())
    _write(boot / f"System.map-{kernel.version}", b"ffffffff81000000 T _stext\n")
    moddir = root / "lib/modules" / kernel.version
    for rel, data in modules_dir_files(kernel, kernel.module_files()).items():
        _write(moddir / rel, data)


def install_boot_files(root: Path, kernel: Kernel) -> None:
    """Only the vmlinuz and initramfs: what a rescue-kernel copy leaves in /boot."""
    boot = root / "boot"
    _write(boot / kernel.vmlinuz_name, bzimage_stub(kernel.version, kernel.banner))
    if kernel.initramfs is not None:
        _write(boot / kernel.initramfs.filename, initramfs_bytes(kernel, kernel.initramfs))


def initramfs_bytes(kernel: Kernel, spec: Initramfs) -> bytes:
    segments: list[tuple[str, list[cpio.CpioEntry]]] = []
    if spec.early_microcode:
        early = [cpio.regular("kernel/x86/microcode/GenuineIntel.bin", b"\0" * 48)]
        if spec.style == "dracut":
            early.insert(0, cpio.regular("early_cpio", b"1\n"))
        segments.append(("none", early))
    segments.append((spec.compression, _initramfs_main(kernel, spec)))
    return cpio.image(segments)


def _initramfs_main(kernel: Kernel, spec: Initramfs) -> list[cpio.CpioEntry]:
    entries: list[cpio.CpioEntry] = []
    if spec.usrmerge:
        entries += [cpio.symlink(d, f"usr/{d}") for d in ("bin", "lib", "lib64", "sbin")]
        moddir = f"usr/lib/modules/{kernel.version}"
        bindir = "usr/bin"
    else:
        moddir = f"lib/modules/{kernel.version}"
        bindir = "bin"
    if spec.style == "dracut":
        entries += [
            cpio.symlink("init", "usr/lib/systemd/systemd"),
            cpio.regular("usr/lib/systemd/systemd", b"\x7fELF", 0o755),
            cpio.regular("etc/initrd-release", b'NAME="dracut"\nID=dracut\n'),
            cpio.regular(
                "usr/lib/dracut/modules.txt", b"systemd\nkernel-modules\nrootfs-block\nudev-rules\n"
            ),
        ]
    else:
        entries += [
            cpio.regular("init", b"#!/bin/sh\n# initramfs-tools init\nexec /sbin/init\n", 0o755),
            cpio.regular("conf/initramfs.conf", b"MODULES=dep\nBUSYBOX=auto\nCOMPRESS=zstd\n"),
            cpio.regular("conf/arch.conf", b"DPKG_ARCH=amd64\n"),
            cpio.regular(f"{bindir}/busybox", b"\x7fELF", 0o755),
            cpio.regular("scripts/local", b"# local root mounting\n"),
        ]
    entries += [
        cpio.regular(f"{moddir}/{rel}", data)
        for rel, data in modules_dir_files(kernel, spec.modules).items()
    ]
    return entries
