"""Whether grub.cfg as the earlier steps edited it is what the guest's grub-mkconfig would write.

devices.py and consoles.py edit device names and console= in every file that holds the kernel
command line, the same edit in each: /etc/default/grub, the generated grub.cfg (ESP copies too),
BLS entries, grubenv, /etc/kernel/cmdline. When nothing else that grub-mkconfig reads has changed
(the kernels in /boot, their initrds, the default entry), regenerating grub.cfg would give the
file as edited, and update-grub is not run (13 s under TCG on a Debian guest). Not running it in
the appliance also keeps what only the guest's own machine can probe: the appliance would name
the root disk /dev/sdX where GRUB_DISABLE_LINUX_UUID=true, and a UEFI guest would lose its
signed-kernel and firmware-setup entries (the appliance boots by BIOS).

Each check below returns the reason the configuration must be regenerated, or None; the first
reason found is what the report says. The text rules are pure functions in formats/grub.py.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from vmshift.convert.linux.context import LinuxGuest
from vmshift.formats import grub
from vmshift.model.inspection import LinuxKernel

DEFAULTS = "/etc/default/grub"
DEFAULTS_DIR = "/etc/default/grub.d"
BLS_DIR = "/boot/loader/entries"


@dataclass(frozen=True)
class Verdict:
    in_place: bool
    why: str  # what was verified, or why grub.cfg must be regenerated


def verdict(guest: LinuxGuest, cfg: str, text: str, grubenv: str) -> Verdict:
    """Whether `text`, the grub.cfg at `cfg`, can stay as edited (grubenv: its environment)."""
    # Only a file grub-mkconfig wrote is the output of the configuration checked below; a
    # hand-written grub.cfg gets regenerated as before.
    if not grub.is_generated(text):
        return Verdict(False, f"{cfg} was not written by grub-mkconfig")
    settings = grub.shell_settings(guest.read(p) or "" for p in _defaults_files(guest))
    if settings is None:
        return Verdict(False, f"{DEFAULTS} is more than plain settings")
    env = grub.parse_grubenv(guest.read(grubenv) or "")
    reason = (
        _scripts_gone(guest, text)
        or _default_changed(text, settings)
        or _cmdline_changed("kernelopts in grubenv", env.get("kernelopts"), settings)
    )
    if reason is None and grub.is_bls(text):
        return _bls(guest, settings)
    if reason is None:
        return _menu(guest, text, settings, env)
    return Verdict(False, reason)


def _defaults_files(guest: LinuxGuest) -> list[str]:
    try:
        extra = sorted(str(p) for p in guest.g.glob_expand(f"{DEFAULTS_DIR}/*.cfg"))
    except RuntimeError:
        extra = []
    return [DEFAULTS, *extra]


def _scripts_gone(guest: LinuxGuest, text: str) -> str | None:
    # Package removal may take a /etc/grub.d script (and so a section of the menu) away.
    for script in grub.generator_scripts(text):
        if not guest.g.is_file(script, followsymlinks=True):
            return f"{script}, which wrote part of grub.cfg, is gone"
    return None


def _default_changed(text: str, settings: dict[str, str | None]) -> str | None:
    # grub.cfg's `set default=` is GRUB_DEFAULT as it was at the last update-grub: an edit
    # made since (by the user) would take effect with the next one.
    value = settings.get("GRUB_DEFAULT", "0")
    if value is None:
        return "GRUB_DEFAULT is computed"
    expected = "${saved_entry}" if value == "saved" else (value or "0")
    if grub.cfg_defaults(text) != {expected}:
        return f"grub.cfg's default is not GRUB_DEFAULT={value or '0'}"
    return None


def _cmdline_changed(where: str, args: str | None, settings: dict[str, str | None]) -> str | None:
    # The command line grub-mkconfig writes is GRUB_CMDLINE_LINUX and _DEFAULT: the edited one
    # must still be exactly that (devices.py renamed devices in both; any other difference is
    # an edit of /etc/default/grub that the next update-grub would apply).
    if args is None:
        return None
    parts = (settings.get("GRUB_CMDLINE_LINUX", ""), settings.get("GRUB_CMDLINE_LINUX_DEFAULT", ""))
    if None in parts:
        return "GRUB_CMDLINE_LINUX is computed"
    expected = grub.linux_cmdline(" ".join(p or "" for p in parts))
    if grub.linux_cmdline(args) != expected:
        return f"the command line of {where} is not {DEFAULTS}'s"
    return None


def _menu(
    guest: LinuxGuest, text: str, settings: dict[str, str | None], env: dict[str, str]
) -> Verdict:
    entries = list(_entries(grub.parse_menu(text)))
    if not entries:
        return Verdict(False, "grub.cfg has no menu entries")
    # Tool removal may have removed a kernel; the initramfs step may have created an initrd.
    reason = _missing_files(guest, [path for e in entries for path in e.loads])
    if reason is not None:
        return Verdict(False, reason)
    boot = _listing(guest, "/boot")
    listed = {n for n in boot if grub.is_mkconfig_kernel(n, guest.os.arch)}
    listed |= {
        posixpath.basename(p)
        for p in guest.glob("/vmlinuz-*")
        if grub.is_mkconfig_kernel(posixpath.basename(p), guest.os.arch)
    }
    in_menu: dict[str, list[str]] = {}
    for entry in entries:
        name = posixpath.basename(entry.linux or "").removesuffix(".efi.signed")
        if grub.is_mkconfig_kernel(name, guest.os.arch):
            in_menu.setdefault(name, [posixpath.basename(p) for p in entry.initrd])
    if set(in_menu) != listed:
        added = sorted(listed - set(in_menu))
        return Verdict(False, f"the menu lacks {', '.join(added) or 'no kernel'}")
    for name, initrds in in_menu.items():
        expected = grub.mkconfig_initrds(grub.kernel_version(name), boot)
        if initrds != expected:
            now, was = " ".join(expected) or "none", " ".join(initrds) or "none"
            return Verdict(False, f"{name}'s initrd is now {now}, not {was}")
    value = settings.get("GRUB_DEFAULT") or "0"
    if value == "saved":
        value = env.get("saved_entry") or "0"
    default = grub.resolve_entry(grub.parse_menu(text), value)
    if default is None or default.linux is None:
        return Verdict(False, f"no menu entry is the default ({value})")
    reason = _boots_chosen(guest.kernel, default, settings) or _cmdline_changed(
        "the default entry", default.args, settings
    )
    if reason is not None:
        return Verdict(False, reason)
    count = f"{len(listed)} kernel{'s' if len(listed) > 1 else ''}"
    return Verdict(True, f"{count} listed as grub-mkconfig would, default entry unchanged")


def _boots_chosen(
    kernel: LinuxKernel | None, default: grub.MenuEntry, settings: dict[str, str | None]
) -> str | None:
    # Making another entry the default means changing GRUB_DEFAULT, which grub-mkconfig reads;
    # with GRUB_DEFAULT=saved the bootloader step sets saved_entry in grubenv instead.
    if kernel is None or settings.get("GRUB_DEFAULT") == "saved":
        return None
    name = posixpath.basename(kernel.path)
    booted = posixpath.basename(default.linux or "").removesuffix(".efi.signed")
    if booted != name:
        return f"the default entry boots {booted}, not {name} (GRUB_DEFAULT must change)"
    return None


def _bls(guest: LinuxGuest, settings: dict[str, str | None]) -> Verdict:
    # grub.cfg only runs blscfg: the menu is the entries, which kernel-install writes and
    # devices.py edited; grub2-mkconfig rewrites their command line (RHEL 9.0-9.2) from
    # /etc/default/grub, so it must already be that one.
    entries = guest.glob(f"{BLS_DIR}/*.conf")
    if not entries:
        return Verdict(False, f"grub.cfg reads BLS entries and {BLS_DIR} has none")
    files: list[str] = []
    for path in entries:
        fields = grub.bls_fields(guest.read(path) or "")
        files += fields.get("linux", []) + fields.get("initrd", [])
        options = " ".join(fields.get("options", []))
        if "$kernelopts" not in options:
            reason = _cmdline_changed(posixpath.basename(path), options, settings)
            if reason is not None:
                return Verdict(False, reason)
    reason = _missing_files(guest, files)
    if reason is not None:
        return Verdict(False, reason)
    return Verdict(True, f"{len(entries)} BLS entries, their kernels and initrds present")


def _entries(menu: list[grub.MenuEntry]) -> list[grub.MenuEntry]:
    found = []
    for entry in menu:
        found += _entries(entry.children) if entry.children is not None else [entry]
    return found


def _missing_files(guest: LinuxGuest, paths: list[str]) -> str | None:
    # grub reads these paths on the filesystem holding /boot.
    separate = "/boot" in guest.os.mountpoints
    for path in dict.fromkeys(p for p in paths if p.startswith("/")):
        full = "/boot" + path if separate else path
        if not guest.g.is_file(full, followsymlinks=True):
            return f"grub.cfg loads {full}, which is gone"
    return None


def _listing(guest: LinuxGuest, directory: str) -> list[str]:
    try:
        return [str(n) for n in guest.g.ls(directory)]
    except RuntimeError:
        return []
