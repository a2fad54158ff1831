"""linux_inspection's reading of release files, fstab, dpkg status and rpm databases the way
libguestfs 1.48 reads them, and its refusals: every layout it does not cover goes to
inspect_os, with the reason. (tests/integration/test_inspect_fastpath.py compares it with
inspect_os on real appliances.)"""

from __future__ import annotations

import logging
import sqlite3
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_guestfs import FakeG
from vmshift.formats import release_files as rf
from vmshift.formats import rpmdb
from vmshift.formats.release_files import Release, Unsure
from vmshift.guest import linux_inspection
from vmshift.guest.probes import Probes

ELF_X86_64 = b"\x7fELF\x02\x01\x01" + bytes(11) + struct.pack("<H", 62) + bytes(44)
DEBIAN_ROOT = {
    "/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nID=debian\n',
    "/etc/debian_version": "12.7\n",
    "/etc/hostname": "web01\n",
    "/etc/fstab": "# <file system> <mount point>\n"
    "UUID=1111 / ext4 errors=remount-ro 0 1\n"
    "UUID=2222 none swap sw 0 0\n"
    "proc /proc proc defaults 0 0\n"
    "/dev/sr0 /media/cdrom0 udf,iso9660 user,noauto 0 0\n",
    "/etc/hosts": "127.0.0.1 localhost\n",
    "/bin/bash": ELF_X86_64.decode("latin-1"),
    "/var/lib/dpkg/status": "",
}


SLES = 'ID="sles"\nPRETTY_NAME="SUSE Linux Enterprise Server 15 SP5"\nVERSION_ID="15.5"\n'
RHEL_OS_RELEASE = 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nVERSION_ID="9.3"\n' + (
    'PRETTY_NAME="Red Hat Enterprise Linux 9.3 (Plow)"\n'
)


class FakeFs(FakeG):
    """A filesystem whose listing of a directory names its subdirectories too."""

    def ls(self, path: str) -> list[str]:
        subdirs = [
            d.rsplit("/", 1)[1] for d in self.dirs if d.rsplit("/", 1)[0] == path.rstrip("/")
        ]
        return sorted({*super().ls(path), *subdirs})


class FakeDisks:
    """Block devices with blkid tags, each filesystem a FakeG that mount_ro puts at /."""

    def __init__(self, devices: dict[str, tuple[dict[str, str], FakeG | None]]) -> None:
        self.devices = devices
        self.mounted: FakeG | None = None
        self.lv_names = [d for d in devices if d.count("/") == 3]

    def list_devices(self) -> list[str]:
        return sorted({d[:8] for d in self.devices if d.startswith("/dev/sd")})

    def list_partitions(self) -> list[str]:
        return sorted(d for d in self.devices if d.startswith("/dev/sd") and len(d) > 8)

    def lvs(self) -> list[str]:
        return self.lv_names

    def blkid(self, dev: str) -> dict[str, str]:
        return self.devices[dev][0]

    def mount_ro(self, dev: str, mp: str) -> None:
        fs = self.devices[dev][1]
        if fs is None:
            raise RuntimeError("cannot mount")
        self.mounted = fs

    def umount_all(self) -> None:
        self.mounted = None

    def __getattr__(self, name: str) -> Any:
        assert self.mounted is not None, f"{name} with nothing mounted"
        return getattr(self.mounted, name)


def root_fs(**changes: str | None) -> FakeG:
    files = {p: t for p, t in {**DEBIAN_ROOT, **changes}.items() if t is not None}
    return FakeFs(files)  # the ELF header is ASCII: its text encodes to the same bytes


def inspect(devices: dict[str, tuple[dict[str, str], FakeG | None]]) -> Any:
    probes: Probes = {}
    return linux_inspection.inspect_linux(FakeDisks(devices), probes)


def declined(devices: dict[str, tuple[dict[str, str], FakeG | None]], caplog: Any) -> str:
    caplog.set_level(logging.INFO, logger="vmshift.guest.linux_inspection")
    assert inspect(devices) is None
    return str(caplog.text)


SWAP = ({"TYPE": "swap", "UUID": "2222"}, None)


def test_a_plain_debian_root() -> None:
    facts = inspect({"/dev/sda1": ({"TYPE": "ext4", "UUID": "1111"}, root_fs()), "/dev/sda2": SWAP})
    assert (facts.root, facts.distro, facts.product_name) == ("/dev/sda1", "debian", "12.7")
    assert (facts.major_version, facts.minor_version, facts.osinfo) == (12, 7, "debian12")
    assert (facts.arch, facts.hostname, facts.package_manager) == ("x86_64", "web01", "apt")
    # The swap entry's device is one of the OS's filesystems, but no mountpoint.
    assert facts.mountpoints == {"/": "/dev/sda1"}
    assert facts.filesystems == ("/dev/sda1", "/dev/sda2")
    assert not facts.inspect_os


