"""Make the chosen kernel boot by default and bring the bootloader configuration up to date.

devices.py and consoles.py have already edited the kernel command line wherever it is kept
(/etc/default/grub, grub.cfg, menu.lst, BLS entries, grubenv). grub.cfg stays as they edited it
when grub_inplace.py finds it is what the guest's own grub-mkconfig would write; otherwise it is
regenerated with the guest's tool so those edits reach it. Then the chosen kernel becomes the
default entry, and a UEFI guest gets the removable-media boot path, because the new machine's
NVRAM has no boot entry for it.

The grub text helpers are pure functions in formats/grub.py.
"""

from __future__ import annotations

import logging

from vmshift.convert.linux import grub_inplace
from vmshift.convert.linux.context import LinuxGuest
from vmshift.convert.linux.initramfs import find_tool
from vmshift.errors import ConversionError
from vmshift.formats.grub import (
    bls_linux,
    entry_ref,
    fstab_root,
    grub1_default,
    grub1_entry_index,
    grub1_kernels,
    grub_default,
    is_bls,
    is_stub,
    parse_grubenv,
    parse_menu,
    replace_kernel_root,
    resolve_entry,
    set_grub1_default,
    set_grub_default,
    set_grubenv,
)
from vmshift.model.inspection import Bootloader, LinuxKernel

log = logging.getLogger(__name__)

STEP = "bootloader"
DEFAULT_GRUB = "/etc/default/grub"
BLS_DIR = "/boot/loader/entries"
# The removable-media path firmware boots when NVRAM names nothing: \EFI\BOOT\BOOT<ARCH>.EFI,
# and the shim/grub file names of the same architecture.
UEFI_ARCH = {"x86_64": "X64", "aarch64": "AA64", "i386": "IA32", "i686": "IA32"}


def update(guest: LinuxGuest) -> None:
    """Regenerate the bootloader configuration and make guest.kernel its default entry."""
    linux = guest.os.linux
    loader = linux.bootloader if linux is not None else None
    kind = loader.kind if loader is not None else "unknown"
    if loader is not None and kind == "grub2":
        _update_grub2(guest, loader)
    elif loader is not None and kind == "grub1" and loader.config:
        _update_grub1(guest, loader.config)
    else:
        guest.warn(
            f"the {kind} bootloader is not updated by vmshift: check that it boots "
            f"{guest.kernel.version if guest.kernel else 'a virtio-capable kernel'} by default"
        )
    if guest.os.firmware == "uefi":
        ensure_uefi_fallback(guest)


def default_kernel_name(guest: LinuxGuest) -> str | None:
    """File name (vmlinuz-VERSION) of the kernel the bootloader boots today, if it can be told."""
    linux = guest.os.linux
    loader = linux.bootloader if linux is not None else None
    name: str | None = None
    try:
        if loader is not None and loader.config and loader.kind == "grub2":
            cfg = guest.read(loader.config) or ""
            if is_bls(cfg):
                entry = _bls_saved_entry(guest, loader.config)
                name = _bls_kernels(guest).get(entry or "")
            else:
                entry_linux = _grub2_default_linux(guest, loader.config, cfg)
                name = entry_linux.rsplit("/", 1)[-1] if entry_linux else None
        elif loader is not None and loader.config and loader.kind == "grub1":
            text = guest.read(loader.config) or ""
            index = grub1_default(text)
            kernels = grub1_kernels(text)
            if index is not None and index < len(kernels):
                name = kernels[index].rsplit("/", 1)[-1]
        if name is None:
            for link in ("/boot/vmlinuz", "/vmlinuz"):
                if guest.g.is_symlink(link):
                    name = str(guest.g.readlink(link)).rsplit("/", 1)[-1]
                    break
    except RuntimeError as exc:
        log.info("cannot tell the default kernel: %s", exc)
    return name


# --- grub2 -------------------------------------------------------------------------------------


