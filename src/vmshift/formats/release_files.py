"""The files libguestfs's inspection reads on a Debian- or RHEL-family root, read the way it
reads them.

guest/linux_inspection.py answers what `inspect_os` and the `inspect_get_*` calls would answer
for these guests, so every rule here follows libguestfs 1.48.6's inspection (Debian 12's:
daemon/inspect_*.ml, lib/inspect-apps.c, lib/inspect-osinfo.c), quirks included: a key is
everything before the first '=', unstripped; a Debian package's release is what follows its
version's *first* '-'; an fstab mountpoint loses repeated and trailing slashes. Where
libguestfs would read something in a way not reproduced here (shell escapes, fstab fields its
augeas lens splits differently), `Unsure` is raised and the caller falls back to libguestfs's
own inspection.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

# os-release IDs libguestfs knows (distro_of_os_release_id); any other ID leaves the distro
# unset.
_OS_RELEASE_IDS = {
    "alpine": "alpinelinux",
    "altlinux": "altlinux",
    "arch": "archlinux",
    "centos": "centos",
    "coreos": "coreos",
    "debian": "debian",
    "fedora": "fedora",
    "frugalware": "frugalware",
    "gentoo": "gentoo",
    "kali": "kalilinux",
    "kylin": "kylin",
    "mageia": "mageia",
    "neokylin": "neokylin",
    "openmandriva": "openmandriva",
    "opensuse": "opensuse",
    "pardus": "pardus",
    "pld": "pldlinux",
    "rhel": "rhel",
    "rocky": "rocky",
    "sles": "sles",
    "sled": "sles",
    "ubuntu": "ubuntu",
    "void": "voidlinux",
}
# os-release of rolling distros has no VERSION_ID: libguestfs then says version 0.0.
_ROLLING = ("archlinux", "gentoo", "voidlinux")
# The distros guest/linux_inspection.py covers, by package format.
DEB_DISTROS = ("debian", "ubuntu")
RPM_DISTROS = ("rhel", "centos", "rocky", "fedora")
_MAJOR_MINOR = re.compile(r"(\d+)\.(\d+)")
_MAJOR = re.compile(r"(\d+)")
_NEOKYLIN = re.compile(r"^V(\d+)Update(\d+)$")


class Unsure(Exception):
    """libguestfs would read this in a way this module does not reproduce."""


def lines(data: bytes) -> list[str]:
    """A small file's lines as libguestfs splits them: on '\\n' only, a last empty one kept."""
    return data.decode("utf-8", errors="surrogateescape").split("\n")


def shell_unquote(value: str) -> str:
    """A value's quotes removed; a quoted value with escapes raises Unsure."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        if value[0] == '"' and any(c in inner for c in '\\"$`'):
            raise Unsure(f"shell escapes in {value!r}")
        return inner
    return value


def key_values(text_lines: list[str]) -> Iterator[tuple[str, str]]:
    """KEY=value pairs: blank and '#' lines skipped, the key not stripped, values unquoted."""
    for line in text_lines:
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        yield key, shell_unquote(value)


def version_of(text: str) -> tuple[int, int] | None:
    """The first "N.M", else the first "N" (as (N, 0)), anywhere in text."""
    m = _MAJOR_MINOR.search(text)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = _MAJOR.search(text)
    return (int(m.group(1)), 0) if m else None


@dataclass
class Release:
    """What the release files said so far: a distro, a product name, a version."""

    distro: str | None = None
    product_name: str | None = None
    version: tuple[int, int] | None = None

    def read_os_release(self, text_lines: list[str]) -> bool:
        """/etc/os-release; True when it settles the distro (else the next file is read)."""
        for key, value in key_values(text_lines):
            if key == "ID":
                self.distro = _OS_RELEASE_IDS.get(value, self.distro)
                if value.startswith("opensuse-"):
                    self.distro = "opensuse"
            elif key == "PRETTY_NAME":
                self.product_name = value
            elif key == "VERSION_ID":
                m = _NEOKYLIN.match(value)
                found = (int(m.group(1)), int(m.group(2))) if m else version_of(value)
                self.version = found or self.version
        if self.distro is None or self.product_name is None:
            return False
        # Debian's, CentOS's and Rocky's os-release name only the major version: their other
        # release files have the rest.
        if self.distro in ("debian", "centos", "rocky") and self.version and self.version[1] == 0:
            return False
        if self.distro in _ROLLING and self.version is None:
            self.version = (0, 0)
            return True
        return self.version is not None

    def read_generic(self, distro: str, first_line: str) -> bool:
        """A one-line release file such as /etc/debian_version."""
        if not first_line:
            return False
        self.product_name = first_line
        self.distro = distro
        self.version = version_of(first_line) or self.version
        return True


@dataclass(frozen=True)
class FstabEntry:
    spec: str
    mountpoint: str
    vfstype: str


_IGNORED_SPECS = re.compile(r"^/dev/(fd|cd)\d|^/dev/floppy$|^/dev/cdrom$|^/dev/iso9660/")
_IGNORED_MOUNTS = re.compile(r"^/(dev|media|proc|selinux|sys)(/|$)")
_DIGITS = re.compile(r"\d+")


def canonical_path(path: str) -> str:
    """Repeated and trailing slashes removed ("///usr//local//" -> "/usr/local")."""
    parts = [p for p in path.split("/") if p]
    return ("/" if path.startswith("/") else "") + "/".join(parts)


def fstab_entries(text: str) -> list[FstabEntry]:
    """The entries libguestfs's inspection keeps from an fstab, in order, their mountpoints
    canonical: not floppies and CD-ROMs, not /dev, /proc, /sys, /media, /selinux mounts.
    Lines its augeas lens would split otherwise (a '#' inside, dump or passno not numbers, too
    few or too many fields) raise Unsure."""
    found = []
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if "#" in stripped or "\\" in stripped or not 3 <= len(fields) <= 6:
            raise Unsure(f"fstab line {line!r}")
        if not all(_DIGITS.fullmatch(f) for f in fields[4:]):
            raise Unsure(f"fstab line {line!r}")
        spec, mountpoint = fields[0], canonical_path(fields[1])
        if _IGNORED_SPECS.match(spec) or _IGNORED_MOUNTS.match(mountpoint):
            continue
        found.append(FstabEntry(spec, mountpoint, fields[2]))
    return found


def drive_index(letters: str) -> int:
    """sda -> 0, sdz -> 25, sdaa -> 26: the disk a /dev/sdX name counts."""
    index = 0
    for c in letters:
        index = index * 26 + (ord(c) - ord("a") + 1)
    return index - 1


# ELF machines libguestfs's file_architecture names, by (class, machine): 64-bit x86-64 and
# aarch64, 32-bit i386.
_ELF_ARCH = {(2, 62): "x86_64", (1, 3): "i386", (2, 183): "aarch64"}


def elf_arch(header: bytes) -> str | None:
    """A little-endian ELF binary's architecture as inspection names it, else None."""
    if len(header) < 20 or header[:4] != b"\x7fELF" or header[5] != 1:
        return None
    (machine,) = struct.unpack_from("<H", header, 18)
    return _ELF_ARCH.get((header[4], machine))


