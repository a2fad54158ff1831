"""A real Debian 12 guest that looks as if it was installed on VMware.

Unlike the synthetic guests, this one boots: debootstrap builds a bookworm system with a kernel,
grub and open-vm-tools, and libguestfs lays it onto an MBR disk shipped as VMX + VMDK. It is made
the way a VMware install leaves it, which is exactly what a conversion has to undo:

- root is named `/dev/sda1` in fstab and on the kernel command line (GRUB_DISABLE_LINUX_UUID), so
  the guest depends on the disk staying `sda` on a SCSI-like bus;
- the initramfs is `MODULES=list` with VMware/IDE/AHCI storage drivers only, so on virtio-blk it
  stops with "Gave up waiting for root file system device";
- the NIC is configured by ifupdown under VMware's name `ens192` with a static TEST-NET address;
- open-vm-tools is installed.

Two more variants share that recipe and differ only in their disk (see VARIANTS):
- LVM root: MBR, /boot ext4 on sda1, VG vg0 (LVs root and swap_1) on sda2, fstab naming
  /dev/mapper/vg0-root and /boot as /dev/sda1, lvm2 in the initramfs, which is lz4-compressed
  (COMPRESS=lz4, Ubuntu 20.04-22.04's default): the kernel reads lz4 to the end of the image, so
  vmshift cannot append drivers to it and rebuilds it with update-initramfs instead;
- GPT + UEFI: an ESP on sda1 holding grub-efi-amd64 both as EFI/debian and as the removable
  fallback EFI/BOOT/BOOTX64.EFI (OVMF boots it with empty NVRAM), root /dev/sda2, VMX
  firmware "efi".

Two caches: the debootstrap tree (slow: downloads and installs packages, keyed by the package
list, so the LVM and UEFI variants each have their own) and the disk image (keyed by this
file), so editing the image recipe does not re-download.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tests.guests.cache import cache_root, cached_dir, source_version
from tests.guests.manifest import (
    BuiltGuest,
    ExpectedKernel,
    ExpectedLinux,
    ExpectedNetworkConfig,
    ExpectedOS,
)

NAME = "debian12-vmware"
HOSTNAME = "debian12-vmware"
ROOT_PASSWORD = "vmshift"
# VMware only accepts addressType="static" MACs in 00:50:56:00:00:00 - 00:50:56:3f:ff:ff.
MAC = "00:50:56:1a:2b:3c"
DISK_SIZE = 3 * 1024**3

MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
# minbase is enough: --include pulls each package's Depends, and nothing below needs a Recommends.
PACKAGES = (
    "linux-image-amd64",
    "grub-pc",
    "initramfs-tools",
    "busybox",  # what a normal install has; gives the "(initramfs)" rescue shell its prompt
    "systemd-sysv",
    "udev",
    "kmod",
    "e2fsprogs",
    "ifupdown",
    "iproute2",
    "open-vm-tools",
)
# Module trees no test guest needs. Dropping them halves the image (faster tar-in and copies);
# storage, network, virtio and filesystem drivers all stay, and depmod is rerun.
PRUNED_MODULE_DIRS = (
    "kernel/sound",
    "kernel/drivers/gpu",
    "kernel/drivers/media",
    "kernel/drivers/net/wireless",
    "kernel/drivers/infiniband",
    "kernel/drivers/staging",
    "kernel/drivers/bluetooth",
    "kernel/drivers/iio",
    "kernel/drivers/isdn",
    "kernel/net/wireless",
    "kernel/net/mac80211",
    "kernel/net/bluetooth",
)
# Bump to rebuild the tree when the recipe in _build_tree changes in a way PACKAGES does not show.
TREE_RECIPE = "1"

# What VMware's default install of Debian would load to find its disk: pvscsi (the default for
# "Debian 12 64-bit"), LSI Logic SPI/SAS, SATA (AHCI) and IDE. Nothing virtio: that is the point.
INITRAMFS_MODULES = (
    "vmw_pvscsi",
    "mptspi",
    "mptsas",
    "ahci",
    "ata_piix",
    "ata_generic",
    "sd_mod",
    "sr_mod",
    "ext4",
)

FSTAB = """\
# /etc/fstab: static file system information.
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
/dev/sda1       /               ext4    errors=remount-ro 0       1
"""

INTERFACES = """\
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
auto ens192
iface ens192 inet static
\taddress 192.0.2.10/24
\tgateway 192.0.2.1
"""
# Every interface named in INTERFACES, loopback included: the inspector reports what the file
# names, and the converter has to find ens192 there.
INTERFACE_NAMES = ("lo", "ens192")


def hosts(hostname: str) -> str:
    return (
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )


HOSTS = hosts(HOSTNAME)

GRUB_DEFAULT = """\
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"
GRUB_DISABLE_LINUX_UUID=true
GRUB_DISABLE_OS_PROBER=true
"""

NODOC = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""


FSTAB_LVM = """\
# /etc/fstab: static file system information.
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
/dev/mapper/vg0-root /          ext4    errors=remount-ro 0       1
# /boot was on /dev/sda1 during installation
/dev/sda1       /boot           ext4    defaults        0       2
/dev/mapper/vg0-swap_1 none     swap    sw              0       0
"""

FSTAB_UEFI = """\
# /etc/fstab: static file system information.
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
/dev/sda2       /               ext4    errors=remount-ro 0       1
# /boot/efi was on /dev/sda1 during installation
/dev/sda1       /boot/efi       vfat    umask=0077      0       1
"""

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BOOT_MIB = 256  # /boot of the LVM variant
SWAP_MIB = 128
ESP_MIB = 128
_SECTORS_PER_MIB = 2048


@dataclass(frozen=True)
class Variant:
    """One real guest: the packages in its tree and the disk they are laid out on."""

    name: str  # cache directory, file stem and the VMX's displayName
    hostname: str
    packages: tuple[str, ...]
    layout: str  # mbr | lvm | uefi
    fstab: str
    root_device: str  # the root= every kernel line of grub.cfg must carry
    firmware: str  # bios | uefi, as inspection reports it (the VMX says "efi")
    mountpoints: tuple[tuple[str, str], ...]  # (mountpoint, filesystem type)
    applications: tuple[str, ...]  # packages inspection must list, besides the kernel
    bios_uuid: str
    compress: str = "zstd"  # COMPRESS= of initramfs.conf


BASE = Variant(
    name=NAME,
    hostname=HOSTNAME,
    packages=PACKAGES,
    layout="mbr",
    fstab=FSTAB,
    root_device="/dev/sda1",
    firmware="bios",
    mountpoints=(("/", "ext4"),),
    applications=("open-vm-tools", "grub-pc", "ifupdown"),
    bios_uuid="42 1a 5e 3c 7d 9b 0a 11-8c 2e 4f 6a 1b 3d 5c 70",
)
LVM = Variant(
    name="debian12-vmware-lvm",
    hostname="debian12-lvm",
    packages=(*PACKAGES, "lvm2", "lz4"),
    layout="lvm",
    fstab=FSTAB_LVM,
    root_device="/dev/mapper/vg0-root",
    firmware="bios",
    mountpoints=(("/", "ext4"), ("/boot", "ext4")),
    applications=("open-vm-tools", "grub-pc", "ifupdown", "lvm2"),
    bios_uuid="42 1a 5e 3c 7d 9b 0a 11-8c 2e 4f 6a 1b 3d 5c 71",
    compress="lz4",
)
UEFI = Variant(
    name="debian12-vmware-uefi",
    hostname="debian12-uefi",
    # grub-pc and grub-efi-amd64 conflict: a UEFI install has only the latter.
    packages=tuple("grub-efi-amd64" if p == "grub-pc" else p for p in PACKAGES),
    layout="uefi",
    fstab=FSTAB_UEFI,
    root_device="/dev/sda2",
    firmware="uefi",
    mountpoints=(("/", "ext4"), ("/boot/efi", "vfat")),
    applications=("open-vm-tools", "grub-efi-amd64", "ifupdown"),
    bios_uuid="42 1a 5e 3c 7d 9b 0a 11-8c 2e 4f 6a 1b 3d 5c 72",
)
VARIANTS = (BASE, LVM, UEFI)


@dataclass(frozen=True)
class _Facts:
    """What the build learnt about the guest, kept next to the image so a cache hit is free."""

    kernel_version: str
    debian_version: str
    product_name: str
    kernel_package: str
    build_seconds: float

    @classmethod
    def load(cls, path: Path) -> _Facts:
        data = json.loads(path.read_text())
        return cls(
            kernel_version=str(data["kernel_version"]),
            debian_version=str(data["debian_version"]),
            product_name=str(data["product_name"]),
            kernel_package=str(data["kernel_package"]),
            build_seconds=float(data["build_seconds"]),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n")


def _run(args: list[str], *, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{args[0]} failed with exit code {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    root = path.resolve()
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        # Field 5 is the mount point, with spaces and such octal-escaped.
        mnt = Path(line.split()[4].encode().decode("unicode_escape"))
        if mnt == root or root in mnt.parents:
            found.append(mnt)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _unmount_all_under(path: Path) -> None:
    # debootstrap mounts /proc and /sys in the target and normally unmounts them; if it died
    # half-way they would stay, and the cache's rmtree would then walk into the host's /sys.
    for mnt in _mounts_under(path):
        subprocess.run(["umount", "--lazy", str(mnt)], check=False, capture_output=True)
    left = _mounts_under(path)
    if left:
        raise RuntimeError(f"cannot unmount {left}; remove them by hand before retrying")


def _tree_version(packages: tuple[str, ...] = PACKAGES) -> str:
    recipe = repr((SUITE, MIRROR, "minbase", packages, PRUNED_MODULE_DIRS, NODOC, TREE_RECIPE))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def debootstrap_tree(packages: tuple[str, ...] = PACKAGES) -> Path:
    """The installed bookworm tree with `packages` (cached). Only the image builder should
    write below it."""
    build = partial(_build_tree, packages)
    return cached_dir("debian12-tree", _tree_version(packages), build) / "root"


def _build_tree(packages: tuple[str, ...], out: Path) -> None:
    started = time.monotonic()
    target = out / "root"
    # Downloaded .debs survive a tree rebuild, so changing the recipe costs no second download.
    debs = cache_root() / "debootstrap-debs"
    debs.mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "DEBCONF_NONINTERACTIVE_SEEN": "true",
    }
    try:
        _run(
            [
                "debootstrap",
                "--arch=amd64",
                "--variant=minbase",
                "--components=main",
                f"--include={','.join(packages)}",
                f"--cache-dir={debs}",
                SUITE,
                str(target),
                MIRROR,
            ],
            env=env,
        )
    finally:
        _unmount_all_under(target)
    _slim_tree(target)
    seconds = round(time.monotonic() - started, 1)
    (out / "build.json").write_text(json.dumps({"build_seconds": seconds}) + "\n")


def _slim_tree(root: Path) -> None:
    for rel in ("usr/share/man", "usr/share/info", "usr/share/locale"):
        for child in (root / rel).glob("*"):
            if child.name == "locale.alias":
                continue
            _remove(child)
    for doc in (root / "usr/share/doc").glob("*"):
        for child in doc.glob("*"):
            if child.name != "copyright":
                _remove(child)
    for rel in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for child in (root / rel).glob("*"):
            if child.is_file() and child.name != "lock":
                child.unlink()
    for child in (root / "var/cache/apt").glob("*.bin"):
        child.unlink()
    (root / "etc/dpkg/dpkg.cfg.d/01-nodoc").write_text(NODOC)

    for kdir in (root / "lib/modules").iterdir():
        for rel in PRUNED_MODULE_DIRS:
            _remove(kdir / rel)
        _run(["depmod", "-b", str(root), kdir.name])


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _kernel_version(tree: Path) -> str:
    versions = sorted(p.name for p in (tree / "lib/modules").iterdir())
    if len(versions) != 1:
        raise RuntimeError(f"expected one kernel in the tree, found {versions}")
    return versions[0]


def build_real_debian() -> BuiltGuest:
    """The Debian 12 VMware guest: built on first use (a few minutes), then read from the cache."""
    return _build(BASE)


def build_real_debian_lvm() -> BuiltGuest:
    """The LVM-root variant (VMX + VMDK, BIOS): built on first use, then read from the cache."""
    return _build(LVM)


def build_real_debian_uefi() -> BuiltGuest:
    """The GPT + UEFI variant (VMX firmware "efi"): built on first use, then cached."""
    return _build(UEFI)


def _build(variant: Variant) -> BuiltGuest:
    tree = debootstrap_tree(variant.packages)
    out = cached_dir(variant.name, source_version(__file__), partial(_build_image, variant))
    facts = _Facts.load(out / "facts.json")
    return BuiltGuest(
        name=variant.name,
        disks=(out / f"{variant.name}.vmdk",),
        oses=(_expected(variant, facts),),
        extra={"vmx": out / f"{variant.name}.vmx", "tree": tree, "facts": out / "facts.json"},
    )


def _expected(variant: Variant, facts: _Facts) -> ExpectedOS:
    return ExpectedOS(
        type="linux",
        distro="debian",
        product_name=facts.product_name,
        major_version=12,
        minor_version=int(facts.debian_version.split(".")[1]),
        arch="x86_64",
        hostname=variant.hostname,
        package_format="deb",
        package_manager="apt",
        firmware=variant.firmware,
        mountpoints=dict(variant.mountpoints),
        applications=(*variant.applications, facts.kernel_package),
        foreign_software=("vmware",),
        linux=ExpectedLinux(
            kernels=(
                ExpectedKernel(
                    version=facts.kernel_version,
                    virtio_blk="module",
                    virtio_net="module",
                    initramfs_virtio_blk=False,
                ),
            ),
            bootloader="grub2",
            network_configs=(
                ExpectedNetworkConfig("/etc/network/interfaces", "ifupdown", INTERFACE_NAMES),
            ),
        ),
    )


def _build_image(variant: Variant, out: Path) -> None:
    started = time.monotonic()
    tree = debootstrap_tree(variant.packages)
    kernel = _kernel_version(tree)
    tarball = out / "tree.tar"
    raw = out / "disk.raw"
    # --numeric-owner stores ids without names, so the appliance's passwd cannot remap them.
    _run(
        ["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(tree), "-cf", str(tarball), "."]
    )
    try:
        facts = _fill_disk(variant, raw, tarball, kernel)
    finally:
        tarball.unlink(missing_ok=True)
    # adapter_type=lsilogic is what VMware writes into the descriptor of a (pv)SCSI disk.
    vmdk = f"{variant.name}.vmdk"
    _run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=monolithicSparse,adapter_type=lsilogic",
            str(raw),
            str(out / vmdk),
        ]
    )
    raw.unlink()
    (out / f"{variant.name}.vmx").write_text(_vmx(variant, vmdk))
    _Facts(
        kernel_version=kernel,
        debian_version=facts["debian_version"],
        product_name=facts["product_name"],
        kernel_package=f"linux-image-{kernel}",
        build_seconds=round(time.monotonic() - started, 1),
    ).save(out / "facts.json")
    (out / "initramfs-modules.txt").write_text("\n".join(facts["initramfs_modules"]) + "\n")


def _fill_disk(variant: Variant, raw: Path, tarball: Path, kernel: str) -> dict[str, Any]:
    """Partition, unpack, configure, make bootable; return what inspection and lsinitramfs saw."""
    import guestfs

    from tests.guests.boot import kvm_usable

    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.set_backend("direct")
        if not kvm_usable():
            g.set_backend_settings(["force_tcg"])
        g.disk_create(str(raw), "raw", DISK_SIZE, preallocation="sparse")
        g.add_drive_opts(str(raw), format="raw")
        g.launch()
        _lay_out(g, variant)
        g.tar_in(str(tarball), "/", xattrs=True, acls=True)
        _configure(g, variant)
        # In the appliance the disk is /dev/sda on virtio-scsi, the same name it has on pvscsi.
        g.command(["update-initramfs", "-u", "-k", kernel])
        _install_grub(g, variant)
        g.command(["update-grub"])
        grub_cfg = g.cat("/boot/grub/grub.cfg")
        if f"root={variant.root_device} " not in grub_cfg or "root=UUID" in grub_cfg:
            raise RuntimeError(
                f"grub.cfg does not name the root {variant.root_device}:\n{grub_cfg}"
            )
        initramfs_modules = _initramfs_modules(g, kernel, raw.parent)
        debian_version = g.cat("/etc/debian_version").strip()
        g.umount_all()

        roots = g.inspect_os()
        if len(roots) != 1:
            raise RuntimeError(f"inspection found {roots}")
        root = roots[0]
        product_name = g.inspect_get_product_name(root)
        seen = {
            "distro": g.inspect_get_distro(root),
            "major": g.inspect_get_major_version(root),
            "minor": g.inspect_get_minor_version(root),
            "hostname": g.inspect_get_hostname(root),
            "arch": g.inspect_get_arch(root),
            "package_format": g.inspect_get_package_format(root),
            "mountpoints": sorted(g.inspect_get_mountpoints(root)),
        }
        want = {
            "distro": "debian",
            "major": 12,
            "minor": int(debian_version.split(".")[1]),
            "hostname": variant.hostname,
            "arch": "x86_64",
            "package_format": "deb",
            "mountpoints": sorted(mp for mp, _ in variant.mountpoints),
        }
        if seen != want:
            raise RuntimeError(f"libguestfs inspection says {seen}, the builder made {want}")
        g.shutdown()
    finally:
        g.close()
    return {
        "debian_version": debian_version,
        "product_name": product_name,
        "initramfs_modules": initramfs_modules,
    }


def _lay_out(g: Any, variant: Variant) -> None:
    """Partition and format /dev/sda as the variant says; mount it all at the guest's paths."""
    first = 2048
    if variant.layout == "mbr":
        g.part_init("/dev/sda", "mbr")
        g.part_add("/dev/sda", "p", first, -1)
        g.part_set_bootable("/dev/sda", 1, True)
        g.mkfs("ext4", "/dev/sda1")
        mounts = [("/dev/sda1", "/")]
    elif variant.layout == "lvm":
        # debian-installer's "guided - use entire disk and set up LVM", /boot first.
        boot_end = first + BOOT_MIB * _SECTORS_PER_MIB
        g.part_init("/dev/sda", "mbr")
        g.part_add("/dev/sda", "p", first, boot_end - 1)
        g.part_add("/dev/sda", "p", boot_end, -1)
        g.part_set_bootable("/dev/sda", 1, True)
        g.part_set_mbr_id("/dev/sda", 2, 0x8E)
        g.mkfs("ext4", "/dev/sda1")
        g.pvcreate("/dev/sda2")
        g.vgcreate("vg0", ["/dev/sda2"])
        g.lvcreate("swap_1", "vg0", SWAP_MIB)
        g.lvcreate_free("root", "vg0", 100)
        g.mkfs("ext4", "/dev/vg0/root")
        g.mkswap("/dev/vg0/swap_1")
        mounts = [("/dev/vg0/root", "/"), ("/dev/sda1", "/boot")]
    elif variant.layout == "uefi":
        esp_end = first + ESP_MIB * _SECTORS_PER_MIB
        g.part_init("/dev/sda", "gpt")
        g.part_add("/dev/sda", "p", first, esp_end - 1)
        # The last 33 sectors hold the backup GPT.
        g.part_add("/dev/sda", "p", esp_end, -34)
        g.part_set_gpt_type("/dev/sda", 1, ESP_GUID)
        g.mkfs("vfat", "/dev/sda1")
        g.mkfs("ext4", "/dev/sda2")
        mounts = [("/dev/sda2", "/"), ("/dev/sda1", "/boot/efi")]
    else:
        raise ValueError(f"unknown layout {variant.layout!r}")
    for device, mountpoint in mounts:
        if mountpoint != "/":
            g.mkdir_p(mountpoint)
        g.mount(device, mountpoint)


