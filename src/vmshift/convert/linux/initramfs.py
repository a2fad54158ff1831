"""Make the chosen kernel's initramfs carry the virtio drivers, with the guest's own tool.

The rebuild is skipped when the image already holds what the new machine needs (or the kernel
has it built in): rebuilding costs minutes under TCG and is the slowest step of a conversion, so
not doing it needlessly is much of why vmshift is faster than virt-v2v, which always rebuilds.

When the drivers are missing, the old image is kept as IMAGE.vmshift-orig, and the drivers are
added: by appending them to the image as one more archive where that can be verified
(initramfs_append.py: seconds instead of minutes), else by the family's tool in the guest
(update-initramfs, dracut, mkinitrd). Either way the result is read back and checked. On Debian
the drivers are also listed in /etc/initramfs-tools/modules, so the guest's own next rebuild
keeps them.
"""

from __future__ import annotations

import logging

from vmshift.convert.linux import initramfs_append
from vmshift.convert.linux.context import LinuxGuest
from vmshift.errors import ConversionError
from vmshift.formats.initramfs import InitramfsError, InitramfsImage, read_initramfs
from vmshift.formats.kmod import module_name, module_names
from vmshift.guest.linux_facts import MAX_INITRAMFS
from vmshift.model.inspection import LinuxKernel

log = logging.getLogger(__name__)

STEP = "initramfs"
# What is added to the image: the PCI transport, both disk drivers, and the NIC driver (so a
# network root or early networking keeps working too).
VIRTIO_DRIVERS = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net")
MAX_IMAGE = MAX_INITRAMFS  # one limit on reading an initramfs, in inspection and here
BACKUP_SUFFIX = ".vmshift-orig"
MODULES_FILE = "/etc/initramfs-tools/modules"

_TOOL_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Where each family's tool writes the image when inspection found none.
_DEFAULT_IMAGE = {
    "debian": "/boot/initrd.img-{v}",
    "rhel": "/boot/initramfs-{v}.img",
    "suse": "/boot/initrd-{v}",
}


def add_modules(text: str, modules: tuple[str, ...] | list[str]) -> tuple[str, list[str]]:
    """Append the modules missing from an /etc/initramfs-tools/modules (modules(5) format).

    Returns the new text and the modules added; comments and existing lines are kept."""
    listed = set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            listed.add(words[0].replace("-", "_"))
    missing = [m for m in modules if m not in listed]
    if not missing:
        return text, []
    if text and not text.endswith("\n"):
        text += "\n"
    text += "# Added by vmshift: the drivers of the virtual hardware on KVM.\n"
    text += "".join(f"{m}\n" for m in missing)
    return text, missing


def find_tool(guest: LinuxGuest, name: str) -> str | None:
    """The guest path of an executable, looked up the way the guest's root PATH would."""
    for directory in _TOOL_DIRS:
        path = f"{directory}/{name}"
        try:
            if guest.g.is_file(path, followsymlinks=True):
                return path
        except RuntimeError:
            continue
    return None


def _kernel_modules(guest: LinuxGuest, version: str) -> tuple[set[str], set[str] | None]:
    """(built-in modules, installed modules or None when unknown) of a kernel version."""
    builtin: set[str] = set()
    installed: set[str] | None = None
    for base in ("/lib/modules", "/usr/lib/modules"):
        moddir = f"{base}/{version}"
        builtin_text = guest.read(f"{moddir}/modules.builtin")
        dep_text = guest.read(f"{moddir}/modules.dep")
        if builtin_text is None and dep_text is None:
            continue
        builtin = module_names(builtin_text or "")
        installed = module_names(dep_text) if dep_text is not None else None
        break
    config = guest.read(f"/boot/config-{version}") or ""
    # Older kernels have no modules.builtin; the Kconfig says the same thing.
    symbols = {"CONFIG_VIRTIO_PCI=y": "virtio_pci", "CONFIG_VIRTIO_BLK=y": "virtio_blk"}
    symbols |= {"CONFIG_SCSI_VIRTIO=y": "virtio_scsi", "CONFIG_VIRTIO_NET=y": "virtio_net"}
    for line in config.splitlines():
        if line.strip() in symbols:
            builtin.add(symbols[line.strip()])
    return builtin, installed


def load_image(guest: LinuxGuest, image: str) -> InitramfsImage:
    """An initramfs in the guest, parsed; InitramfsError says why it cannot be."""
    data = guest.read_bytes(image, limit=MAX_IMAGE)
    if data is None:
        raise InitramfsError(f"{image} is not readable or larger than {MAX_IMAGE >> 20} MiB")
    try:
        return read_initramfs(data)
    except InitramfsError as exc:
        raise InitramfsError(f"{image} cannot be read: {exc}") from exc


def read_image(guest: LinuxGuest, image: str) -> InitramfsImage | None:
    """load_image, None when it cannot be read."""
    try:
        return load_image(guest, image)
    except InitramfsError as exc:
        log.info("%s", exc)
        return None


def image_modules(guest: LinuxGuest, image: str) -> set[str] | None:
    """The kernel modules inside an initramfs in the guest, or None if it cannot be read."""
    parsed = read_image(guest, image)
    return None if parsed is None else _modules_in(parsed)


def _modules_in(parsed: InitramfsImage) -> set[str]:
    return {name for name in map(module_name, parsed.effective()) if name}


def needed_drivers(block_bus: str) -> tuple[str, ...]:
    """The drivers without which the new machine cannot find its root disk."""
    return ("virtio_pci", "virtio_blk", *(("virtio_scsi",) if block_bus == "virtio-scsi" else ()))


