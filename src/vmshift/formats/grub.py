"""grub configuration text: grub2 menus, /etc/default/grub, grubenv, BLS entries, grub1 menus.

Pure functions over file contents, unit-tested on their own; convert/linux/bootloader.py does
the guest I/O around them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

_KERNEL_LINE = re.compile(r"^\s*(?:linux|linux16|linuxefi|kernel)\s+(\S+)(.*)$")
_APPLIANCE_ROOT = re.compile(r"(?<=\sroot=)/dev/(?:[sh]d|x?vd)[a-z]+[0-9]*(?=\s|$)")
_INITRD_LINE = re.compile(r"^initrd(?:16|efi)?$")
_RECOVERY = re.compile(r"(\bsingle\b|\bS\b|systemd\.unit=(rescue|emergency)\.target)")
GRUBENV_HEADER = "# GRUB Environment Block\n"
GRUBENV_SIZE = 1024


@dataclass
class MenuEntry:
    """A grub2 menuentry, or a submenu when children is a list."""

    title: str
    id: str | None
    linux: str | None = None
    args: str = ""
    children: list[MenuEntry] | None = None
    initrd: list[str] = field(default_factory=list)  # the initrd line's files, in order
    loads: list[str] = field(default_factory=list)  # every file it loads: kernel, initrds, modules

    @property
    def is_recovery(self) -> bool:
        return "recovery mode" in self.title.lower() or bool(_RECOVERY.search(self.args))


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def _entry_id(words: list[str]) -> str | None:
    for i, word in enumerate(words):
        if word in ("$menuentry_id_option", "--id") and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("--id="):
            return word.removeprefix("--id=")
    return None


def parse_menu(text: str) -> list[MenuEntry]:
    """The menu tree of a generated grub.cfg: entries and submenus in order, with kernels."""
    top: list[MenuEntry] = []
    levels = [top]  # the entry lists being filled, innermost last
    blocks: list[MenuEntry | None] = []  # open { } blocks; None for functions, if-less blocks
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("menuentry ", "submenu ")) and line.endswith("{"):
            words = _words(line[:-1])
            submenu = words[0] == "submenu"
            entry = MenuEntry(words[1] if len(words) > 1 else "", _entry_id(words))
            if submenu:
                entry.children = []
            levels[-1].append(entry)
            blocks.append(entry)
            if entry.children is not None:
                levels.append(entry.children)
        elif line.endswith("{"):
            blocks.append(None)
        elif line == "}":
            closed = blocks.pop() if blocks else None
            if closed is not None and closed.children is not None and len(levels) > 1:
                levels.pop()
        elif blocks and blocks[-1] is not None and blocks[-1].children is None:
            _entry_line(blocks[-1], line)
    return top


def _entry_line(entry: MenuEntry, line: str) -> None:
    match = _KERNEL_LINE.match(line)
    if match and entry.linux is None:
        entry.linux = match[1].split(")", 1)[-1]
        entry.args = match[2]
        entry.loads.append(entry.linux)
        return
    words = line.split()
    if not words:
        return
    # "(hd0,1)/x" and "($root)/x" name the partition grub reads the file from.
    paths = [w.split(")", 1)[-1] for w in words[1:] if not w.startswith("-")]
    if _INITRD_LINE.match(words[0]):
        if not entry.initrd:
            entry.initrd = paths
            entry.loads.extend(paths)
    elif words[0] in ("multiboot", "multiboot2", "module", "module2") and paths:
        entry.loads.append(paths[0])  # the rest are the loaded image's arguments


def resolve_entry(menu: list[MenuEntry], value: str) -> MenuEntry | None:
    """The entry a GRUB_DEFAULT / saved_entry value selects: "0", an id, a title, "a>b"."""
    items: list[MenuEntry] | None = menu
    entry: MenuEntry | None = None
    for raw in value.split(">"):
        part = raw.strip()
        if items is None:
            return None
        if part.isdigit():
            entry = items[int(part)] if int(part) < len(items) else None
        else:
            entry = next((e for e in items if part in (e.id, e.title)), None)
        if entry is None:
            return None
        items = entry.children
    return entry if entry is not None and entry.children is None else None


def entry_ref(menu: list[MenuEntry], kernel_name: str) -> str | None:
    """A GRUB_DEFAULT value selecting the normal (not recovery) entry booting kernel_name."""

    def ref(entry: MenuEntry, index: int) -> str:
        if entry.id:
            return entry.id
        return entry.title if ">" not in entry.title else str(index)

    def boots(entry: MenuEntry) -> bool:
        linux = entry.linux or ""
        return linux.rsplit("/", 1)[-1] == kernel_name and not entry.is_recovery

    for i, entry in enumerate(menu):
        if entry.children is None and boots(entry):
            return ref(entry, i)
    for i, entry in enumerate(menu):
        for j, child in enumerate(entry.children or []):
            if child.children is None and boots(child):
                return f"{ref(entry, i)}>{ref(child, j)}"
    return None


def is_bls(cfg_text: str) -> bool:
    """Whether grub.cfg takes its entries from /boot/loader/entries (RHEL 8+, Fedora 30+)."""
    return bool(re.search(r"^\s*blscfg\b", cfg_text, re.MULTILINE))


def is_stub(cfg_text: str) -> bool:
    """An ESP grub.cfg that only loads the real one from /boot."""
    return "configfile" in cfg_text and "menuentry" not in cfg_text and not is_bls(cfg_text)


def bls_fields(entry_text: str) -> dict[str, list[str]]:
    """A BLS entry's keys (linux, initrd, options ...) and their words, comments left out."""
    fields: dict[str, list[str]] = {}
    for line in entry_text.splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            fields.setdefault(words[0], []).extend(words[1:])
    return fields