def test_ubuntu_is_settled_by_os_release() -> None:
    ubuntu = root_fs(
        **{
            "/etc/os-release": 'ID=ubuntu\nPRETTY_NAME="Ubuntu 22.04.3 LTS"\nVERSION_ID="22.04"\n',
            "/etc/lsb-release": "DISTRIB_ID=Ubuntu\n",
            "/etc/debian_version": "bookworm/sid\n",
        }
    )
    facts = inspect({"/dev/sda1": ({"TYPE": "ext4", "UUID": "1111"}, ubuntu)})
    assert (facts.product_name, facts.osinfo) == ("Ubuntu 22.04.3 LTS", "ubuntu22.04")


def test_lvm_names_in_fstab_become_libguestfs_lv_names() -> None:
    fstab = (
        "/dev/mapper/vg--0-root / ext4 defaults 0 1\n/dev/mapper/vg--0-swap_1 none swap sw 0 0\n"
    )
    facts = inspect(
        {
            "/dev/sda1": ({"TYPE": "LVM2_member"}, None),
            "/dev/vg-0/root": ({"TYPE": "xfs", "UUID": "1111"}, root_fs(**{"/etc/fstab": fstab})),
            "/dev/vg-0/swap_1": SWAP,
        }
    )
    assert facts.root == "/dev/vg-0/root"
    assert facts.filesystems == ("/dev/vg-0/root", "/dev/vg-0/swap_1")


@pytest.mark.parametrize(
    ("devices", "reason"),
    [
        ({"/dev/sda1": ({"TYPE": "ntfs"}, None)}, "/dev/sda1 holds ntfs"),
        ({"/dev/sda1": ({"TYPE": "crypto_LUKS"}, None)}, "/dev/sda1 holds crypto_LUKS"),
        ({"/dev/sda1": ({"TYPE": "btrfs"}, None)}, "/dev/sda1 holds btrfs"),
        (
            {
                "/dev/sda1": ({"TYPE": "ext4", "UUID": "1111"}, root_fs()),
                "/dev/sdb1": ({"TYPE": "ext4", "UUID": "3333"}, root_fs()),
            },
            "two Linux roots, /dev/sdb1 and /dev/sda1",
        ),
        (
            {
                "/dev/sda1": ({"TYPE": "ext4", "UUID": "1111"}, root_fs()),
                "/dev/sdb1": ({"TYPE": "ext4"}, FakeG({"/bin/ls": "", "/share/x": ""})),
            },
            "/dev/sdb1 looks like part of an OS",
        ),
        (
            {
                "/dev/sda1": ({"TYPE": "ext4", "UUID": "1111"}, root_fs()),
                "/dev/sda2": ({"TYPE": "vfat"}, FakeFs({"/WINDOWS/System32/x.dll": ""})),
            },
            "/dev/sda2 looks like a Windows or DOS system volume",
        ),
        (
            {"/dev/sda1": ({"TYPE": "ext4"}, root_fs(**{"/etc/lsb-release": "X=1\n"}))},
            "/etc/lsb-release would be read",
        ),
        (
            {"/dev/sda1": ({"TYPE": "ext4"}, root_fs(**{"/etc/os-release": SLES}))},
            "/dev/sda1: distro sles",
        ),
        (
            {"/dev/sda1": ({"TYPE": "ext4"}, root_fs(**{"/etc/fstab": "PARTUUID=9 / ext4 0 1\n"}))},
            "fstab names PARTUUID=9",
        ),
        (
            {
                "/dev/sda1": (
                    {"TYPE": "ext4"},
                    root_fs(**{"/etc/fstab": "/dev/sdc1 / ext4 d 0 1\n"}),
                )
            },
            "/dev/sdc1 names no partition of the guest's disks",
        ),
        (
            {"/dev/sda1": ({"TYPE": "ext4"}, root_fs(**{"/etc/fstab": "/dev/md0 / ext4 d 0 1\n"}))},
            "fstab names /dev/md0",
        ),
        (
            {
                "/dev/sda1": (
                    {"TYPE": "ext4"},
                    root_fs(
                        **{
                            "/etc/fstab": "/dev/mapper/root / ext4 d 0 1\n",
                            "/etc/crypttab": "root UUID=5 none luks\n",
                        }
                    ),
                )
            },
            "/dev/mapper/root may be in crypttab",
        ),
        (
            {"/dev/sda1": ({"TYPE": "ext4"}, root_fs(**{"/etc/fstab": "a b c # d\n"}))},
            "fstab line",
        ),
        (
            {"/dev/sda1": ({"TYPE": "ext4"}, root_fs(**{"/etc/mdadm/mdadm.conf": "A\n"}))},
            "/etc/mdadm/mdadm.conf would be read",
        ),
        ({"/dev/sda1": ({"TYPE": "ext4"}, FakeG({"/data/x": ""}))}, "no Linux root found"),
    ],
)
def test_what_it_leaves_to_inspect_os(devices: Any, reason: str, caplog: Any) -> None:
    assert reason in declined(devices, caplog)


