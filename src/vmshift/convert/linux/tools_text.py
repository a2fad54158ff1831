"""The text edits tools removal (tools_removal.py) makes, as pure functions of a file's content:
vendor repositories disabled, module aliases rewritten, shared-folder mounts and Xen initrd
modules dropped, gettys restored, and the package and installer databases read. Unit-tested in
tests/unit/test_linux_netnames.py.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

TextEdit = Callable[[str], tuple[str, list[str]]]

_XEN_MODULES = re.compile(r"\b(xennet|xen[-_]vnif|xenblk|xen[-_]vbd|xen[-_]platform[-_]pci)\b")
_VMWARE_URL = re.compile(r"\w+://([^/\s]*[.@])?vmware\.com(/|\s|$)", re.I)
_SHARE_FS = {"vmhgfs", "fuse.vmhgfs-fuse", "vboxsf", "prl_fs", "fuse.prl_fsd"}
_ALIAS = re.compile(r"^(\s*alias\s+)(\S+)(\s+)(\S+)(.*)$", re.S)


def is_citrix_package(name: str) -> bool:
    return name.startswith("xe-guest-utilities")


def dpkg_installed(status: str) -> set[str]:
    """Packages that /var/lib/dpkg/status does not record as gone (purged or config-files)."""
    found = set()
    for stanza in re.split(r"\n\s*\n", status):
        package = re.search(r"^Package:\s*(\S+)", stanza, re.M)
        state = re.search(r"^Status:.*\s(\S+)\s*$", stanza, re.M)
        if package and state and state.group(1) not in ("not-installed", "config-files"):
            found.add(package.group(1))
    return found


def shell_values(text: str, key: str) -> list[str]:
    """Values of KEY=value lines in a shell-variable file, unquoted (never evaluated)."""
    values = []
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name == key:
            values.append(value.strip().strip("'\""))
    return values


def vmware_locations(text: str) -> tuple[list[str], list[str]]:
    """Files and directories the VMware Tools installer database says it created and still
    owns ("file PATH [mtime]", "directory PATH", their remove_ counterparts)."""
    files: dict[str, None] = {}
    dirs: dict[str, None] = {}
    for line in text.splitlines():
        kind, _, rest = line.strip().partition(" ")
        words = rest.split()
        if words and kind in ("file", "remove_file") and len(words) > 1 and words[-1].isdigit():
            words = words[:-1]
        path = " ".join(words)
        # Only plain absolute paths: the database is guest data. /boot (the installer's rebuilt
        # initrds) belongs to the initramfs step.
        if not path.startswith("/") or posixpath.normpath(path) != path or path.count("/") < 2:
            continue
        if path.startswith("/boot/"):
            continue
        table = files if kind in ("file", "remove_file") else dirs
        if kind in ("file", "directory"):
            table[path] = None
        elif kind in ("remove_file", "remove_directory"):
            table.pop(path, None)
    return list(files), list(dirs)


def restore_gettys(text: str) -> tuple[str, list[str]]:
    """Uncomment the tty gettys in /etc/inittab that Citrix's xe-guest-utilities commented."""
    lines, changed = [], []
    for line in text.splitlines(keepends=True):
        match = re.match(r"#\s*([1-6]:[2-5]+:respawn:.*getty.*)", line)
        if match:
            changed.append(match.group(1).split(":", 1)[0])
        lines.append(match.group(1) + "\n" if match else line)
    return "".join(lines), [f"tty{n}" for n in changed]


def drop_xen_initrd_modules(text: str) -> tuple[str, list[str]]:
    """Xen PV drivers out of SUSE's INITRD_MODULES and DOMU_INITRD_MODULES."""
    removed: list[str] = []

    def clean(match: re.Match[str]) -> str:
        words = match.group(3).split()
        keep = [w for w in words if not _XEN_MODULES.fullmatch(w)]
        removed.extend(w for w in words if w not in keep)
        return f"{match.group(1)}{match.group(2)}{' '.join(keep)}{match.group(2)}"

    pattern = r"^((?:DOMU_)?INITRD_MODULES=)([\"']?)([^\"'\n]*)\2"
    return re.sub(pattern, clean, text, flags=re.M), removed