def _install_grub(g: Any, variant: Variant) -> None:
    if variant.layout != "uefi":
        g.command(["grub-install", "--target=i386-pc", "/dev/sda"])
        return
    # The appliance has no EFI variables to write a boot entry into, and a VM booted with
    # fresh OVMF variables finds nothing but the removable-media path: install grub there
    # too, as Debian does with grub2/force_efi_extra_removable.
    efi = ["grub-install", "--target=x86_64-efi", "--efi-directory=/boot/efi", "--no-nvram"]
    g.command([*efi, "--bootloader-id=debian"])
    g.command([*efi, "--removable"])
    for path in ("/boot/efi/EFI/debian/grubx64.efi", "/boot/efi/EFI/BOOT/BOOTX64.EFI"):
        if not g.is_file(path):
            raise RuntimeError(f"grub-install left no {path}")


def _configure(g: Any, variant: Variant) -> None:
    """What a Debian installer on VMware would have left, with root by device name."""
    g.write("/etc/hostname", variant.hostname + "\n")
    g.write("/etc/hosts", hosts(variant.hostname))
    g.write("/etc/fstab", variant.fstab)
    g.write("/etc/network/interfaces", INTERFACES)
    g.mkdir_p("/etc/network/interfaces.d")
    g.write("/etc/default/grub", GRUB_DEFAULT)
    conf = g.cat("/etc/initramfs-tools/initramfs.conf")
    if "\nMODULES=most\n" not in conf:
        raise RuntimeError("initramfs.conf no longer says MODULES=most; check the recipe")
    if "\nCOMPRESS=zstd\n" not in conf:
        raise RuntimeError("initramfs.conf no longer says COMPRESS=zstd; check the recipe")
    conf = conf.replace("\nMODULES=most\n", "\nMODULES=list\n")
    conf = conf.replace("\nCOMPRESS=zstd\n", f"\nCOMPRESS={variant.compress}\n")
    g.write("/etc/initramfs-tools/initramfs.conf", conf)
    g.write(
        "/etc/initramfs-tools/modules",
        "# VMware storage (pvscsi, LSI Logic), SATA and IDE; the root filesystem.\n"
        + "\n".join(INITRAMFS_MODULES)
        + "\n",
    )
    if variant.layout == "lvm":
        # debian-installer names the swap it set up as the resume device.
        g.write("/etc/initramfs-tools/conf.d/resume", "RESUME=/dev/mapper/vg0-swap_1\n")
    # systemd would start it anyway for the last console= on the command line; enabling it
    # makes the login prompt independent of the command line the converter leaves behind.
    g.mkdir_p("/etc/systemd/system/getty.target.wants")
    g.ln_sf(
        "/lib/systemd/system/serial-getty@.service",
        "/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service",
    )
    g.command(["sh", "-c", f"echo root:{ROOT_PASSWORD} | chpasswd"])