def osinfo(distro: str, major: int, minor: int) -> str:
    """libosinfo's short ID for a Debian- or RHEL-family Linux (inspect_get_osinfo)."""
    if distro in ("centos", "rocky") and major >= 8:
        return f"{distro}{major}"
    if distro == "centos" and major == 7:
        return "centos7.0"
    if distro == "debian" and major >= 4:
        return f"debian{major}"
    if distro == "fedora":
        return f"fedora{major}"
    if distro == "ubuntu":
        return f"ubuntu{major}.{minor:02d}"
    if distro != "unknown" and (major > 0 or minor > 0):
        return f"{distro}{major}.{minor}"
    return "unknown"


def package_manager(distro: str, major: int, has_dnf: bool) -> str | None:
    """What inspect_get_package_management names for these distros (None: "unknown").
    has_dnf: the root has /usr/bin/dnf (asked of Fedora only)."""
    if distro in DEB_DISTROS:
        return "apt"
    if distro == "fedora":
        if major >= 22 and has_dnf:
            return "dnf"
        return "yum" if major >= 1 else None
    if distro in RPM_DISTROS:
        if major >= 8:
            return "dnf"
        if major >= 5:
            return "yum"
        return "up2date" if major >= 2 else None
    return None


@dataclass(frozen=True)
class DebPackage:
    name: str
    epoch: int
    version: str
    release: str


def _fgets_lines(data: bytes) -> Iterator[str]:
    """The lines a 1024-byte fgets buffer returns: longer lines come in 1023-byte pieces."""
    raws = data.split(b"\n")
    last = raws.pop()  # b"" when the data ends with a newline
    for text in [raw + b"\n" for raw in raws] + ([last] if last else []):
        for start in range(0, len(text), 1023):
            piece = text[start : start + 1023]
            yield piece.removesuffix(b"\n").decode("utf-8", errors="surrogateescape")


def dpkg_packages(status: bytes) -> list[DebPackage]:
    """The packages /var/lib/dpkg/status lists as libguestfs counts them: a stanza whose Status
    line contains "installed" (even "not-installed") and that a blank line ends."""
    found = []
    name = version = release = None
    epoch = 0
    installed = False
    for line in _fgets_lines(status):
        if line.startswith("Package: "):
            name = line[9:]
        elif line.startswith("Status: "):
            installed = "installed" in line[8:]
        elif line.startswith("Version: "):
            value = line[9:]
            if ":" in value:
                head, value = value.split(":", 1)
                epoch = int(head) if head.isdigit() and head.isascii() else -1
            else:
                epoch = 0
            value, dash, rest = value.partition("-")
            version, release = value, (rest if dash else None)
        elif line == "":
            if installed and name is not None and version is not None and epoch >= 0:
                found.append(DebPackage(name, epoch, version, release or ""))
            name = version = release = None
            installed = False
    return found
