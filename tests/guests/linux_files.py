"""Distribution files for phony Linux guests, written into a staged tree on the host.

Each function writes what one distribution's own tool would have written (installer, dpkg,
grub-mkconfig, netplan, NetworkManager...), in the real paths and formats, so the inspector
under test reads them exactly as it would read a real guest's.

Every guest also gets a static busybox as /bin/sh and stubs of its distribution's tools
(dracut, grub2-mkconfig, grubby, rpm; update-initramfs, update-grub, grub-mkconfig, dpkg), so
conversion steps can run them through g.command. Each stub call appends one line
`<tool> <args...>` (shell-quoted like shlex.quote) to /var/log/vmshift-stub-calls.log: the
format and what each stub does are documented in stub_tools.py.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.guests import stub_tools
from tests.guests.kernel_files import Kernel

# Host binaries that libguestfs runs `file` on to decide the guest's architecture.
_ARCH_PROBES = ("bash", "ls")


def write(root: Path, rel: str, text: str | bytes, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)


def symlink(root: Path, rel: str, target: str) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def base_system(root: Path, *, usrmerge: bool, hostname: str, fstab: str) -> None:
    """The skeleton every Linux root has, with real x86_64 ELF binaries for the arch probe and a
    static busybox as /bin/sh for the stub tools."""
    skeleton = "etc usr/bin usr/sbin usr/lib usr/lib64 usr/share var/log var/tmp var/spool"
    skeleton += " var/lib tmp root home dev proc sys run boot mnt opt srv media"
    for d in skeleton.split():
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    for d in ("bin", "sbin", "lib", "lib64"):
        if usrmerge:
            symlink(root, d, f"usr/{d}")
        else:
            (root / d).mkdir()
    bindir = "usr/bin" if usrmerge else "bin"
    for prog in _ARCH_PROBES:
        host = shutil.which(prog) or f"/bin/{prog}"
        write(root, f"{bindir}/{prog}", Path(host).read_bytes(), 0o755)
    stub_tools.install_busybox(root, bindir)
    write(root, "etc/hostname", f"{hostname}\n")
    write(root, "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
    write(root, "etc/fstab", fstab)
    write(root, "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    write(root, "etc/group", "root:x:0:\n")
    write(root, "etc/shadow", "root:*:19700:0:99999:7:::\n", 0o640)
    write(root, "etc/machine-id", f"{machine_id(hostname)}\n")


def machine_id(hostname: str) -> str:
    """A stable machine-id per guest: RHEL names its boot entries after it."""
    return hashlib.md5(hostname.encode()).hexdigest()


# --- release files -------------------------------------------------------------------------


def debian_release(root: Path, version: str, codename: str) -> None:
    major = version.partition(".")[0]
    write(root, "etc/debian_version", f"{version}\n")
    write(
        root,
        "usr/lib/os-release",
        f'PRETTY_NAME="Debian GNU/Linux {major} ({codename})"\nNAME="Debian GNU/Linux"\n'
        f'VERSION_ID="{major}"\nVERSION="{major} ({codename})"\nVERSION_CODENAME={codename}\n'
        'ID=debian\nHOME_URL="https://www.debian.org/"\n',
    )
    symlink(root, "etc/os-release", "../usr/lib/os-release")


def ubuntu_release(root: Path, version: str, point: str, codename: str) -> str:
    """Write Ubuntu's release files and return its product name."""
    pretty = f"Ubuntu {point} LTS"
    write(root, "etc/debian_version", "bookworm/sid\n")
    write(
        root,
        "etc/lsb-release",
        f"DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE={version}\nDISTRIB_CODENAME={codename}\n"
        f'DISTRIB_DESCRIPTION="{pretty}"\n',
    )
    write(
        root,
        "usr/lib/os-release",
        f'PRETTY_NAME="{pretty}"\nNAME="Ubuntu"\nVERSION_ID="{version}"\n'
        f'VERSION="{point} LTS ({codename.title()} Jellyfish)"\nVERSION_CODENAME={codename}\n'
        f"ID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME={codename}\n",
    )
    symlink(root, "etc/os-release", "../usr/lib/os-release")
    return pretty


def rhel_release(root: Path, version: str) -> str:
    pretty = f"Red Hat Enterprise Linux {version} (Plow)"
    write(root, "etc/redhat-release", f"Red Hat Enterprise Linux release {version} (Plow)\n")
    symlink(root, "etc/system-release", "redhat-release")
    write(
        root,
        "etc/os-release",
        f'NAME="Red Hat Enterprise Linux"\nVERSION="{version} (Plow)"\nID="rhel"\n'
        f'ID_LIKE="fedora"\nVERSION_ID="{version}"\nPLATFORM_ID="platform:el9"\n'
        f'PRETTY_NAME="{pretty}"\nCPE_NAME="cpe:/o:redhat:enterprise_linux:{version}::baseos"\n',
    )
    return pretty