def _update_grub2(guest: LinuxGuest, loader: Bootloader) -> None:
    cfg = _grub2_config_path(guest, loader)
    text = guest.read(cfg) or ""
    verdict = grub_inplace.verdict(guest, cfg, text, _grubenv_path(guest, cfg))
    argv: list[str] | None = None
    if verdict.in_place:
        guest.note(STEP, f"edited in place ({verdict.why})", cfg)
    else:
        argv = _grub2_mkconfig(guest, cfg)
        _regenerate(guest, argv, cfg, verdict.why)
        text = guest.read(cfg) or ""
    kernel = guest.kernel
    if kernel is None:
        return
    if is_bls(text) and guest.g.is_dir(BLS_DIR):
        _set_bls_default(guest, kernel, cfg)
    elif _set_grub2_default(guest, kernel, cfg, text):
        # GRUB_DEFAULT is read by grub-mkconfig, so the menu has to be generated (once more).
        _regenerate(guest, argv or _grub2_mkconfig(guest, cfg), cfg, "GRUB_DEFAULT changed")


def _grub2_config_path(guest: LinuxGuest, loader: Bootloader) -> str:
    """The grub.cfg that grub really reads (not a stub that only chains to another)."""
    if guest.family == "debian":
        return "/boot/grub/grub.cfg"
    if guest.os.firmware == "uefi":
        for path in guest.glob("/boot/efi/EFI/*/grub.cfg"):
            if path.split("/")[-2].upper() == "BOOT":
                continue
            # RHEL 9, Fedora 34+ and SUSE keep a stub on the ESP that loads /boot/grub2's;
            # older RHEL/CentOS UEFI installs generate the real menu on the ESP.
            if not is_stub(guest.read(path) or ""):
                return path
    if guest.g.is_file("/boot/grub2/grub.cfg", followsymlinks=True):
        return "/boot/grub2/grub.cfg"
    return loader.config or "/boot/grub2/grub.cfg"


def _grub2_mkconfig(guest: LinuxGuest, cfg: str) -> list[str]:
    if guest.family == "debian":
        update_grub = find_tool(guest, "update-grub")
        if update_grub is not None:
            return [update_grub]
        names = ("grub-mkconfig", "grub2-mkconfig")
    else:
        names = ("grub2-mkconfig", "grub-mkconfig")
    for name in names:
        tool = find_tool(guest, name)
        if tool is not None:
            return [tool, "-o", cfg]
    raise ConversionError(
        f"cannot regenerate {cfg}: {' or '.join(names)} is not installed in the guest",
        hint="the kernel command line and device names in grub.cfg would be stale",
    )


def _regenerate(guest: LinuxGuest, argv: list[str], cfg: str, why: str) -> None:
    # guest.run turns a failure into a ConversionError carrying the tool's own message.
    guest.run(argv)
    guest.note(STEP, f"regenerated with {argv[0].rsplit('/', 1)[-1]} ({why})", cfg)
    _fix_appliance_root(guest, cfg)


def _fix_appliance_root(guest: LinuxGuest, cfg: str) -> None:
    """grub-mkconfig names the root by what it sees: inside the appliance that is /dev/sdX.

    When the guest disables root=UUID (GRUB_DISABLE_LINUX_UUID=true, typical of old VMware
    installs) those appliance names land in grub.cfg; put back the root fstab names, which
    devices.py has already made right for the new machine."""
    root = fstab_root(guest.read("/etc/fstab") or "")
    text = guest.read(cfg)
    if root is None or text is None:
        return
    fixed = replace_kernel_root(text, root)
    if fixed != text:
        guest.g.write(cfg, fixed.encode("utf-8", errors="surrogateescape"))
        guest.note(
            STEP, f"root={root} on the kernel lines (grub-mkconfig saw appliance names)", cfg
        )


def _grubenv_path(guest: LinuxGuest, cfg: str) -> str:
    path = cfg.rsplit("/", 1)[0] + "/grubenv"
    return _realpath(guest, path)