def test_a_uuid_two_devices_share_is_left_to_inspect_os(caplog: Any) -> None:
    devices: dict[str, tuple[dict[str, str], FakeG | None]] = {
        "/dev/sda1": ({"TYPE": "ext4", "UUID": "1111"}, root_fs()),
        "/dev/sdb1": ({"TYPE": "ext4", "UUID": "1111"}, FakeG({"/data/x": ""})),
    }
    assert "UUID=1111 matches /dev/sda1, /dev/sdb1" in declined(devices, caplog)


def test_os_release_rules() -> None:
    debian = Release()
    assert not debian.read_os_release(rf.lines(b'ID=debian\nPRETTY_NAME="D 12"\nVERSION_ID="12"'))
    assert debian.read_generic("debian", "12.7") and debian.version == (12, 7)
    testing = Release()
    assert not testing.read_os_release(["ID=debian", "PRETTY_NAME=sid"])
    assert testing.read_generic("debian", "trixie/sid") and testing.version is None
    # Keys are everything before the first '=', unstripped; comments and blanks skipped.
    assert list(rf.key_values(["# c", "", "ID =x", "A=b=c", "B='q'"])) == [
        ("ID ", "x"),
        ("A", "b=c"),
        ("B", "q"),
    ]
    with pytest.raises(Unsure):
        list(rf.key_values(['NAME="a\\"b"']))


def test_fstab_entries() -> None:
    text = (
        "  # comment\n\n"
        "/dev/sda1 ///usr//local// ext4 defaults 0 2\n"
        "/dev/fd0 /mnt/floppy auto noauto 0 0\n"
        "/dev/cdrom /mnt/cd auto noauto 0 0\n"
        "tmpfs /tmp tmpfs defaults\n"
        "sysfs /sys sysfs defaults 0 0\n"
        "/dev/sdb1 /media/usb vfat defaults 0 0\n"
        "UUID=5 none swap\n"
    )
    assert [(e.spec, e.mountpoint) for e in rf.fstab_entries(text)] == [
        ("/dev/sda1", "/usr/local"),
        ("tmpfs", "/tmp"),
        ("UUID=5", "none"),
    ]
    for bad in ("/dev/sda1 /", "a b c d x 0", "a\\040b / ext4 d 0 0"):
        with pytest.raises(Unsure):
            rf.fstab_entries(bad + "\n")


def test_dpkg_status_as_libguestfs_reads_it() -> None:
    status = (
        b"Package: a\nStatus: install ok installed\nVersion: 1:2.3-4-5\n\n"
        b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        b"Package: never\nStatus: install ok not-installed\nVersion: 7\n\n"
        b"Package: badepoch\nStatus: install ok installed\nVersion: x:1\n\n"
        b"Package: long\nStatus: install ok installed\nVersion: 9\nDepends: "
        + b"x"
        * 1014
        + b"\nArchitecture: all\n\n"
        b"Package: last\nStatus: install ok installed\nVersion: 3\n"
    )
    found = {p.name: p for p in rf.dpkg_packages(status)}
    assert found["a"] == rf.DebPackage("a", 1, "2.3", "4-5")
    # "not-installed" contains "installed"; a stanza without its blank line is not ended.
    assert sorted(found) == ["a", "long", "never"]
    # A 1023-byte line is cut by fgets and its newline read as a blank line: the stanza ends.
    cut = b"Package: p\nStatus: installed\nVersion: 1\nX: " + b"y" * 1020 + b"\nPackage: q\n\n"
    assert [p.name for p in rf.dpkg_packages(cut)] == ["p"]