def bls_linux(entry_text: str) -> str | None:
    linux = bls_fields(entry_text).get("linux")
    return linux[0] if linux else None


def grub_default(defaults_text: str) -> str:
    """GRUB_DEFAULT from /etc/default/grub; grub-mkconfig's own default is 0."""
    value = "0"
    for line in defaults_text.splitlines():
        if line.strip().startswith("GRUB_DEFAULT="):
            words = _words(line.strip().removeprefix("GRUB_DEFAULT="))
            value = words[0] if words else ""
    return value


def set_grub_default(defaults_text: str, value: str) -> str:
    """Set GRUB_DEFAULT, keeping every other line (and commented-out examples) as it was."""
    new = f'GRUB_DEFAULT="{value}"'
    lines = defaults_text.splitlines()
    found = False
    for i, line in enumerate(lines):
        if line.strip().startswith("GRUB_DEFAULT="):
            lines[i] = new
            found = True
    if not found:
        lines.insert(0, new)
    return "\n".join(lines) + "\n"


def parse_grubenv(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key] = value
    return env


def set_grubenv(text: str, key: str, value: str) -> str:
    """A grubenv block with key=value: the same size as before (grub rewrites it in place)."""
    env = parse_grubenv(text)
    env[key] = value
    body = GRUBENV_HEADER + "".join(f"{k}={v}\n" for k, v in env.items())
    size = max(GRUBENV_SIZE, len(text))
    if len(body) > size:
        raise ValueError(f"the grub environment block would exceed {size} bytes")
    return body + "#" * (size - len(body))


def fstab_root(fstab_text: str) -> str | None:
    """The device spec fstab mounts on /."""
    for line in fstab_text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1] == "/":
            return fields[0]
    return None


def replace_kernel_root(cfg_text: str, root: str) -> str:
    """Point root=/dev/sdXN (and hd, vd, xvd names) on kernel lines at root instead."""
    lines = cfg_text.split("\n")
    for i, line in enumerate(lines):
        if _KERNEL_LINE.match(line):
            lines[i] = _APPLIANCE_ROOT.sub(root, line)
    return "\n".join(lines)


# --- what grub-mkconfig would write ----------------------------------------------------------
# Facts from grub 2.06's grub-mkconfig, grub-mkconfig_lib and /etc/grub.d/10_linux (Debian 12;
# RHEL's and SUSE's derive from the same scripts).

_GENERATED = re.compile(
    r"^# DO NOT EDIT THIS FILE\n#\n# It is automatically generated by grub2?-mkconfig\b", re.M
)
_SECTION = re.compile(r"^### BEGIN (/\S+) ###$", re.M)
_SET_DEFAULT = re.compile(r"^\s*set default=(.*)$", re.M)
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_]\w*)=(.*)$")
_EXPANSION = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# grub-mkconfig's default GRUB_EARLY_INITRD_LINUX_STOCK: microcode images loaded before the initrd.
EARLY_INITRDS = (
    "intel-uc.img", "intel-ucode.img", "amd-uc.img", "amd-ucode.img", "early_ucode.cpio",
    "microcode.cpio",
)  # fmt: skip


def is_generated(cfg_text: str) -> bool:
    """Whether grub-mkconfig (grub2-mkconfig) wrote this grub.cfg: its header says so."""
    return bool(_GENERATED.search(cfg_text[:1000]))


def generator_scripts(cfg_text: str) -> list[str]:
    """The /etc/grub.d scripts whose output grub-mkconfig marked with "### BEGIN script ###"."""
    return _SECTION.findall(cfg_text)


def cfg_defaults(cfg_text: str) -> set[str]:
    """The values grub.cfg's `set default=` lines give, but for the one-time ${next_entry}."""
    values = {" ".join(_words(m[1])) for m in _SET_DEFAULT.finditer(cfg_text)}
    return values - {"${next_entry}"}


def is_mkconfig_kernel(name: str, arch: str) -> bool:
    """Whether 10_linux makes menu entries for the file `name` in /boot (or /).

    It lists vmlinuz-* and kernel-* (vmlinux-* too off x86) but what grub_file_is_not_garbage
    drops (package manager leftovers, READMEs, signatures) and signed copies (*.efi.signed),
    which it boots instead of the plain file where the firmware is UEFI."""
    prefixes: tuple[str, ...] = ("vmlinuz-", "kernel-")
    if arch not in ("x86_64", "i386", "i486", "i586", "i686"):
        prefixes += ("vmlinux-",)
    if not name.startswith(prefixes) or name.startswith("README"):
        return False
    garbage = (".rpmsave", ".rpmnew", ".sig", ".efi.signed")
    return ".dpkg-" not in name and not name.endswith(garbage)