def _grub2_default_linux(guest: LinuxGuest, cfg: str, text: str) -> str | None:
    value = grub_default(guest.read(DEFAULT_GRUB) or "")
    if value == "saved":
        env = parse_grubenv(guest.read(_grubenv_path(guest, cfg)) or "")
        value = env.get("saved_entry") or "0"
    entry = resolve_entry(parse_menu(text), value)
    return entry.linux if entry is not None else None


def _set_grub2_default(guest: LinuxGuest, kernel: LinuxKernel, cfg: str, text: str) -> bool:
    """Make the normal entry of kernel the default; True when GRUB_DEFAULT had to change."""
    name = kernel.path.rsplit("/", 1)[-1]
    current = _grub2_default_linux(guest, cfg, text)
    if current is not None and current.rsplit("/", 1)[-1] == name:
        log.info("%s already boots %s by default", cfg, name)
        return False
    ref = entry_ref(parse_menu(text), name)
    if ref is None:
        raise ConversionError(f"{cfg} has no menu entry for {kernel.path}")
    defaults = guest.read(DEFAULT_GRUB) or ""
    if grub_default(defaults) == "saved":
        _set_saved_entry(guest, _grubenv_path(guest, cfg), ref)
        return False
    guest.write(
        DEFAULT_GRUB,
        set_grub_default(defaults, ref),
        STEP,
        f'GRUB_DEFAULT="{ref}" (kernel {kernel.version})',
    )
    return True


def _set_saved_entry(guest: LinuxGuest, grubenv: str, entry: str) -> None:
    text = guest.read(grubenv)
    try:
        new = set_grubenv(text or "", "saved_entry", entry)
    except ValueError as exc:
        raise ConversionError(f"{grubenv}: {exc}") from exc
    guest.write(grubenv, new, STEP, f"saved_entry={entry}")


def _bls_kernels(guest: LinuxGuest) -> dict[str, str]:
    """BLS entry id -> kernel file name."""
    found = {}
    for path in guest.glob(f"{BLS_DIR}/*.conf"):
        linux = bls_linux(guest.read(path) or "")
        if linux:
            found[path.rsplit("/", 1)[-1].removesuffix(".conf")] = linux.rsplit("/", 1)[-1]
    return found


def _bls_saved_entry(guest: LinuxGuest, cfg: str) -> str | None:
    return parse_grubenv(guest.read(_grubenv_path(guest, cfg)) or "").get("saved_entry")


def _set_bls_default(guest: LinuxGuest, kernel: LinuxKernel, cfg: str) -> None:
    grubby = find_tool(guest, "grubby")
    if grubby is not None:
        guest.run([grubby, "--set-default", kernel.path])
        guest.note(STEP, f"made {kernel.path} the default entry with grubby")
        return
    name = kernel.path.rsplit("/", 1)[-1]
    ids = [entry for entry, linux in sorted(_bls_kernels(guest).items()) if linux == name]
    if not ids:
        raise ConversionError(f"no boot entry in {BLS_DIR} boots {kernel.path}")
    if _bls_saved_entry(guest, cfg) != ids[0]:
        _set_saved_entry(guest, _grubenv_path(guest, cfg), ids[0])


# --- grub1 -------------------------------------------------------------------------------------


def _update_grub1(guest: LinuxGuest, config: str) -> None:
    """grub legacy reads menu.lst as written: nothing to regenerate, only default= to set."""
    kernel = guest.kernel
    if kernel is None:
        return
    path = _realpath(guest, config)
    text = guest.read(path) or ""
    name = kernel.path.rsplit("/", 1)[-1]
    index = grub1_entry_index(text, name)
    if index is None:
        raise ConversionError(f"{config} has no entry for {kernel.path}")
    if grub1_default(text) == index:
        return
    guest.write(path, set_grub1_default(text, index), STEP, f"default={index} ({name})")


# --- UEFI --------------------------------------------------------------------------------------


