"""Packing the P2V image: a directory as one newc cpio archive (the kernel's initramfs
format; owned by root, xz-compressed with the CRC32 check the kernel's decoder takes), and
the bootable hybrid ISO GRUB makes of a kernel and an initrd (BIOS from CD or USB through
its El Torito image and MBR, UEFI through its EFI system partition image).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from vmshift.errors import EnvironmentProblem
from vmshift.p2v.image_files import grub_cfg
from vmshift.p2v.image_stage import ImageError

GRUB_PLATFORMS = {"i386-pc": "grub-pc-bin", "x86_64-efi": "grub-efi-amd64-bin"}
GRUB_DIR = Path("/usr/lib/grub")
# What the ISO's GRUB loads from its menu; grub-mkrescue adds what its own images need.
GRUB_MODULES = (
    "linux normal iso9660 search search_fs_uuid configfile echo test serial terminal "
    "all_video part_msdos part_gpt fat"
)
VOLUME_ID = "VMSHIFT_P2V"
PACK_TOOLS = {"cpio": "cpio", "xz": "xz-utils"}
ISO_TOOLS = {"grub-mkrescue": "grub-common", "xorriso": "xorriso", "mformat": "mtools"}


def require_tools(tools: dict[str, str], grub: bool = False) -> None:
    """EnvironmentProblem naming the Debian packages of the tools (and GRUB platforms) missing."""
    missing = [pkg for tool, pkg in tools.items() if shutil.which(tool) is None]
    if grub:
        missing += [pkg for plat, pkg in GRUB_PLATFORMS.items() if not (GRUB_DIR / plat).is_dir()]
    if missing:
        raise EnvironmentProblem(
            f"building the P2V image needs {', '.join(sorted(set(missing)))}",
            hint=f"apt-get install {' '.join(sorted(set(missing)))}",
        )


def _names(root: Path) -> Iterator[str]:
    """Every path below root, relative, each directory before what it holds, sorted."""
    for top, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(top).relative_to(root)
        if here != Path():
            yield here.as_posix()
        for name in sorted(files):
            yield (here / name).as_posix()
        for name in dirs:
            if (Path(top) / name).is_symlink():  # os.walk does not enter these
                yield (here / name).as_posix()


def pack(root: Path, out: Path, compress: bool = True) -> int:
    """root as a cpio archive at out (xz-compressed unless compress is False); its size."""
    require_tools(PACK_TOOLS)
    names = "".join(f"{n}\n" for n in _names(root)).encode()
    cpio_argv = ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"]
    with out.open("wb") as sink:
        if not compress:
            proc = subprocess.run(cpio_argv, cwd=root, input=names, stdout=sink,
                                  stderr=subprocess.PIPE, check=False)  # fmt: skip
            _check(proc.returncode, proc.stderr, "cpio")
            return out.stat().st_size
        xz = subprocess.Popen(
            ["xz", "--check=crc32", "-6", "--threads=2", "-c"], stdin=subprocess.PIPE,
            stdout=sink, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert xz.stdin is not None and xz.stderr is not None
        try:
            proc = subprocess.run(cpio_argv, cwd=root, input=names, stdout=xz.stdin,
                                  stderr=subprocess.PIPE, check=False)  # fmt: skip
        finally:
            xz.stdin.close()
            xz.wait()
        _check(proc.returncode, proc.stderr, "cpio")
        _check(xz.returncode, xz.stderr.read(), "xz")
    return out.stat().st_size


def _check(rc: int, stderr: bytes, what: str) -> None:
    if rc != 0:
        said = (stderr.decode(errors="replace").strip().splitlines() or [f"exit {rc}"])[-1]
        raise ImageError(f"{what} failed making the image: {said}")


def concatenate(parts: Sequence[Path], out: Path) -> int:
    """The initrd: the archives one after the other (the kernel unpacks each in turn)."""
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, sink, 1 << 20)
            pad = (4 - sink.tell() % 4) % 4  # zeros between archives are skipped
            sink.write(b"\0" * pad)
    return out.stat().st_size


def make_iso(kernel: Path, initrd: Path, words: Sequence[str], out: Path, scratch: Path) -> int:
    """The hybrid ISO booting kernel and initrd with words on the command line; its size."""
    require_tools(ISO_TOOLS, grub=True)
    tree = scratch / "iso"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "boot/grub").mkdir(parents=True)
    shutil.copyfile(kernel, tree / "boot/vmlinuz")
    shutil.copyfile(initrd, tree / "boot/initrd.img")
    (tree / "boot/grub/grub.cfg").write_text(grub_cfg(words))
    partial = out.with_name(f".{out.name}.partial")
    argv = [
        "grub-mkrescue", "-o", str(partial), "--compress=xz", "--fonts=", "--locales=",
        "--themes=", f"--install-modules={GRUB_MODULES}", str(tree), "--",
        "-volid", VOLUME_ID,
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, check=False)
        _check(proc.returncode, proc.stderr, "grub-mkrescue")
        partial.rename(out)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(tree, ignore_errors=True)
    return out.stat().st_size
