"""The fast path of the initramfs step: append the virtio drivers to the image as one more archive.

Rebuilding the image with the guest's tool recompresses all of it, a minute or more under TCG.
The kernel unpacks the archives of an image one after the other, a later member replacing an
earlier one of the same name, so the drivers an image lacks can be added after it, uncompressed:
the .ko files, the module indexes of the image's modules plus the new ones (made by the guest's
own depmod, as mkinitramfs does), and the list the image's init loads at boot (conf/modules).

Taken only where every part of that can be checked; otherwise append() returns why not, having
changed nothing, and the caller (which read the image) rebuilds it with the guest's tool:
- an initramfs-tools image (its init loads conf/modules with the image's modprobe, and udev
  loads the rest by alias from the indexes); dracut images are rebuilt;
- an image the kernel will read past its end: its last part is plain cpio or a gzip, zstd or xz
  stream (their ends are in the format), with nothing unknown after it;
- the image carries modules of this kernel (its modules.dep), all of them still installed;
- the guest has depmod, and every path written resolves through the image's own symlinks (a
  directory entry over merged-/usr's lib -> usr/lib link would replace the link and break the
  image).
"""

from __future__ import annotations

import logging
import posixpath
import shlex
from dataclasses import dataclass

from vmshift.convert.linux.context import LinuxGuest
from vmshift.errors import ConversionError
from vmshift.formats.cpio import CpioEntry, directory, newc_archive, regular
from vmshift.formats.initramfs import InitramfsImage
from vmshift.formats.kmod import closure, module_name, parse_modules_dep, paths_by_name
from vmshift.symlinks import follow

log = logging.getLogger(__name__)

STEP = "initramfs"
_MODPROBES = ("sbin/modprobe", "usr/sbin/modprobe", "bin/modprobe")
# What mkinitramfs copies next to the modules before running depmod on them.
_KERNEL_LISTS = ("modules.order", "modules.builtin", "modules.builtin.modinfo")
_WRITE_CHUNK = 1 << 20  # below the appliance protocol's message limit


class NotAppendable(Exception):
    """The fast path cannot be verified for this image; the message says why."""


def append(
    guest: LinuxGuest,
    version: str,
    image: str,
    parsed: InitramfsImage,
    *,
    drivers: list[str],
    depmod: str | None,
) -> str:
    """Add drivers (and what they need) to image, read as parsed, by appending an archive;
    "" when done, else the reason it was not done (nothing changed then)."""
    try:
        plan = _plan(guest, version, parsed, drivers, depmod)
        archive = newc_archive(_entries(guest, version, parsed, plan))
    except NotAppendable as exc:
        return str(exc)
    except ConversionError as exc:  # the guest's depmod failed
        return exc.message
    # The kernel takes an archive only at a 4-byte aligned offset of the image.
    tail = b"\0" * (-parsed.size % 4) + archive
    for start in range(0, len(tail), _WRITE_CHUNK):
        guest.g.write_append(image, tail[start : start + _WRITE_CHUNK])
    guest.note(
        STEP,
        f"appended {len(plan.new_modules)} modules ({', '.join(plan.names)}) and their indexes "
        f"to the image as an archive of {len(archive) >> 10} KiB",
        image,
    )
    return ""


@dataclass(frozen=True)
class _Plan:
    moddir: str  # the image's module directory, symlinks resolved
    image_modules: set[str]  # paths below the module directory
    new_modules: set[str]
    drivers: list[str]  # what conf/modules must load
    depmod: str  # the guest's

    @property
    def names(self) -> list[str]:
        return sorted(filter(None, map(module_name, self.new_modules)))


def _plan(
    guest: LinuxGuest, version: str, image: InitramfsImage, drivers: list[str], depmod: str | None
) -> _Plan:
    blocker = image.append_blocker()
    if blocker:
        raise NotAppendable(f"an archive appended to the image would not be read: {blocker}")
    members = image.effective()
    if "conf/initramfs.conf" not in members or "init" not in members:
        raise NotAppendable("the image was not made by initramfs-tools")
    if not any(_is_file(members, p) for p in _MODPROBES):
        raise NotAppendable("the image has no modprobe")
    if depmod is None:
        raise NotAppendable("the guest has no depmod")
    moddir = resolve(members, f"lib/modules/{version}")
    if moddir is None or f"{moddir}/modules.dep" not in members:
        raise NotAppendable(f"the image carries no module index of kernel {version}")
    deps = parse_modules_dep(guest.read(f"/lib/modules/{version}/modules.dep") or "")
    prefix = moddir + "/"
    inside = {
        p.removeprefix(prefix)
        for p, e in members.items()
        if p.startswith(prefix) and e.is_file and module_name(p)
    }
    stale = sorted(p for p in inside if p not in deps)
    if stale:
        raise NotAppendable(f"the image holds modules that are no longer installed: {stale[0]}")
    by_name = paths_by_name(deps)
    wanted = [by_name[d] for d in drivers if d in by_name]
    new = closure(deps, wanted) - inside
    return _Plan(moddir, inside, new, drivers, depmod)