def sles_release(root: Path, major: int, sp: int) -> str:
    pretty = f"SUSE Linux Enterprise Server {major} SP{sp}"
    write(
        root,
        "usr/lib/os-release",
        f'NAME="SLES"\nVERSION="{major}-SP{sp}"\nVERSION_ID="{major}.{sp}"\n'
        f'PRETTY_NAME="{pretty}"\nID="sles"\nID_LIKE="suse"\nANSI_COLOR="0;32"\n'
        f'CPE_NAME="cpe:/o:suse:sles:{major}:sp{sp}"\n',
    )
    symlink(root, "etc/os-release", "../usr/lib/os-release")
    return pretty


# --- dpkg ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str  # full Debian version, [epoch:]upstream[-revision]
    section: str = "misc"
    arch: str = "amd64"
    description: str = ""


def dpkg_status(root: Path, packages: Sequence[DebPackage]) -> None:
    stanzas = []
    for p in packages:
        desc = p.description or f"the {p.name} package"
        stanzas.append(
            f"Package: {p.name}\nStatus: install ok installed\nPriority: optional\n"
            f"Section: {p.section}\nInstalled-Size: 1024\n"
            f"Maintainer: Phony Maintainers <phony@example.invalid>\nArchitecture: {p.arch}\n"
            f"Version: {p.version}\nDescription: {desc}\n This is an empty test package.\n"
        )
    # dpkg ends every stanza, the last included, with a blank line; libguestfs 1.48 drops a
    # final stanza that lacks it.
    write(root, "var/lib/dpkg/status", "".join(s + "\n" for s in stanzas))
    for p in packages:
        write(root, f"var/lib/dpkg/info/{p.name}.list", "/.\n")


# --- initramfs tools ------------------------------------------------------------------------


def initramfs_tools_config(root: Path, modules: str) -> None:
    """/etc/initramfs-tools as Debian ships it, with MODULES=`modules` (most | dep | list)."""
    write(
        root,
        "etc/initramfs-tools/initramfs.conf",
        "#\n# initramfs.conf\n# Configuration file for mkinitramfs(8). See initramfs.conf(5).\n"
        f"#\n\nMODULES={modules}\nBUSYBOX=auto\nCOMPRESS=zstd\nDEVICE=\nNFSROOT=auto\n"
        "RUNSIZE=10%\nFSTYPE=auto\n",
    )
    write(
        root,
        "etc/initramfs-tools/modules",
        "# List of modules that you want to include in your initramfs.\n"
        "# They will be loaded at boot time in the order below.\n#\n"
        "# Syntax:  module_name [args ...]\n#\n"
        "# You must run update-initramfs(8) to effect this change.\n",
    )
    (root / "etc/initramfs-tools/conf.d").mkdir(exist_ok=True)


def dracut_config(root: Path) -> None:
    write(
        root,
        "etc/dracut.conf",
        '# PUT YOUR CONFIG IN separate files\n# in /etc/dracut.conf.d named "<name>.conf"\n'
        "# SEE man dracut.conf(5) for options\n",
    )
    (root / "etc/dracut.conf.d").mkdir(exist_ok=True)


# --- grub ----------------------------------------------------------------------------------


def default_grub(root: Path, distributor: str, cmdline: str, extra: str = "") -> None:
    write(
        root,
        "etc/default/grub",
        f"GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR={distributor}\n"
        f'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="{cmdline}"\n{extra}',
    )


def grub_cfg_menuentries(
    root: Path,
    cfg: str,
    *,
    title: str,
    kernels: Sequence[Kernel],
    boot_prefix: str,
    kernel_args: str,
    grub_root: str,
) -> None:
    """A grub-mkconfig style grub.cfg; `boot_prefix` is "/boot" unless /boot is its own fs."""
    entries = []
    for k in kernels:
        initrd = ""
        if k.initramfs:
            initrd = "\techo\t'Loading initial ramdisk ...'\n"
            initrd += f"\tinitrd\t{boot_prefix}/{k.initramfs.filename}\n"
        entries.append(
            f"menuentry '{title}, with Linux {k.version}' --class gnu-linux --class os "
            f"$menuentry_id_option 'gnulinux-{k.version}-advanced' {{\n"
            f"\tload_video\n\tinsmod gzio\n\tinsmod ext2\n\tset root='{grub_root}'\n"
            f"\techo\t'Loading Linux {k.version} ...'\n"
            f"\tlinux\t{boot_prefix}/{k.vmlinuz_name} {kernel_args}\n{initrd}}}\n"
        )
    write(
        root,
        cfg,
        "#\n# DO NOT EDIT THIS FILE\n#\n# It is automatically generated by grub-mkconfig\n#\n"
        'set default="0"\nset timeout=5\n' + "".join(entries),
    )


