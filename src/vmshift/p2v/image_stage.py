"""Copying the chosen part of a debootstrapped Debian tree into the P2V image's root: each
program with the shared libraries it loads (the tree's own ldd says which), kernel modules
with the modules they depend on (modules.dep), whole directories with a filter, and busybox
for every command nothing else provides.

Paths are relative to the tree's root (`usr/bin/ssh`); a symlink is copied as a symlink and
what it points to is copied too, absolute targets meaning the tree's root, so the image has
the tree's merged-/usr layout (bin -> usr/bin) and every link in it resolves.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from vmshift.errors import VmshiftError
from vmshift.formats.kmod import closure, parse_modules_dep
from vmshift.symlinks import MAX_HOPS, follow

ELF_MAGIC = b"\x7fELF"


class ImageError(VmshiftError):
    """The P2V boot image could not be built."""


def chroot_run(root: Path, argv: list[str]) -> str:
    """argv run inside root (as chroot(8) does); its standard output. ImageError if it fails."""
    proc = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                          check=False)  # fmt: skip
    if proc.returncode != 0:
        said = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise ImageError(f"{argv[0]} in {root} failed: {said}")
    return proc.stdout


class Stage:
    """The image's root (root), filled from tree."""

    def __init__(self, tree: Path, root: Path) -> None:
        self.tree = tree
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        for name in ("bin", "sbin", "lib", "lib64"):  # merged /usr: the same links
            link = tree / name
            if link.is_symlink() and not (root / name).is_symlink():
                (root / name).symlink_to(link.readlink())

    def canonical(self, rel: str) -> str:
        """rel with every symlink on the way followed inside the tree."""

        def readlink(path: str) -> str | None:
            here = self.tree / path
            return str(here.readlink()) if here.is_symlink() else None

        found = follow(rel, readlink)
        if found is None:
            raise ImageError(f"{rel}: too many symlinks in the Debian tree")
        return found

    def copy(self, rel: str) -> str:
        """Copy rel (through its symlinks) into the root; the canonical path of the file."""
        for _ in range(MAX_HOPS):
            parent = self.canonical(str(Path(rel).parent))
            rel = f"{parent}/{Path(rel).name}" if parent else Path(rel).name
            source, dest = self.tree / rel, self.root / rel
            if not source.is_symlink() and not source.exists():
                raise ImageError(f"{rel}: not in the Debian tree")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not source.is_symlink():
                if not dest.exists():
                    shutil.copy2(source, dest)
                return rel
            target = str(source.readlink())
            if not dest.is_symlink():
                dest.symlink_to(target)
            rel = target.lstrip("/") if target.startswith("/") else f"{parent}/{target}"
        raise ImageError(f"{rel}: too many symlinks in the Debian tree")

    def copy_tree(self, rel: str, skip: Callable[[str], bool]) -> list[str]:
        """Copy the directory rel, without what skip(path) is true for; the files copied."""
        base = self.canonical(rel)
        copied = []
        for top, dirs, files in os.walk(self.tree / base):
            here = Path(top).relative_to(self.tree).as_posix()
            dirs[:] = sorted(d for d in dirs if not skip(f"{here}/{d}"))
            for name in sorted(files):
                path = f"{here}/{name}"
                if skip(path):
                    continue
                copied.append(self.copy(path))
            for name in dirs:  # a symlink to a directory is listed as a directory
                if (self.tree / here / name).is_symlink():
                    self.copy(f"{here}/{name}")
        return copied

    def elf_files(self, rels: Iterable[str]) -> list[str]:
        out = []
        for rel in rels:
            path = self.root / rel
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as f:
                    if f.read(4) == ELF_MAGIC:
                        out.append(rel)
        return out

    def libraries(self, rels: Iterable[str]) -> int:
        """Copy the shared libraries the ELF files rels load (the tree's ldd); how many."""
        files = self.elf_files(rels)
        needed: set[str] = set()
        for chunk in range(0, len(files), 200):
            argv = ["/usr/bin/ldd", *("/" + f for f in files[chunk : chunk + 200])]
            proc = subprocess.run(["chroot", str(self.tree), *argv], capture_output=True,
                                  text=True, check=False)  # fmt: skip
            for raw in proc.stdout.splitlines():
                line = raw.strip()
                if "not found" in line:
                    raise ImageError(f"the image lacks a library: {line}")
                if " (0x" not in line:  # a file's name, or "statically linked"
                    continue
                path = line.split("=>")[-1].split(" (")[0].strip()
                if path.startswith("/"):
                    needed.add(path.lstrip("/"))
        for lib in sorted(needed):
            self.copy(lib)
        return len(needed)

    def modules(self, version: str, patterns: Iterable[str]) -> int:
        """Copy the kernel modules matching patterns (paths below kernel/) and those they need;
        depmod is run by the caller once the root has kmod. How many."""
        base = self.canonical(f"lib/modules/{version}")
        deps = parse_modules_dep((self.tree / base / "modules.dep").read_text())
        wanted = [m for m in deps if any(fnmatch.fnmatch(m, f"kernel/{p}") for p in patterns)]
        chosen = closure(deps, wanted)
        for module in chosen:
            self.copy(f"{base}/{module}")
        for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            if (self.tree / base / name).exists():
                self.copy(f"{base}/{name}")
        return len(chosen)

    def busybox_links(self, busybox: str, skip: Iterable[str]) -> int:
        """A link to busybox for each of its commands the root has no program for; how many."""
        applets = chroot_run(self.tree, [f"/{busybox}", "--list"]).split()
        made = 0
        for name in applets:
            if name in skip or "/" in name:
                continue
            if any((self.root / d / name).exists() for d in ("usr/bin", "usr/sbin")):
                continue
            (self.root / "usr/bin" / name).symlink_to("busybox")
            made += 1
        return made


def size_of(root: Path) -> int:
    """Bytes in the regular files below root."""
    total = 0
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = Path(top) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total
