"""`vmshift p2v-image`: the P2V boot medium, a hybrid ISO (BIOS and UEFI, CD or USB stick)
and the same kernel and initrd for PXE, with `vmshift-p2v` preinstalled.

    build_image(ImageRequest(...), progress) -> ImageResult

The root filesystem is the initramfs itself, two xz-compressed cpio archives one after the
other (the kernel unpacks both into its RAM root):

- the system layer (image_system.py): Debian's kernel, the programs the client runs and
  Python with the console UI's packages; slow to make (debootstrap), so kept in the cache
  directory when one is given and made again only when its recipe changes;
- the client layer, made on every build in seconds: this vmshift package, /init and its
  helpers (image_files.py), /etc, and the injected SSH identity.

So a new client, another command line or another key (a preseeded USB stick for unattended
runs) is a remaster of seconds. Building the system layer needs root (debootstrap, chroot);
the work directory goes when the build ends, however it ends.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import vmshift
from vmshift.errors import EnvironmentProblem, UsageError
from vmshift.p2v.image_files import (
    CLIENT,
    ETC,
    IDENTITY,
    UDHCPC,
    UDHCPC_SCRIPT,
    init_script,
    power_script,
)
from vmshift.p2v.image_pack import concatenate, make_iso, pack
from vmshift.p2v.image_stage import ImageError
from vmshift.p2v.image_system import (
    SITE,
    Progress,
    SystemLayer,
    system_key,
    system_layer,
    unmount_under,
)
from vmshift.p2v.settings import cmdline_words
from vmshift.workdir import make_workdir

__all__ = ["ImageError", "ImageRequest", "ImageResult", "build_image"]


@dataclass(frozen=True)
class ImageRequest:
    output: Path | None  # the ISO
    cmdline: str = ""  # words added to the kernel command line (ISO and PXE alike)
    identity: Path | None = None  # a private key put at IDENTITY
    kernel_initrd: Path | None = None  # a directory for vmlinuz, initrd.img and cmdline
    workdir: Path = Path("/var/tmp")  # where the work directory is made
    cache: Path | None = None  # where the system layer and downloaded packages are kept
    mirror: str = "http://deb.debian.org/debian"
    is_root: bool = field(default_factory=lambda: os.geteuid() == 0)


@dataclass(frozen=True)
class ImageResult:
    iso: Path | None
    iso_bytes: int
    kernel_bytes: int
    initrd_bytes: int
    words: tuple[str, ...]  # the kernel command line's words added
    system: SystemLayer
    seconds: float


def _check(request: ImageRequest) -> list[str]:
    if request.output is None and request.kernel_initrd is None:
        raise UsageError("p2v-image: nothing to write: give -o FILE.iso and/or --kernel-initrd DIR")
    if request.output is not None and not request.output.parent.is_dir():
        raise UsageError(f"-o {request.output}: {request.output.parent} is not a directory")
    if request.identity is not None and not request.identity.is_file():
        raise UsageError(f"--inject-ssh-identity {request.identity}: no such file")
    try:
        words = cmdline_words(request.cmdline)
    except ValueError as exc:
        raise UsageError(f"--cmdline: {exc}") from None
    if request.identity is not None and not any(w.startswith("p2v.identity=") for w in words):
        words.append(f"p2v.identity=file://{IDENTITY}")
    return words


def build_image(request: ImageRequest, progress: Progress) -> ImageResult:
    started = time.monotonic()
    words = _check(request)
    request.workdir.mkdir(parents=True, exist_ok=True)
    workdir = make_workdir(request.workdir, prefix="vmshift-p2v-image-")
    try:
        system = _system(request, workdir, progress)
        progress("client layer: vmshift " + vmshift.__version__ + ", /init, settings"
                 + (", SSH identity" if request.identity else ""))  # fmt: skip
        client = workdir / "client"
        client_layer(client, request.identity)
        archive = workdir / "client.cpio.xz"
        pack(client, archive)
        initrd = workdir / "initrd.img"
        initrd_bytes = concatenate([system.archive, archive], initrd)
        iso_bytes = 0
        if request.output is not None:
            progress(f"ISO: {request.output} (GRUB, BIOS and UEFI)")
            iso_bytes = make_iso(system.kernel, initrd, words, request.output, workdir)
        if request.kernel_initrd is not None:
            _pxe_files(request.kernel_initrd, system.kernel, initrd, words, progress)
        return ImageResult(
            iso=request.output, iso_bytes=iso_bytes, kernel_bytes=system.kernel.stat().st_size,
            initrd_bytes=initrd_bytes, words=tuple(words), system=system,
            seconds=time.monotonic() - started,
        )  # fmt: skip
    finally:
        _remove(workdir)


def _system(request: ImageRequest, workdir: Path, progress: Progress) -> SystemLayer:
    if request.cache is not None:
        request.cache.mkdir(parents=True, exist_ok=True)
    if not request.is_root:
        # Only a cached layer can be used without root.
        key = system_key(request.mirror)
        if request.cache is None or not (request.cache / f"p2v-system-{key}").is_dir():
            raise EnvironmentProblem(
                "building the P2V image's system layer needs root (debootstrap, chroot)",
                hint="run it as root; with --cache-dir, later builds reuse the layer",
            )
    return system_layer(request.cache, workdir, request.mirror, progress)


def client_layer(directory: Path, identity: Path | None) -> None:
    """vmshift, /init and what goes with it, below directory (paths under usr/ only: bin,
    sbin and lib are symlinks in the system layer, which a directory here would replace)."""
    files = {
        "init": (init_script(), 0o755),
        UDHCPC_SCRIPT.lstrip("/"): (UDHCPC, 0o755),
        "usr/sbin/poweroff": (power_script("poweroff"), 0o755),
        "usr/sbin/reboot": (power_script("reboot"), 0o755),
        "usr/bin/vmshift-p2v": (CLIENT, 0o755),
        **{path: (text, 0o644) for path, text in ETC.items()},
    }
    for rel, (text, mode) in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    package = Path(vmshift.__file__).parent
    shutil.copytree(package, directory / SITE / "vmshift",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    if identity is not None:
        key = directory / IDENTITY.lstrip("/")
        key.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(identity, key)
        key.chmod(0o600)
    for top, dirs, _files in os.walk(directory):
        for name in dirs:
            (Path(top) / name).chmod(0o755)


def _pxe_files(
    where: Path, kernel: Path, initrd: Path, words: Sequence[str], progress: Progress
) -> None:
    progress(f"PXE: {where}/vmlinuz, initrd.img and cmdline")
    where.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel, where / "vmlinuz")
    shutil.copyfile(initrd, where / "initrd.img")
    (where / "cmdline").write_text(" ".join(_kernel_quote(w) for w in words) + "\n")


def _kernel_quote(word: str) -> str:
    """A word as the kernel's command line has it: a value with spaces in double quotes."""
    if " " not in word:
        return word
    name, sep, value = word.partition("=")
    return f'{name}{sep}"{value}"' if sep else f'"{word}"'


def _remove(workdir: Path) -> None:
    unmount_under(workdir)
    if not _still_mounted(workdir):  # never walk into a /proc or /sys left mounted
        shutil.rmtree(workdir, ignore_errors=True)


def _still_mounted(path: Path) -> bool:
    root = str(path.resolve())
    try:
        table = Path("/proc/self/mounts").read_text()
    except OSError:
        return False
    return any(line.split()[1].startswith(root + "/") for line in table.splitlines())