def ensure_uefi_fallback(guest: LinuxGuest) -> None:
    """Give the ESP an \\EFI\\BOOT\\BOOT<ARCH>.EFI if it has none, copied from the distro's.

    The source machine booted through an NVRAM entry naming \\EFI\\<distro>\\shimx64.efi; the
    new machine's NVRAM is empty, so the firmware only tries the removable-media path. shim is
    copied there with the grub it chain-loads from its own directory (and MokManager); grub
    finds its configuration through the prefix built into it. fbx64.efi is deliberately not
    copied: with it, shim would rewrite NVRAM and reset, which loops on volatile NVRAM."""
    arch = UEFI_ARCH.get(guest.os.arch)
    efi = _esp_efi_dir(guest)
    if arch is None or efi is None:
        guest.warn("UEFI guest: no EFI System Partition found; it may not boot on the new machine")
        return
    children = _listdir(guest, efi)
    boot = children.get("boot")
    fallback = f"boot{arch.lower()}.efi"
    if boot is not None and fallback in _listdir(guest, f"{efi}/{boot}"):
        return
    source = _distro_efi_dir(guest, efi, children, arch.lower())
    if source is None:
        guest.warn(
            f"UEFI guest: {efi} has no BOOT{arch}.EFI and no shim or grub to copy there; "
            "it will only boot if the new machine is given a boot entry"
        )
        return
    directory, files = source
    if boot is None:
        boot = "BOOT"
        guest.g.mkdir_p(f"{efi}/{boot}")
    target = f"{efi}/{boot}"
    loader = files.get(f"shim{arch.lower()}.efi") or files[f"grub{arch.lower()}.efi"]
    guest.g.cp(f"{directory}/{loader}", f"{target}/BOOT{arch}.EFI")
    guest.note(
        STEP, f"UEFI fallback loader: copied {directory}/{loader}", f"{target}/BOOT{arch}.EFI"
    )
    extras = [f"grub{arch.lower()}.efi", f"mm{arch.lower()}.efi", "grub.cfg"]
    if loader.lower().startswith("grub"):
        extras = ["grub.cfg"]
    for name in extras:
        if name in files:
            guest.g.cp(f"{directory}/{files[name]}", f"{target}/{files[name]}")
            guest.note(STEP, f"copied {directory}/{files[name]}", f"{target}/{files[name]}")


def _esp_efi_dir(guest: LinuxGuest) -> str | None:
    for mountpoint in ("/boot/efi", "/efi", "/boot"):
        if mountpoint not in guest.os.mountpoints:
            continue
        name = _listdir(guest, mountpoint).get("efi")
        if name is not None:
            return f"{mountpoint.rstrip('/')}/{name}"
    return None


def _distro_efi_dir(
    guest: LinuxGuest, efi: str, children: dict[str, str], arch: str
) -> tuple[str, dict[str, str]] | None:
    """The ESP directory holding the guest's shim or grub, its own distro's first."""
    preferred = {guest.os.distro, "redhat" if guest.family == "rhel" else guest.os.distro}
    order = sorted(
        (name for key, name in children.items() if key != "boot"),
        key=lambda n: (n.lower() not in preferred, n.lower()),
    )
    for name in order:
        directory = f"{efi}/{name}"
        files = _listdir(guest, directory)
        if f"shim{arch}.efi" in files or f"grub{arch}.efi" in files:
            return directory, files
    return None


# --- guest helpers -----------------------------------------------------------------------------


def _listdir(guest: LinuxGuest, path: str) -> dict[str, str]:
    """lower-case name -> real name: FAT is case-insensitive, and names differ by installer."""
    try:
        if not guest.g.is_dir(path, followsymlinks=True):
            return {}
        return {str(n).lower(): str(n) for n in guest.g.ls(path)}
    except RuntimeError:
        return {}


def _realpath(guest: LinuxGuest, path: str) -> str:
    """Resolve symlinks inside the guest (menu.lst -> grub.conf) so backups copy the file."""
    try:
        if guest.g.is_symlink(path):
            return str(guest.g.realpath(path))
    except RuntimeError:
        pass
    return path