def test_small_helpers() -> None:
    assert rf.elf_arch(ELF_X86_64) == "x86_64"
    assert rf.elf_arch(b"#!/bin/sh\n" + bytes(20)) is None
    assert rf.osinfo("debian", 11, 9) == "debian11"
    assert rf.osinfo("ubuntu", 20, 4) == "ubuntu20.04"
    assert rf.osinfo("debian", 0, 0) == "unknown"
    assert [rf.drive_index(x) for x in ("a", "z", "aa")] == [0, 25, 26]
    assert rf.canonical_path("none") == "none"
    assert rf.canonical_path("/") == "/"


def test_the_session_handle_lists_devices_once() -> None:
    from vmshift.guest.session import ListingsOnce

    class Counting:
        calls = 0

        def list_partitions(self) -> list[str]:
            self.calls += 1
            return ["/dev/sda1"]

        def blkid(self, dev: str) -> dict[str, str]:
            return {"TYPE": "ext4"}

    handle = Counting()
    g = ListingsOnce(handle)
    first = g.list_partitions()
    first.append("changed by a caller")
    assert g.list_partitions() == ["/dev/sda1"] and handle.calls == 1
    assert g.blkid("/dev/sda1") == {"TYPE": "ext4"}


def test_a_failing_appliance_call_is_left_to_inspect_os(caplog: Any) -> None:
    class Failing(FakeFs):
        def is_dir(self, path: str, followsymlinks: bool = False) -> bool:
            raise RuntimeError("is_dir: appliance closed the connection")

    devices: dict[str, tuple[dict[str, str], FakeG | None]] = {
        "/dev/sda1": ({"TYPE": "ext4"}, Failing(DEBIAN_ROOT))
    }
    assert "declined: is_dir: appliance closed the connection" in declined(devices, caplog)


def rpm_header(name: str, version: str, release: str, epoch: int | None = None) -> bytes:
    """An rpm header blob as rpmdb.sqlite stores it: a region tag first, as rpm writes."""
    entries = [(63, 7, 0, 16)]  # RPMTAG_HEADERIMMUTABLE, BIN: its data is not looked at
    data = bytes(16)
    for tag, text in ((1000, name), (1001, version), (1002, release)):
        entries.append((tag, 6, len(data), 1))
        data += text.encode() + b"\0"
    if epoch is not None:
        data += bytes(-len(data) % 4)
        entries.append((1003, 4, len(data), 1))
        data += struct.pack(">i", epoch)
    index = b"".join(struct.pack(">iiii", *e) for e in entries)
    return struct.pack(">II", len(entries), len(data)) + index + data