def kernel_version(name: str) -> str:
    """10_linux's version of a kernel file name: everything after its non-digit prefix."""
    return re.sub(r"^[^0-9]*-", "", name)


def mkconfig_initrds(version: str, names: Iterable[str]) -> list[str]:
    """The initrd line 10_linux writes for a kernel version, given the names in its directory:
    the microcode images present, then the first initrd name present (nothing: no line)."""
    present = set(names)
    alt = version.removesuffix(".old")
    real = (
        f"initrd.img-{version}", f"initrd-{version}.img", f"initrd-{version}.gz",
        f"initrd-{version}", f"initramfs-{version}.img", f"initrd.img-{alt}",
        f"initrd-{alt}.img", f"initrd-{alt}", f"initramfs-{alt}.img",
    )  # fmt: skip
    found = [name for name in EARLY_INITRDS if name in present]
    return found + [name for name in real if name in present][:1]


def shell_settings(texts: Iterable[str]) -> dict[str, str | None] | None:
    """The variables that sourcing these files in order sets (/etc/default/grub, then
    /etc/default/grub.d/*.cfg). A value made by a command (`...`, $(...)) or from one is None.
    None for the whole when a file holds anything but assignments and comments: its effect
    cannot be told without running it."""
    env: dict[str, str | None] = {}
    for text in texts:
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _ASSIGNMENT.match(line)
            if match is None:
                return None
            env[match[1]] = _shell_value(match[2], env)
    return env


def _shell_value(raw: str, env: dict[str, str | None]) -> str | None:
    if "`" in raw or "$(" in raw:
        return None
    unknown = False

    def expand(m: re.Match[str]) -> str:
        nonlocal unknown
        value = env.get(m[1] or m[2], "")
        unknown = unknown or value is None or "'" in value or '"' in value
        return value or ""

    # Single-quoted parts are literal; everything else expands $NAME and ${NAME}.
    parts = re.split(r"('[^']*')", raw)
    text = "".join(p if p.startswith("'") else _EXPANSION.sub(expand, p) for p in parts)
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    # `NAME=a b` would run b with NAME=a in its environment: not a setting.
    if unknown or len(words) > 1:
        return None
    return words[0] if words else ""


def linux_cmdline(args: str) -> list[str]:
    """The words of a kernel line's arguments that come from /etc/default/grub: without the
    `root=X ro` 10_linux puts first and grub variables it adds ($vt_handoff on Ubuntu)."""
    words = [w for w in _words(args) if not w.startswith("$")]
    if words and words[0].startswith("root="):
        words = words[1:]
        if words and words[0] == "ro":
            words = words[1:]
    return words


def _grub1_default_line(line: str) -> re.Match[str] | None:
    return re.match(r"^(\s*default)(\s*=\s*|\s+)(\S+)\s*$", line)


def grub1_entries(text: str) -> list[tuple[str, str, str]]:
    """(title, kernel path, kernel arguments) of each menu.lst entry, in order."""
    entries: list[tuple[str, str, str]] = []
    for line in text.splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "title":
            entries.append((words[1].strip() if len(words) > 1 else "", "", ""))
        elif words[0] == "kernel" and entries and not entries[-1][1] and len(words) > 1:
            path, _, args = words[1].strip().partition(" ")
            # "(hd0,0)/vmlinuz-..." names the partition grub reads it from.
            entries[-1] = (entries[-1][0], path.split(")", 1)[-1], args)
    return entries


def grub1_kernels(text: str) -> list[str]:
    return [kernel for _, kernel, _ in grub1_entries(text)]


def grub1_default(text: str) -> int | None:
    for line in text.splitlines():
        if line.split(None, 1)[:1] == ["title"]:
            break
        match = _grub1_default_line(line)
        if match:
            return int(match[3]) if match[3].isdigit() else None
    return 0


def grub1_entry_index(text: str, kernel_name: str) -> int | None:
    for index, (title, kernel, args) in enumerate(grub1_entries(text)):
        recovery = "single" in title.lower() or bool(_RECOVERY.search(" " + args))
        if kernel.rsplit("/", 1)[-1] == kernel_name and not recovery:
            return index
    return None


def set_grub1_default(text: str, index: int) -> str:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.split(None, 1)[:1] == ["title"]:
            break
        match = _grub1_default_line(line)
        if match:
            lines[i] = f"{match[1]}{match[2]}{index}"
            return "\n".join(lines)
    # No default line: grub legacy reads it anywhere before the first title; put it first
    # after the leading comments.
    at = 0
    while at < len(lines) and lines[at].startswith("#"):
        at += 1
    lines.insert(at, f"default={index}")
    return "\n".join(lines)