def grub_bls(
    root: Path,
    *,
    machine_id: str,
    name: str,
    release: str,
    kernels: Sequence[Kernel],
    options: str,
) -> None:
    """RHEL 8+ layout: grub.cfg only runs blscfg; the entries are /boot/loader/entries/*.conf
    and their paths are relative to the /boot filesystem."""
    write(
        root,
        "boot/grub2/grub.cfg",
        "#\n# DO NOT EDIT THIS FILE\n#\n# It is automatically generated by grub2-mkconfig\n#\n"
        'set default="${saved_entry}"\ninsmod part_msdos\ninsmod ext2\n'
        "search --no-floppy --fs-uuid --set=boot $boot_uuid\nblscfg\n",
    )
    write(root, "boot/grub2/grubenv", _grubenv(f"saved_entry={machine_id}-{kernels[0].version}"))
    for k in kernels:
        # The rescue entry is named for what it is, not for the kernel it was copied from.
        ident = k.vmlinuz_name.removeprefix("vmlinuz-")
        entry = "0-rescue" if ident.startswith("0-rescue-") else ident
        initrd = f"initrd /{k.initramfs.filename}\n" if k.initramfs else ""
        write(
            root,
            f"boot/loader/entries/{machine_id}-{entry}.conf",
            f"title {name} ({ident}) {release}\nversion {ident}\nlinux /{k.vmlinuz_name}\n"
            f"{initrd}options {options}\ngrub_users $grub_users\ngrub_arg --unrestricted\n"
            "grub_class rhel\n",
        )


def _grubenv(line: str) -> str:
    head = f"# GRUB Environment Block\n{line}\n"
    return head + "#" * (1024 - len(head))


# --- network -------------------------------------------------------------------------------


def ifupdown(root: Path, iface: str, address: str | None) -> None:
    stanza = (
        f"iface {iface} inet static\n\taddress {address}\n\tgateway {address.rsplit('.', 1)[0]}.1\n"
        if address
        else f"iface {iface} inet dhcp\n"
    )
    write(
        root,
        "etc/network/interfaces",
        "# The loopback network interface\nsource /etc/network/interfaces.d/*\n\n"
        f"auto lo\niface lo inet loopback\n\n# The primary network interface\nauto {iface}\n"
        + stanza,
    )
    (root / "etc/network/interfaces.d").mkdir(exist_ok=True)


def netplan(root: Path, path: str, iface: str, mac: str) -> None:
    write(
        root,
        path,
        "# This file is generated from information provided by the datasource.\n"
        "network:\n    version: 2\n    ethernets:\n"
        f"        {iface}:\n            dhcp4: true\n            match:\n"
        f"                macaddress: '{mac}'\n            set-name: {iface}\n",
        0o600,
    )


def ifcfg_redhat(root: Path, iface: str, mac: str) -> None:
    write(
        root,
        f"etc/sysconfig/network-scripts/ifcfg-{iface}",
        f"TYPE=Ethernet\nBOOTPROTO=none\nDEVICE={iface}\nONBOOT=yes\nHWADDR={mac}\n"
        "IPADDR=192.168.122.20\nPREFIX=24\nGATEWAY=192.168.122.1\nDNS1=192.168.122.1\n",
    )


def nm_keyfile(root: Path, iface: str, mac: str, uuid: str) -> None:
    write(
        root,
        f"etc/NetworkManager/system-connections/{iface}.nmconnection",
        f"[connection]\nid={iface}\nuuid={uuid}\ntype=ethernet\ninterface-name={iface}\n\n"
        f"[ethernet]\nmac-address={mac.upper()}\n\n[ipv4]\nmethod=auto\n\n[ipv6]\n"
        "addr-gen-mode=eui64\nmethod=auto\n\n[proxy]\n",
        0o600,
    )


def wicked(root: Path, iface: str) -> None:
    write(
        root,
        f"etc/sysconfig/network/ifcfg-{iface}",
        "BOOTPROTO='dhcp'\nSTARTMODE='auto'\nDHCLIENT_SET_DEFAULT_ROUTE='yes'\n",
    )
    write(root, "etc/sysconfig/network/config", 'NETCONFIG_MODULES_ORDER="dns-resolver ntp"\n')


def networkd(root: Path, iface: str) -> None:
    write(
        root,
        f"etc/systemd/network/10-{iface}.network",
        f"[Match]\nName={iface}\n\n[Network]\nDHCP=yes\n",
    )