def rebuild(guest: LinuxGuest) -> None:
    """Make guest.kernel's initramfs hold the virtio drivers; skip when it already does."""
    kernel = guest.kernel
    if kernel is None:
        return
    builtin, installed = _kernel_modules(guest, kernel.version)
    needed = [m for m in needed_drivers(guest.block_bus) if m not in builtin]
    image = kernel.initramfs or _DEFAULT_IMAGE[guest.family].format(v=kernel.version)
    if not needed:
        guest.note(STEP, f"skipped: kernel {kernel.version} has the virtio drivers built in")
        return
    exists = guest.g.is_file(image, followsymlinks=True)
    # One read of the image serves this check and the fast path below.
    parsed: InitramfsImage | None = None
    unreadable = ""
    if exists:
        try:
            parsed = load_image(guest, image)
        except InitramfsError as exc:
            unreadable = exc.message
    if parsed is not None and all(m in _modules_in(parsed) for m in needed):
        guest.note(STEP, f"skipped: {image} already carries {', '.join(needed)}", image)
        return
    if installed is not None:
        absent = [m for m in needed if m not in installed]
        if absent:
            raise ConversionError(
                f"kernel {kernel.version} has no {', '.join(absent)} module to put into {image}"
            )
    drivers = [
        m for m in VIRTIO_DRIVERS if m not in builtin and (installed is None or m in installed)
    ]
    if exists:
        _backup(guest, image)
    if guest.family == "debian":
        _list_in_modules_file(guest, drivers)
    if exists:
        why_not = unreadable
        if parsed is not None:
            depmod = find_tool(guest, "depmod")
            why_not = initramfs_append.append(
                guest, kernel.version, image, parsed, drivers=drivers, depmod=depmod
            )
        if not why_not:
            _verify(guest, kernel, image, needed)
            return
        guest.note(STEP, f"not appended to the image ({why_not}): rebuilding it", image)
    _run_tool(guest, kernel, image, drivers, exists)
    _verify(guest, kernel, image, needed)


def _backup(guest: LinuxGuest, image: str) -> None:
    backup = image + BACKUP_SUFFIX
    if guest.g.exists(backup):
        return
    guest.g.cp_a(image, backup)
    guest.note(STEP, "kept the old initramfs", backup)


def _run_tool(
    guest: LinuxGuest, kernel: LinuxKernel, image: str, drivers: list[str], exists: bool
) -> None:
    if guest.family == "debian":
        _update_initramfs(guest, kernel, drivers, exists)
        return
    dracut = find_tool(guest, "dracut")
    if dracut is not None:
        # -f: replace the existing image; dracut refuses otherwise.
        argv = [dracut, "-f", "--add-drivers", " ".join(drivers), image, kernel.version]
        guest.run(argv)
        guest.note(STEP, f"rebuilt with dracut, adding {' '.join(drivers)}", image)
        return
    mkinitrd = find_tool(guest, "mkinitrd")
    if mkinitrd is None:
        raise ConversionError(
            f"cannot rebuild {image}: neither dracut nor mkinitrd is installed in the guest"
        )
    if guest.family == "suse":
        # SUSE's own mkinitrd (SLES 11 and older) takes the kernel image and a module list.
        argv = [mkinitrd, "-m", " ".join(drivers), "-i", image, "-k", kernel.path]
    else:
        # Red Hat's mkinitrd (RHEL 5 and older).
        argv = [mkinitrd, *(f"--with={m}" for m in drivers), "-f", image, kernel.version]
    guest.run(argv)
    guest.note(STEP, f"rebuilt with mkinitrd, adding {' '.join(drivers)}", image)


def _update_initramfs(
    guest: LinuxGuest, kernel: LinuxKernel, drivers: list[str], exists: bool
) -> None:
    tool = find_tool(guest, "update-initramfs")
    if tool is None:
        raise ConversionError(
            f"cannot rebuild the initramfs of {kernel.version}: update-initramfs is not installed"
        )
    # -u refuses to run without an image to update; -c creates one.
    guest.run([tool, "-u" if exists else "-c", "-k", kernel.version])
    guest.note(STEP, f"rebuilt with update-initramfs for {kernel.version}")


def _list_in_modules_file(guest: LinuxGuest, drivers: list[str]) -> None:
    # initramfs-tools puts what this file lists into every image, whatever MODULES= says
    # (MODULES=list and =dep images carry nothing else, so this is what makes them boot).
    text, added = add_modules(guest.read(MODULES_FILE) or "", drivers)
    if added:
        guest.write(MODULES_FILE, text, STEP, f"added {' '.join(added)}")


def _verify(guest: LinuxGuest, kernel: LinuxKernel, image: str, needed: list[str]) -> None:
    if not guest.g.is_file(image, followsymlinks=True):
        raise ConversionError(f"rebuilding the initramfs of {kernel.version} left no {image}")
    parsed = read_image(guest, image)
    if parsed is None:
        raise ConversionError(f"the rebuilt {image} cannot be read back to check it")
    members = parsed.effective()
    present = _modules_in(parsed)
    missing = [m for m in needed if m not in present]
    # modprobe and udev find a module through the image's index: it must list them too.
    moddir = initramfs_append.resolve(members, f"lib/modules/{kernel.version}")
    index = members.get(f"{moddir}/modules.dep")
    if index is not None and index.data is not None:
        indexed = module_names(index.data.decode(errors="surrogateescape"))
        missing += [f"{m} (in modules.dep)" for m in needed if m in present and m not in indexed]
    if missing:
        raise ConversionError(
            f"the rebuilt {image} does not contain {', '.join(missing)}: "
            "the converted guest would not find its disk",
            hint="look at the initramfs configuration of the guest (dracut.conf.d, "
            "initramfs-tools/conf.d) for options that exclude drivers",
        )
    guest.note(STEP, f"checked: {image} now carries {', '.join(needed)}", image)
