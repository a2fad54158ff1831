"""Phony Debian and Ubuntu guests (dpkg, initramfs-tools, grub-pc or grub-efi)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.guests import kernel_files, linux_files, stub_tools
from tests.guests.disks import DiskJob, DiskSpec, Formatted, Volume
from tests.guests.kernel_files import Initramfs, Kernel
from tests.guests.linux_files import DebPackage
from tests.guests.manifest import ExpectedNetworkConfig
from tests.guests.recipe import (
    COMMON_MODULES,
    EXT4,
    FUSION,
    ROOT_DISK_MIB,
    Recipe,
    expected_linux,
    grub_root,
    separate_boot,
)

DEB12_KVER = "6.1.0-18-amd64"
_DEB12_BANNER = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"
_GRUB_DISTRIBUTOR = "`lsb_release -i -s 2> /dev/null || echo Debian`"
_APT = ("deb", "apt")


def _debian12_kernel(*, initramfs_virtio: bool) -> Kernel:
    virtio = ("virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_scsi")
    carried = ("vmw_pvscsi", "libahci", "ahci", *FUSION, *EXT4)
    return Kernel(
        version=DEB12_KVER,
        virtio="module",
        modules=(*COMMON_MODULES, *FUSION, *EXT4),
        banner=_DEB12_BANNER,
        initramfs=Initramfs(
            filename=f"initrd.img-{DEB12_KVER}",
            style="initramfs-tools",
            compression="zstd",
            modules=(*carried, *virtio) if initramfs_virtio else carried,
            usrmerge=True,
        ),
    )


def _debian12_packages(*extra: DebPackage) -> tuple[DebPackage, ...]:
    base = (
        DebPackage("base-files", "12.4+deb12u5", "admin"),
        DebPackage("bash", "5.2.15-2+b2", "shells"),
        DebPackage("coreutils", "9.1-1", "utils"),
        DebPackage("dpkg", "1.21.22", "admin"),
        DebPackage("grub-common", "2.06-13+deb12u1", "admin"),
        DebPackage("initramfs-tools", "0.142", "utils", "all"),
        DebPackage(f"linux-image-{DEB12_KVER}", "6.1.76-1", "kernel"),
        DebPackage("linux-image-amd64", "6.1.76-1", "kernel"),
        DebPackage("openssh-server", "1:9.2p1-2+deb12u2", "net"),
        DebPackage("systemd", "252.22-1~deb12u1", "admin"),
        DebPackage("zstd", "1.5.4+dfsg2-5", "utils"),
    )
    return tuple(sorted((*base, *extra), key=lambda p: p.name))


def _initramfs_tools(root: Path, kernel: Kernel) -> None:
    """Stub tools and an initramfs-tools setup that agrees with the image: an image carrying
    virtio was made with MODULES=most, one without it with MODULES=dep on the old hypervisor."""
    stub_tools.install_deb_family(root)
    generic = kernel.initramfs is not None and "virtio_blk" in kernel.initramfs.modules
    linux_files.initramfs_tools_config(root, "most" if generic else "dep")


def _grub_modules(root: Path, platform: str) -> None:
    for name in ("normal.mod", "ext2.mod", "part_msdos.mod", "part_gpt.mod"):
        linux_files.write(root, f"boot/grub/{platform}/{name}", b"\0" * 64)
    if platform == "i386-pc":
        linux_files.write(root, "boot/grub/i386-pc/core.img", b"\0" * 512)


def _debian_system(
    root: Path,
    fmt: Formatted,
    job: DiskJob,
    *,
    release: tuple[str, str],  # (debian_version, codename)
    hostname: str,
    kernel: Kernel,
    packages: tuple[DebPackage, ...],
    usrmerge: bool = True,
) -> None:
    """What debian-installer leaves, minus networking: shared by all Debian guests."""
    linux_files.base_system(root, usrmerge=usrmerge, hostname=hostname, fstab=fmt.fstab)
    linux_files.debian_release(root, *release)
    linux_files.dpkg_status(root, packages)
    kernel_files.install(root, kernel)
    _initramfs_tools(root, kernel)
    # The kernel postinst keeps these root-level links; they are not kernels of their own.
    linux_files.symlink(root, "vmlinuz", f"boot/{kernel.vmlinuz_name}")
    if kernel.initramfs:
        linux_files.symlink(root, "initrd.img", f"boot/{kernel.initramfs.filename}")
    linux_files.default_grub(root, _GRUB_DISTRIBUTOR, "", "GRUB_DISABLE_OS_PROBER=true\n")
    linux_files.grub_cfg_menuentries(
        root,
        "boot/grub/grub.cfg",
        title="Debian GNU/Linux",
        kernels=(kernel,),
        boot_prefix="" if separate_boot(job.volumes) else "/boot",
        kernel_args=f"root={fmt.root_spec} ro quiet",
        grub_root=grub_root(job.disks, job.volumes),
    )
    uefi = any(v.mountpoint == "/boot/efi" for v in job.volumes)
    _grub_modules(root, "x86_64-efi" if uefi else "i386-pc")


def _debian12(
    name: str,
    hostname: str,
    *,
    disks: tuple[DiskSpec, ...],
    volumes: tuple[Volume, ...],
    initramfs_virtio: bool,
    packages: tuple[DebPackage, ...],
    applications: tuple[str, ...],
    foreign: tuple[str, ...],
    network: ExpectedNetworkConfig,
    extra: Callable[[Path, Formatted], None],
) -> Recipe:
    kernel = _debian12_kernel(initramfs_virtio=initramfs_virtio)
    all_packages = _debian12_packages(*packages)

    def fill(root: Path, fmt: Formatted, scratch: Path) -> None:
        _debian_system(
            root,
            fmt,
            job,
            release=("12.5", "bookworm"),
            hostname=hostname,
            kernel=kernel,
            packages=all_packages,
        )
        extra(root, fmt)

    job = DiskJob(name, disks, volumes, fill)
    return Recipe(
        job,
        expected_linux(
            job,
            # Debian's os-release has no minor version, so libguestfs falls back to
            # /etc/debian_version and takes its first line as the product name.
            distro="debian",
            product="12.5",
            version=(12, 5),
            hostname=hostname,
            packaging=_APT,
            applications=applications,
            foreign=foreign,
            kernels=(kernel,),
            network=(network,),
        ),
    )


def debian() -> Recipe:
    return _debian12(
        "debian",
        "deb12-vmware",
        disks=(DiskSpec("debian", ROOT_DISK_MIB, "dos", "vmdk"),),
        # An old VMware install: fstab and grub name the root by its /dev/sdX name.
        volumes=(Volume("/", "ext4", 0, 1, fstab="device"),),
        initramfs_virtio=False,
        packages=(
            DebPackage("grub-pc", "2.06-13+deb12u1", "admin"),
            DebPackage("grub2-common", "2.06-13+deb12u1", "admin"),
            DebPackage("ifupdown", "0.8.41", "admin"),
            DebPackage("open-vm-tools", "2:12.2.0-1+deb12u2", "admin"),
        ),
        applications=(f"linux-image-{DEB12_KVER}", "grub-pc", "open-vm-tools", "openssh-server"),
        foreign=("vmware",),
        network=ExpectedNetworkConfig("/etc/network/interfaces", "ifupdown", ("lo", "ens192")),
        extra=lambda root, fmt: linux_files.ifupdown(root, "ens192", "192.168.10.21/24"),
    )


def debian_lvm() -> Recipe:
    def extra(root: Path, fmt: Formatted) -> None:
        linux_files.ifupdown(root, "eth0", None)
        linux_files.write(root, "etc/lvm/lvm.conf", "devices {\n}\n")

    return _debian12(
        "debian-lvm",
        "deb12-lvm",
        disks=(DiskSpec("debian-lvm", ROOT_DISK_MIB, "dos", "qcow2"),),
        volumes=(
            Volume("/boot", "ext4", 0, 1, size_mib=128),
            Volume("/", "ext4", 0, 2, lv="vg0/root", fstab="mapper"),
        ),
        initramfs_virtio=True,
        packages=(
            DebPackage("grub-pc", "2.06-13+deb12u1", "admin"),
            DebPackage("ifupdown", "0.8.41", "admin"),
            DebPackage("lvm2", "2.03.16-2", "admin"),
            DebPackage("virtualbox-guest-utils", "7.0.14-dfsg-1~bpo12+1", "contrib/misc"),
        ),
        applications=("lvm2", "grub-pc", "virtualbox-guest-utils"),
        foreign=("virtualbox",),
        network=ExpectedNetworkConfig("/etc/network/interfaces", "ifupdown", ("lo", "eth0")),
        extra=extra,
    )


def debian_uefi() -> Recipe:
    def extra(root: Path, fmt: Formatted) -> None:
        esp = "boot/efi/EFI/debian"
        for binary in ("shimx64.efi", "grubx64.efi", "mmx64.efi"):
            linux_files.write(root, f"{esp}/{binary}", b"MZ" + b"\0" * 126)
        linux_files.write(
            root,
            f"{esp}/grub.cfg",
            f"search.fs_uuid {fmt.uuids['/']} root hd0,gpt2\n"
            "set prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n",
        )
        csv = "shimx64.efi,debian,,This is the boot entry for debian\n"
        linux_files.write(root, f"{esp}/BOOTX64.CSV", csv.encode("utf-16"))
        linux_files.networkd(root, "ens3")

    return _debian12(
        "debian-uefi",
        "deb12-uefi",
        disks=(DiskSpec("debian-uefi", ROOT_DISK_MIB, "gpt"),),
        volumes=(Volume("/boot/efi", "vfat", 0, 1, size_mib=64), Volume("/", "ext4", 0, 2)),
        initramfs_virtio=False,
        packages=(
            DebPackage("efibootmgr", "17-2", "admin"),
            DebPackage("grub-efi-amd64", "2.06-13+deb12u1", "admin"),
            DebPackage("grub-efi-amd64-bin", "2.06-13+deb12u1", "admin"),
            DebPackage("hyperv-daemons", "6.1.76-1", "kernel"),
            DebPackage("shim-signed", "1.44~1+deb12u1+15.8-1~deb12u1", "admin"),
        ),
        applications=("grub-efi-amd64", "shim-signed", "hyperv-daemons"),
        foreign=("hyperv",),
        network=ExpectedNetworkConfig(
            "/etc/systemd/network/10-ens3.network", "systemd-networkd", ("ens3",)
        ),
        extra=extra,
    )


def debian_twodisks() -> Recipe:
    return _debian12(
        "debian-twodisks",
        "deb12-twodisks",
        disks=(
            DiskSpec("debian-twodisks-1", ROOT_DISK_MIB, "dos"),
            DiskSpec("debian-twodisks-2", 256, "dos", "qcow2"),
        ),
        # /var on the second disk: the dpkg database is only readable with both mounted.
        volumes=(Volume("/", "ext4", 0, 1), Volume("/var", "ext4", 1, 1)),
        initramfs_virtio=False,
        packages=(
            DebPackage("grub-pc", "2.06-13+deb12u1", "admin"),
            DebPackage("ifupdown", "0.8.41", "admin"),
        ),
        applications=("grub-pc", "openssh-server", f"linux-image-{DEB12_KVER}"),
        foreign=(),
        network=ExpectedNetworkConfig("/etc/network/interfaces", "ifupdown", ("lo", "ens33")),
        extra=lambda root, fmt: linux_files.ifupdown(root, "ens33", "10.0.0.33/24"),
    )


def nokernel() -> Recipe:
    """Debian 11 (not merged-/usr) whose only kernel is a custom build without any virtio."""
    name, hostname, kver = "nokernel", "deb11-custom", "5.10.0-custom"
    kernel = Kernel(
        version=kver,
        virtio="absent",
        modules=COMMON_MODULES,
        banner="#1 SMP Mon Jan 8 10:00:00 UTC 2024",
        initramfs=Initramfs(
            filename=f"initrd.img-{kver}",
            style="initramfs-tools",
            compression="none",
            modules=("vmw_pvscsi", "libahci", "ahci"),
            usrmerge=False,
            early_microcode=False,
        ),
    )
    packages = (
        DebPackage("base-files", "11.1+deb11u9", "admin"),
        DebPackage("bash", "5.1-2+deb11u1", "shells"),
        DebPackage("grub-pc", "2.06-3~deb11u6", "admin"),
        DebPackage("ifupdown", "0.8.36", "admin"),
        DebPackage(f"linux-image-{kver}", "5.10.0-custom-1", "kernel"),
        DebPackage("xe-guest-utilities", "7.20.2-0ubuntu1", "admin"),
    )

    def fill(root: Path, fmt: Formatted, scratch: Path) -> None:
        _debian_system(
            root,
            fmt,
            job,
            release=("11.9", "bullseye"),
            hostname=hostname,
            kernel=kernel,
            packages=packages,
            usrmerge=False,
        )
        linux_files.ifupdown(root, "eth0", None)

    job = DiskJob(
        name,
        (DiskSpec(name, ROOT_DISK_MIB, "dos", "qcow2"),),
        (Volume("/", "ext4", 0, 1),),
        fill,
    )
    return Recipe(
        job,
        expected_linux(
            job,
            distro="debian",
            product="11.9",
            version=(11, 9),
            hostname=hostname,
            packaging=_APT,
            applications=(f"linux-image-{kver}", "xe-guest-utilities"),
            foreign=("xen",),
            kernels=(kernel,),
            network=(ExpectedNetworkConfig("/etc/network/interfaces", "ifupdown", ("lo", "eth0")),),
        ),
    )


def ubuntu() -> Recipe:
    name, hostname, kver = "ubuntu", "ubuntu2204-hv", "5.15.0-91-generic"
    kernel = Kernel(
        version=kver,
        virtio="builtin",
        modules=(*COMMON_MODULES, "hv_vmbus", "hv_storvsc", "hv_netvsc"),
        banner="#101-Ubuntu SMP Tue Nov 14 13:30:08 UTC 2023",
        initramfs=Initramfs(
            filename=f"initrd.img-{kver}",
            style="initramfs-tools",
            compression="gzip",
            modules=("hv_vmbus", "hv_storvsc", "vmw_pvscsi", "libahci", "ahci"),
            usrmerge=False,
        ),
    )
    packages = (
        DebPackage("base-files", "12ubuntu4.4", "admin"),
        DebPackage("bash", "5.1-6ubuntu1", "shells"),
        DebPackage("cloud-init", "23.3.3-0ubuntu0~22.04.1", "admin", "all"),
        DebPackage("grub-pc", "2.06-2ubuntu7.2", "admin"),
        DebPackage("initramfs-tools", "0.140ubuntu13.4", "utils", "all"),
        DebPackage("linux-cloud-tools-common", "5.15.0-91.101", "kernel", "all"),
        DebPackage(f"linux-image-{kver}", "5.15.0-91.101", "kernel"),
        DebPackage(f"linux-modules-{kver}", "5.15.0-91.101", "kernel"),
        DebPackage("netplan.io", "0.106.1-7ubuntu0.22.04.2", "net"),
        DebPackage("openssh-server", "1:8.9p1-3ubuntu0.6", "net"),
        DebPackage("systemd", "249.11-0ubuntu3.11", "admin"),
    )
    netplan = "/etc/netplan/50-cloud-init.yaml"

    def fill(root: Path, fmt: Formatted, scratch: Path) -> None:
        linux_files.base_system(root, usrmerge=True, hostname=hostname, fstab=fmt.fstab)
        linux_files.ubuntu_release(root, "22.04", "22.04.3", "jammy")
        linux_files.dpkg_status(root, packages)
        kernel_files.install(root, kernel)
        # Ubuntu's default MODULES=most (its kernel has virtio built in anyway).
        stub_tools.install_deb_family(root)
        linux_files.initramfs_tools_config(root, "most")
        assert kernel.initramfs is not None
        # Ubuntu keeps its "current kernel" links in /boot itself.
        linux_files.symlink(root, "boot/vmlinuz", kernel.vmlinuz_name)
        linux_files.symlink(root, "boot/initrd.img", kernel.initramfs.filename)
        linux_files.default_grub(root, _GRUB_DISTRIBUTOR, "")
        linux_files.grub_cfg_menuentries(
            root,
            "boot/grub/grub.cfg",
            title="Ubuntu",
            kernels=(kernel,),
            boot_prefix="/boot",
            kernel_args=f"root={fmt.root_spec} ro quiet splash",
            grub_root="hd0,msdos1",
        )
        _grub_modules(root, "i386-pc")
        linux_files.netplan(root, netplan, "ens160", "00:50:56:9a:01:60")

    job = DiskJob(
        name,
        (DiskSpec(name, ROOT_DISK_MIB, "dos", "vhdx"),),
        (Volume("/", "ext4", 0, 1),),
        fill,
    )
    return Recipe(
        job,
        expected_linux(
            job,
            # Unlike Debian's, Ubuntu's os-release is complete: PRETTY_NAME is the product.
            distro="ubuntu",
            product="Ubuntu 22.04.3 LTS",
            version=(22, 4),
            hostname=hostname,
            packaging=_APT,
            applications=(
                f"linux-image-{kver}",
                "grub-pc",
                "netplan.io",
                "linux-cloud-tools-common",
            ),
            foreign=("hyperv",),
            kernels=(kernel,),
            network=(ExpectedNetworkConfig(netplan, "netplan", ("ens160",)),),
        ),
    )
