"""Start the libguestfs appliance sooner by booting its kernel uncompressed (PVH).

Under TCG about a quarter of the appliance's start (3 of 11-12 s on the machine in
docs/benchmarks.md) is SeaBIOS loading the compressed kernel and the kernel decompressing itself
(xz on Debian). QEMU boots an uncompressed ELF vmlinux directly at its PVH entry point when the
kernel has one (CONFIG_PVH, as Debian's has). So once libguestfs has built its supermin
appliance (kernel, initrd and root in CACHEDIR/.guestfs-UID/appliance.d), vmshift keeps an
uncompressed copy of that kernel beside it and hands libguestfs a fixed appliance (README.fixed)
made of that copy and links to the same initrd and root. The copy is named by the kernel file's
identity, so a rebuilt appliance gets a new one. Anything missing or not PVH-capable: None, and
libguestfs starts as usual (which also builds its appliance for the next run).
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
from pathlib import Path

from vmshift.formats.bzimage import has_pvh_entry, vmlinux
from vmshift.formats.initramfs import InitramfsError

log = logging.getLogger(__name__)

PREFIX = "vmshift-pvh-"
_PARTS = ("kernel", "initrd", "root")


def pvh_appliance(cachedir: str, uid: int) -> Path | None:
    """A fixed appliance booting libguestfs's own kernel uncompressed, or None."""
    if platform.machine() != "x86_64":
        return None
    base = Path(cachedir) / f".guestfs-{uid}"
    built = base / "appliance.d"
    try:
        if not all((built / p).is_file() for p in _PARTS):
            return None
        st = (built / "kernel").stat()
        final = base / f"{PREFIX}{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"
        if (final / "README.fixed").is_file():
            return final
        _make(built, final)
        _remove_others(base, final.name)
    except (OSError, InitramfsError) as exc:
        log.info("the appliance boots its compressed kernel: %s", exc)
        return None
    return final if (final / "README.fixed").is_file() else None


def _make(built: Path, final: Path) -> None:
    kernel = vmlinux((built / "kernel").read_bytes())
    if not has_pvh_entry(kernel):
        raise OSError("its kernel has no PVH entry point")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-" + PREFIX, dir=final.parent))
    try:
        (tmp / "kernel").write_bytes(kernel)
        for part in ("initrd", "root"):
            (tmp / part).symlink_to(built / part)
        (tmp / "README.fixed").write_text(
            "A fixed libguestfs appliance made by vmshift: the supermin appliance's kernel, "
            "uncompressed so that QEMU boots it by PVH.\n"
        )
        try:
            tmp.rename(final)
        except OSError:  # another run made it first
            if not (final / "README.fixed").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_others(base: Path, keep: str) -> None:
    """Copies made for kernels libguestfs has since replaced (60+ MB each)."""
    for path in base.glob(PREFIX + "*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


__all__ = ["pvh_appliance"]