def disable_hypervisor_mounts(text: str) -> tuple[str, list[str]]:
    """Comment out fstab mounts of the old hypervisor's shared folders: they fail on KVM, and a
    failing mount without nofail stops the boot in emergency mode."""
    lines, changed = [], []
    for line in text.splitlines(keepends=True):
        fields = line.split()
        if len(fields) > 2 and not fields[0].startswith("#") and fields[2] in _SHARE_FS:
            changed.append(fields[1])
            lines.append("# disabled by vmshift (needs the old hypervisor): " + line)
        else:
            lines.append(line)
    return "".join(lines), changed


def disable_ini_repos(text: str, whole_file: bool) -> tuple[str, list[str]]:
    """yum/zypper .repo: enabled=0 in each section served from vmware.com (every section of a
    file named for VMware)."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines(keepends=True):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            sections.append((header.group(1), []))
        sections[-1][1].append(line)
    out, disabled = [], []
    for name, lines in sections:
        urls = [ln for ln in lines if re.match(r"\s*(baseurl|mirrorlist|metalink)\s*=", ln)]
        if not name or not (whole_file or any(_VMWARE_URL.search(u) for u in urls)):
            out.extend(lines)
            continue
        body = [ln for ln in lines[1:] if not re.match(r"\s*enabled\s*=", ln)]
        head = lines[0] if lines[0].endswith("\n") else lines[0] + "\n"
        if lines != [head, "enabled=0\n", *body]:
            disabled.append(name)
        out.extend([head, "enabled=0\n", *body])
    return "".join(out), disabled


def disable_apt_list(text: str, whole_file: bool) -> tuple[str, list[str]]:
    """One-line apt sources: comment out deb/deb-src lines that fetch from vmware.com."""
    lines, disabled = [], []
    for line in text.splitlines(keepends=True):
        words = line.split()
        if words and words[0] in ("deb", "deb-src") and (whole_file or _VMWARE_URL.search(line)):
            disabled.append(next((w for w in words[1:] if "://" in w), words[0]))
            lines.append("# disabled by vmshift: " + line)
        else:
            lines.append(line)
    return "".join(lines), disabled


def disable_deb822(text: str, whole_file: bool) -> tuple[str, list[str]]:
    """deb822 .sources: `Enabled: no` in each stanza whose URIs are on vmware.com."""
    out, disabled = [], []
    for stanza in re.split(r"(\n\s*\n)", text):
        uris = re.search(r"^URIs:(.*)$", stanza, re.M | re.I)
        if uris and (whole_file or _VMWARE_URL.search(uris.group(1) + " ")):
            lines = [ln for ln in stanza.split("\n") if not re.match(r"(?i)enabled:", ln)]
            out.append("\n".join([lines[0], "Enabled: no", *lines[1:]]))
            disabled.append(uris.group(1).strip())
        else:
            out.append(stanza)
    return "".join(out), disabled


def rewrite_aliases(
    text: str, block: str, net: str, first_done: bool
) -> tuple[str, list[str], bool]:
    """modprobe.conf-style aliases: every ethN to `net`, the first scsi_hostadapter (across all
    files: `first_done` carries over) to `block`, later ones commented out."""
    lines, changes = [], []
    for line in text.splitlines(keepends=True):
        match = _ALIAS.match(line)
        new = line
        if match:
            lead, name, gap, module, rest = match.groups()
            if re.fullmatch(r"eth\d+", name) and module != net:
                new = f"{lead}{name}{gap}{net}{rest}"
                changes.append(f"alias {name} {module} -> {net}")
            elif re.fullmatch(r"scsi_hostadapter\d*", name):
                if first_done:
                    new = "# disabled by vmshift (one disk controller now): " + line
                    changes.append(f"alias {name} {module} disabled")
                elif module != block:
                    new = f"{lead}{name}{gap}{block}{rest}"
                    changes.append(f"alias {name} {module} -> {block}")
                first_done = True
        lines.append(new)
    return "".join(lines), changes, first_done


def xen_module_lines(text: str) -> list[str]:
    return [
        ln.strip()
        for ln in text.splitlines()
        if _XEN_MODULES.search(ln) and not ln.lstrip().startswith("#")
    ]