def _entries(
    guest: LinuxGuest, version: str, image: InitramfsImage, plan: _Plan
) -> list[CpioEntry]:
    """The appended archive's members: new modules, fresh indexes, conf/modules."""
    files = _staged_indexes(guest, version, plan)
    src = f"/lib/modules/{version}"
    for rel in sorted(plan.new_modules):
        data = guest.read_bytes(f"{src}/{rel}")
        if data is None:
            raise NotAppendable(f"cannot read {src}/{rel}")
        files[f"{plan.moddir}/{rel}"] = data
    members = image.effective()
    conf = members.get("conf/modules")
    listed = (conf.data or b"").decode(errors="surrogateescape") if conf else ""
    names = {line.split("#", 1)[0].strip() for line in listed.splitlines()}
    extra = [d for d in plan.drivers if d not in names]
    if extra:
        text = listed + ("" if not listed or listed.endswith("\n") else "\n")
        files["conf/modules"] = (text + "".join(f"{n}\n" for n in extra)).encode()
    entries: list[CpioEntry] = []
    made: set[str] = set()
    for path in sorted(files):
        target = resolve(members, path)
        if target is None:
            raise NotAppendable(f"{path} does not resolve inside the image")
        for parent in _parents(target):
            found = members.get(parent)
            if found is None and parent not in made:
                entries.append(directory(parent))
                made.add(parent)
            elif found is not None and not found.is_dir:
                raise NotAppendable(f"{parent} is not a directory in the image")
        entries.append(regular(target, files[path]))
    return entries


def _staged_indexes(guest: LinuxGuest, version: str, plan: _Plan) -> dict[str, bytes]:
    """Run the guest's depmod over a copy of the modules the image will hold; its index files."""
    g = guest.g
    stage = g.mkdtemp("/var/tmp/vmshift-initrd-XXXXXX")
    try:
        tree = f"{stage}/lib/modules/{version}"
        g.mkdir_p(tree)
        # depmod -b looks in BASE/lib/modules, or BASE/usr/lib/modules when built that way.
        g.mkdir_p(f"{stage}/usr/lib")
        g.ln_s("../../lib/modules", f"{stage}/usr/lib/modules")
        src = f"/lib/modules/{version}"
        lists = [n for n in _KERNEL_LISTS if g.is_file(f"{src}/{n}", followsymlinks=True)]
        modules = sorted(plan.image_modules | plan.new_modules)
        script = (
            f"cd {shlex.quote(src)} && cp --parents -t {shlex.quote(tree)} "
            f"{shlex.join([*lists, *modules])} && {shlex.quote(plan.depmod)} -b "
            f"{shlex.quote(stage)} {shlex.quote(version)}"
        )
        guest.run(["/bin/sh", "-c", script])
        indexes: dict[str, bytes] = {}
        for name in g.ls(tree):
            if name.startswith("modules."):
                data = guest.read_bytes(f"{tree}/{name}")
                if data is not None:
                    indexes[f"{plan.moddir}/{name}"] = data
    finally:
        g.rm_rf(stage)
    if f"{plan.moddir}/modules.dep" not in indexes:
        raise NotAppendable("depmod made no modules.dep")
    return indexes


def resolve(members: dict[str, CpioEntry], path: str) -> str | None:
    """Where path lands in the unpacked image, following the image's symlinks; None on a loop."""

    def readlink(name: str) -> str | None:
        entry = members.get(name)
        if entry is None or not entry.is_symlink:
            return None
        return (entry.data or b"").decode(errors="surrogateescape")

    return follow(path, readlink)


def _is_file(members: dict[str, CpioEntry], path: str) -> bool:
    target = resolve(members, path)
    entry = members.get(target) if target is not None else None
    return entry is not None and entry.is_file


def _parents(path: str) -> list[str]:
    parents = []
    while (path := posixpath.dirname(path)) not in ("", "/"):
        parents.append(path)
    return parents[::-1]
