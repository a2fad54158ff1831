"""Phony RHEL and SLES guests (a real rpm database, dracut initramfs images, grub2)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.guests import kernel_files, linux_files, rpmdb, stub_tools
from tests.guests.disks import DiskJob, DiskSpec, Formatted, Volume
from tests.guests.kernel_files import Initramfs, Kernel
from tests.guests.manifest import ExpectedNetworkConfig
from tests.guests.recipe import COMMON_MODULES, FUSION, ROOT_DISK_MIB, Recipe, expected_linux
from tests.guests.rpmdb import RpmPackage


def _rhel_kernel(version: str, *, initramfs_virtio: bool) -> Kernel:
    virtio = (
        *("virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_scsi"),
        *("failover", "net_failover", "virtio_net"),
    )
    carried = ("vmw_pvscsi", "libahci", "ahci", *FUSION)
    return Kernel(
        version=version,
        virtio="module",
        modules=(*COMMON_MODULES, *FUSION, "hv_vmbus", "hv_storvsc", "hv_netvsc"),
        module_suffix=".xz",
        banner="#1 SMP PREEMPT_DYNAMIC Fri Oct 20 11:14:39 EDT 2023",
        initramfs=Initramfs(
            filename=f"initramfs-{version}.img",
            style="dracut",
            compression="gzip",
            modules=(*carried, *virtio) if initramfs_virtio else carried,
            usrmerge=True,
        ),
    )


def _rhel_rescue(newest: Kernel, machine_id: str) -> Kernel:
    """The copy of a kernel RHEL keeps as vmlinuz-0-rescue-MACHINEID, with a generic initramfs.
    It has no /lib/modules directory of its own, so it is not a kernel to convert (virt-v2v
    skips it too) and is not among the expected kernels."""
    assert newest.initramfs is not None
    return replace(
        newest,
        vmlinuz=f"vmlinuz-0-rescue-{machine_id}",
        initramfs=replace(newest.initramfs, filename=f"initramfs-0-rescue-{machine_id}.img"),
    )


def rhel() -> Recipe:
    name, hostname = "rhel", "rhel93-esx"
    new, old = "5.14.0-362.8.1.el9_3.x86_64", "5.14.0-284.30.1.el9_2.x86_64"
    # The older initramfs was made hostonly on VMware, so it lacks virtio; the newer is generic.
    kernels = (_rhel_kernel(new, initramfs_virtio=True), _rhel_kernel(old, initramfs_virtio=False))
    grub = ("2.06", "70.el9_3.1")
    packages = (
        RpmPackage("bash", "5.1.8", "6.el9_1"),
        RpmPackage("dnf", "4.14.0", "8.el9", "noarch"),
        RpmPackage("dracut", "057", "44.git20230822.el9"),
        RpmPackage("grub2-common", *grub, "noarch", epoch=1),
        RpmPackage("grub2-pc", *grub, epoch=1),
        RpmPackage("grub2-tools", *grub, epoch=1),
        RpmPackage("kernel-core", "5.14.0", "362.8.1.el9_3"),
        RpmPackage("kernel-core", "5.14.0", "284.30.1.el9_2"),
        RpmPackage("kernel-modules", "5.14.0", "362.8.1.el9_3"),
        RpmPackage("kernel-modules", "5.14.0", "284.30.1.el9_2"),
        RpmPackage("NetworkManager", "1.44.0", "3.el9", epoch=1),
        RpmPackage("open-vm-tools", "12.2.5", "3.el9_3"),
        RpmPackage("openssh-server", "8.7p1", "34.el9"),
        RpmPackage("redhat-release", "9.3", "0.5.el9"),
        RpmPackage("rpm", "4.16.1.3", "25.el9"),
        RpmPackage("systemd", "252", "18.el9"),
        RpmPackage("xe-guest-utilities", "7.30.0", "11.el9"),
    )
    ifcfg = "/etc/sysconfig/network-scripts/ifcfg-eth0"
    keyfile = "/etc/NetworkManager/system-connections/ens192.nmconnection"

    def fill(root: Path, fmt: Formatted, scratch: Path) -> None:
        linux_files.base_system(root, usrmerge=True, hostname=hostname, fstab=fmt.fstab)
        linux_files.rhel_release(root, "9.3")
        rpmdb.write_rpmdb(root, packages, scratch / "rpm")
        stub_tools.install_rpm_family(root, "rhel", stub_tools.rpm_list(packages))
        linux_files.dracut_config(root)
        # kmod's directory: virt-v2v refuses a guest without a modprobe configuration.
        (root / "etc/modprobe.d").mkdir(parents=True, exist_ok=True)
        for k in kernels:
            kernel_files.install(root, k)
        mid = linux_files.machine_id(hostname)
        rescue = _rhel_rescue(kernels[0], mid)
        kernel_files.install_boot_files(root, rescue)
        cmdline = (
            f"crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=UUID={fmt.uuids['swap']} "
            "rhgb quiet"
        )
        # As RHEL 9's installer writes it: the saved entry (grubby sets it), no
        # GRUB_CMDLINE_LINUX_DEFAULT; the BLS entries' options are GRUB_CMDLINE_LINUX's.
        linux_files.write(
            root,
            "etc/default/grub",
            "GRUB_TIMEOUT=5\n"
            "GRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\n"
            'GRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT="console"\n'
            f'GRUB_CMDLINE_LINUX="{cmdline}"\n'
            'GRUB_DISABLE_RECOVERY="true"\nGRUB_ENABLE_BLSCFG=true\n',
        )
        linux_files.grub_bls(
            root,
            machine_id=mid,
            name="Red Hat Enterprise Linux",
            release="9.3 (Plow)",
            kernels=(*kernels, rescue),
            options=f"root={fmt.root_spec} ro {cmdline}",
        )
        linux_files.write(
            root, "etc/sysconfig/kernel", "UPDATEDEFAULT=yes\nDEFAULTKERNEL=kernel-core\n"
        )
        linux_files.ifcfg_redhat(root, "eth0", "00:50:56:aa:bb:01")
        linux_files.nm_keyfile(
            root, "ens192", "00:50:56:aa:bb:02", "5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03"
        )

    job = DiskJob(
        name,
        (DiskSpec(name, ROOT_DISK_MIB, "dos", "qcow2"),),
        (
            Volume("/boot", "ext4", 0, 1, size_mib=160),
            Volume("swap", "swap", 0, 2, size_mib=32),
            Volume("/", "ext4", 0, 3),
        ),
        fill,
    )
    return Recipe(
        job,
        expected_linux(
            job,
            # RHEL's os-release is complete: PRETTY_NAME is the product name.
            distro="rhel",
            product="Red Hat Enterprise Linux 9.3 (Plow)",
            version=(9, 3),
            hostname=hostname,
            packaging=("rpm", "dnf"),
            applications=(
                "kernel-core",
                "grub2-pc",
                "dracut",
                "NetworkManager",
                "open-vm-tools",
                "xe-guest-utilities",
            ),
            foreign=("vmware", "xen"),
            kernels=kernels,
            network=(
                ExpectedNetworkConfig(ifcfg, "ifcfg", ("eth0",)),
                ExpectedNetworkConfig(keyfile, "networkmanager", ("ens192",)),
            ),
        ),
    )


def suse() -> Recipe:
    name, hostname = "suse", "sles155-vbox"
    kver = "5.14.21-150500.55.39-default"
    kernel = Kernel(
        version=kver,
        virtio="module",
        modules=COMMON_MODULES,
        module_suffix=".zst",
        banner="#1 SMP PREEMPT_DYNAMIC Tue Dec 5 10:06:35 UTC 2023 (2e4092e)",
        initramfs=Initramfs(
            filename=f"initrd-{kver}",
            style="dracut",
            compression="xz",
            modules=(
                *("virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_scsi"),
                *("libahci", "ahci"),
            ),
            usrmerge=False,
        ),
    )
    packages = (
        RpmPackage("dracut", "055+suse.351.g2a0c4a8a", "150500.3.12.1"),
        RpmPackage("grub2", "2.06", "150500.29.11.1"),
        RpmPackage("grub2-i386-pc", "2.06", "150500.29.11.1", "noarch"),
        RpmPackage("kernel-default", "5.14.21", "150500.55.39.1"),
        RpmPackage("openssh-server", "8.4p1", "150300.3.25.1"),
        RpmPackage("sles-release", "15.5", "150500.58.1"),
        RpmPackage("systemd", "249.16", "150400.8.35.5"),
        RpmPackage("virtualbox-guest-tools", "7.0.12", "lp155.2.1"),
        RpmPackage("wicked", "0.6.73", "150500.3.9.1"),
        RpmPackage("zypper", "1.14.64", "150400.3.32.1"),
    )

    def fill(root: Path, fmt: Formatted, scratch: Path) -> None:
        linux_files.base_system(root, usrmerge=False, hostname=hostname, fstab=fmt.fstab)
        product = linux_files.sles_release(root, 15, 5)
        # SLE 15 keeps the database in /usr/lib/sysimage/rpm; /var/lib/rpm is a link to it.
        rpmdb.write_rpmdb(root, packages, scratch / "rpm", dbpath="/usr/lib/sysimage/rpm")
        linux_files.symlink(root, "var/lib/rpm", "../../usr/lib/sysimage/rpm")
        stub_tools.install_rpm_family(root, "suse", stub_tools.rpm_list(packages))
        linux_files.dracut_config(root)
        kernel_files.install(root, kernel)
        assert kernel.initramfs is not None
        linux_files.symlink(root, "boot/vmlinuz", kernel.vmlinuz_name)
        linux_files.symlink(root, "boot/initrd", kernel.initramfs.filename)
        linux_files.default_grub(root, '"SLES"', "splash=silent mitigations=auto quiet")
        linux_files.grub_cfg_menuentries(
            root,
            "boot/grub2/grub.cfg",
            title=product,
            kernels=(kernel,),
            boot_prefix="/boot",
            kernel_args=f"root={fmt.root_spec} splash=silent mitigations=auto quiet",
            grub_root="hd0,msdos1",
        )
        for mod in ("normal.mod", "ext2.mod"):
            linux_files.write(root, f"boot/grub2/i386-pc/{mod}", b"\0" * 64)
        linux_files.write(root, "etc/sysconfig/bootloader", 'LOADER_TYPE="grub2"\n')
        linux_files.wicked(root, "eth0")

    job = DiskJob(
        name,
        (DiskSpec(name, ROOT_DISK_MIB, "dos", "vdi"),),
        (Volume("/", "ext4", 0, 1),),
        fill,
    )
    return Recipe(
        job,
        expected_linux(
            job,
            distro="sles",
            product="SUSE Linux Enterprise Server 15 SP5",
            version=(15, 5),
            hostname=hostname,
            packaging=("rpm", "zypper"),
            applications=("kernel-default", "grub2", "wicked", "virtualbox-guest-tools"),
            foreign=("virtualbox",),
            kernels=(kernel,),
            network=(
                ExpectedNetworkConfig("/etc/sysconfig/network/ifcfg-eth0", "wicked", ("eth0",)),
            ),
        ),
    )