def _initramfs_modules(g: Any, kernel: str, scratch: Path) -> list[str]:
    """Kernel modules in the new initramfs, checked to hold no virtio driver."""
    local = scratch / "initrd.img"
    g.download(f"/boot/initrd.img-{kernel}", str(local))
    try:
        listing = _run(["lsinitramfs", str(local)])
    finally:
        local.unlink()
    modules = sorted(
        Path(line).name.removesuffix(".ko")
        for line in listing.splitlines()
        if line.endswith(".ko") or ".ko." in line
    )
    virtio = [m for m in modules if "virtio" in m]
    if virtio:
        raise RuntimeError(f"the initramfs must not carry virtio drivers, it has {virtio}")
    return modules


def _vmx(variant: Variant, vmdk_name: str) -> str:
    """A VMX as ESXi 7 writes it for a Debian VM with pvscsi and vmxnet3 (trimmed)."""
    entries = {
        ".encoding": "UTF-8",
        "config.version": "8",
        "virtualHW.version": "19",
        "displayName": variant.name,
        "guestOS": "debian12-64",
        "memSize": "1024",
        "numvcpus": "2",
        "cpuid.coresPerSocket": "1",
        "firmware": "efi" if variant.firmware == "uefi" else "bios",
        "nvram": f"{variant.name}.nvram",
        "uuid.bios": variant.bios_uuid,
        "pciBridge0.present": "TRUE",
        "pciBridge4.present": "TRUE",
        "pciBridge4.virtualDev": "pcieRootPort",
        "pciBridge4.functions": "8",
        "scsi0.present": "TRUE",
        "scsi0.virtualDev": "pvscsi",
        "scsi0.pciSlotNumber": "160",
        "scsi0:0.present": "TRUE",
        "scsi0:0.fileName": vmdk_name,
        "scsi0:0.deviceType": "scsi-hardDisk",
        "ethernet0.present": "TRUE",
        "ethernet0.virtualDev": "vmxnet3",
        "ethernet0.networkName": "VM Network",
        "ethernet0.addressType": "static",
        "ethernet0.address": MAC,
        # Slot 192 is why the guest calls its NIC ens192.
        "ethernet0.pciSlotNumber": "192",
        "floppy0.present": "FALSE",
        "tools.syncTime": "FALSE",
    }
    return "".join(f'{key} = "{value}"\n' for key, value in entries.items())