def rpm_database(path: Path, headers: list[bytes]) -> bytes:
    """An rpmdb.sqlite holding headers, in WAL mode as rpm leaves it."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB)")
    conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(h,) for h in headers])
    conn.commit()
    conn.close()  # the last connection checkpoints and removes the -wal file
    assert not path.with_name(path.name + "-wal").exists()
    return path.read_bytes()


PACKAGES = [
    rpm_header("kernel", "5.14.0", "284.el9"),
    rpm_header("bash", "5.1.8", "6.el9_1"),
    rpm_header("NetworkManager", "1.44.0", "3.el9", epoch=1),
    rpm_header("kernel", "5.14.0", "362.el9"),
    rpm_header("gpg-pubkey", "fd431d51", "4ae0493b"),
]


def test_an_rpm_database_as_libguestfs_lists_it(tmp_path: Path) -> None:
    database = rpm_database(tmp_path / "rpmdb.sqlite", PACKAGES)
    assert database[18:20] == b"\x02\x02"  # WAL mode: read as a rollback-journal database
    found = [(p.name, p.epoch, p.release) for p in rpmdb.rpm_packages(database)]
    # By name, bytewise (upper case first); one name's packages last-installed first;
    # gpg-pubkey entries kept, as librpm iterates over them too.
    assert found == [
        ("NetworkManager", 1, "3.el9"),
        ("bash", 0, "6.el9_1"),
        ("gpg-pubkey", 0, "4ae0493b"),
        ("kernel", 0, "362.el9"),
        ("kernel", 0, "284.el9"),
    ]
    with pytest.raises(rpmdb.RpmdbError):
        rpmdb.rpm_packages(b"not a database")
    with pytest.raises(rpmdb.RpmdbError):
        rpmdb.header_package(PACKAGES[0][:40])


def rhel_root(database: bytes, **changes: str | None) -> FakeG:
    fs = root_fs(
        **{
            "/etc/os-release": RHEL_OS_RELEASE,
            "/etc/redhat-release": "Red Hat Enterprise Linux release 9.3 (Plow)\n",
            "/etc/debian_version": None,
            "/var/lib/dpkg/status": None,
            "/etc/hostname": "# set by the installer\n\nrhel93\n",
            "/etc/fstab": "/dev/mapper/rhel-root / xfs defaults 0 0\n"
            "UUID=1111 /boot xfs defaults 0 0\n",
            "/var/lib/rpm/rpmdb.sqlite": "",
            **changes,
        }
    )
    fs.files["/var/lib/rpm/rpmdb.sqlite"] = database
    return fs


def rhel_devices(fs: FakeG) -> dict[str, tuple[dict[str, str], FakeG | None]]:
    return {
        "/dev/sda1": ({"TYPE": "xfs", "UUID": "1111"}, FakeG({"/grub2/grub.cfg": ""})),
        "/dev/sda2": ({"TYPE": "LVM2_member"}, None),
        "/dev/rhel/root": ({"TYPE": "xfs"}, fs),
    }


def test_a_rhel_root(tmp_path: Path) -> None:
    fs = rhel_root(rpm_database(tmp_path / "rpmdb.sqlite", PACKAGES))
    facts = inspect(rhel_devices(fs))
    assert (facts.root, facts.distro, facts.osinfo) == ("/dev/rhel/root", "rhel", "rhel9.3")
    assert facts.product_name == "Red Hat Enterprise Linux 9.3 (Plow)"
    assert (facts.package_format, facts.package_manager) == ("rpm", "dnf")
    assert facts.hostname == "rhel93"  # the first line neither empty nor a comment
    assert facts.mountpoints == {"/": "/dev/rhel/root", "/boot": "/dev/sda1"}
    apps = linux_inspection.applications(fs, "rpm")
    assert apps is not None and [a.name for a in apps][:2] == ["NetworkManager", "bash"]
    assert (apps[0].epoch, apps[0].version, apps[0].release) == (1, "1.44.0", "3.el9")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"/var/lib/rpm/Packages": "bdb"}, "/var/lib/rpm/Packages: an rpm database other than"),
        ({"/var/lib/rpm/rpmdb.sqlite-wal": "frames"}, "rpmdb.sqlite-wal holds changes"),
        # CentOS's os-release has no minor version: libguestfs reads redhat-release next.
        (
            {"/etc/os-release": 'ID="centos"\nPRETTY_NAME="CentOS Stream 9"\nVERSION_ID="9"\n'},
            "/etc/redhat-release would be read",
        ),
        ({"/etc/hostname": None, "/etc/sysconfig/network": "HOSTNAME=x\n"}, "sysconfig/network"),
    ],
)
def test_what_it_leaves_to_inspect_os_on_rhel(
    changes: dict[str, str | None], reason: str, tmp_path: Path, caplog: Any
) -> None:
    fs = rhel_root(rpm_database(tmp_path / "rpmdb.sqlite", PACKAGES), **changes)
    assert reason in declined(rhel_devices(fs), caplog)


def test_no_rpm_database_is_left_to_inspect_os(caplog: Any) -> None:
    fs = rhel_root(b"")
    del fs.files["/var/lib/rpm/rpmdb.sqlite"]
    assert "no /var/lib/rpm/rpmdb.sqlite" in declined(rhel_devices(fs), caplog)


def test_package_manager_and_osinfo_rules() -> None:
    assert rf.package_manager("fedora", 39, has_dnf=True) == "dnf"
    assert rf.package_manager("fedora", 39, has_dnf=False) == "yum"
    assert rf.package_manager("rhel", 7, has_dnf=False) == "yum"
    assert rf.package_manager("centos", 4, has_dnf=False) == "up2date"
    assert rf.package_manager("rhel", 0, has_dnf=False) is None
    assert rf.package_manager("ubuntu", 22, has_dnf=False) == "apt"
    assert [rf.osinfo(d, 9, 3) for d in ("rhel", "centos", "rocky", "fedora")] == [
        "rhel9.3",
        "centos9",
        "rocky9",
        "fedora9",
    ]
    assert (rf.osinfo("centos", 7, 9), rf.osinfo("centos", 6, 10)) == ("centos7.0", "centos6.10")
    rocky = Release()
    assert not rocky.read_os_release(['ID="rocky"', 'PRETTY_NAME="Rocky 9"', 'VERSION_ID="9"'])
    arch = Release()
    assert arch.read_os_release(["ID=arch", "PRETTY_NAME=Arch Linux"])
    assert arch.version == (0, 0)
