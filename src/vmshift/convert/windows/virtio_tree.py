"""A virtio-win driver tree on the host: a directory, or an ISO read with bsdtar.

The layout is Red Hat's virtio-win ISO: `<driver>/<release>/<arch>/<files>` (viostor/w10/amd64/
viostor.sys) and `guest-agent/qemu-ga-x86_64.msi`. Only these two shapes are indexed; the ISO's
other folders (per-arch copies, installers, docs) are ignored.

Member names of an ISO are untrusted: a name is used only when every component is a plain file
name (letters, digits, `._+-`, spaces) - no `..`, no absolute paths, no glob characters, since
bsdtar takes its operands as patterns. Only the members a guest needs are extracted, into a
private temporary directory, and each must come out as a regular file.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vmshift.convert.windows.osdirs import ARCH_DIRS, BY_NAME
from vmshift.errors import ConversionError
from vmshift.process import CommandFailed, run

DRIVER_SUFFIXES = (".sys", ".inf", ".cat", ".dll")
AGENT_DIR = "guest-agent"
# qemu-ga installer names virtio-win has used, per guest architecture folder.
AGENT_MSIS = {
    "amd64": ("qemu-ga-x86_64.msi", "qemu-ga-x64.msi"),
    "x86": ("qemu-ga-i386.msi", "qemu-ga-x86.msi"),
}
_SAFE = re.compile(r"[A-Za-z0-9._+\- ]+")


def clean_member(name: str) -> tuple[str, ...] | None:
    """The components of a tree member's relative path, or None when it is not safe to use."""
    name = name.removeprefix("./").lstrip("/")
    parts = tuple(name.rstrip("/").split("/"))
    for part in parts:
        if part in ("", ".", "..") or not _SAFE.fullmatch(part):
            return None
    return parts


@dataclass(frozen=True)
class DriverFiles:
    """One driver's files for one release and architecture."""

    driver: str  # the folder name, as the tree spells it: viostor, NetKVM, Balloon ...
    osdir: str  # the release folder it came from
    files: tuple[str, ...]  # member paths relative to the tree root

    def named(self, suffix: str) -> list[str]:
        return [f for f in self.files if f.lower().endswith(suffix)]


@dataclass
class TreeIndex:
    """What a tree holds: driver -> (release, arch) -> member paths; and guest agents."""

    drivers: dict[str, dict[tuple[str, str], list[str]]] = field(default_factory=dict)
    agents: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, members: Iterable[str]) -> TreeIndex:
        index = cls()
        spelled: dict[str, str] = {}  # lower-case driver folder -> the tree's spelling
        for member in members:
            parts = clean_member(member)
            if parts is None:
                continue
            if len(parts) == 2 and parts[0].lower() == AGENT_DIR:
                index.agents.append("/".join(parts))
                continue
            if len(parts) != 4 or not parts[3].lower().endswith(DRIVER_SUFFIXES):
                continue
            driver, osdir, arch, _file = parts
            if osdir.lower() not in BY_NAME or arch.lower() not in ARCH_DIRS:
                continue
            name = spelled.setdefault(driver.lower(), driver)
            key = (BY_NAME[osdir.lower()].name, ARCH_DIRS[arch.lower()])
            index.drivers.setdefault(name, {}).setdefault(key, []).append("/".join(parts))
        return index

    def select(self, releases: Sequence[str], arch: str) -> list[DriverFiles]:
        """Each driver's files for the first of `releases` it has for `arch`."""
        chosen = []
        for driver in sorted(self.drivers, key=str.lower):
            by_release = self.drivers[driver]
            for release in releases:
                files = by_release.get((release, arch))
                if files:
                    chosen.append(DriverFiles(driver, release, tuple(sorted(files))))
                    break
        return chosen

    def agent(self, arch: str) -> str | None:
        """The qemu guest agent installer for `arch`, if the tree has one."""
        by_name = {m.rsplit("/", 1)[-1].lower(): m for m in self.agents}
        return next((by_name[n] for n in AGENT_MSIS.get(arch, ()) if n in by_name), None)


class VirtioTree:
    """An opened tree: its index, and local files for the members a guest needs."""

    def __init__(self, origin: Path, index: TreeIndex, extract_dir: Path | None) -> None:
        self.origin = origin
        self.index = index
        self._extract_dir = extract_dir  # None for a directory tree: members are read in place

    def fetch(self, members: Sequence[str]) -> dict[str, Path]:
        """A local regular file for each member (extracted from an ISO first)."""
        for member in members:
            if clean_member(member) is None:
                raise ConversionError(f"{self.origin}: refusing to use member {member!r}")
        if self._extract_dir is None:
            root = self.origin
        else:
            root = self._extract_dir
            if members:
                argv = ["-x", "-f", str(self.origin), "-C", str(root)]
                argv += ["--no-same-owner", "--no-same-permissions"]
                _bsdtar([*argv, *members], self.origin)
        found = {}
        for member in members:
            path = root / member
            # An ISO's symbolic link could point anywhere on the host.
            if (self._extract_dir is not None and path.is_symlink()) or not path.is_file():
                raise ConversionError(f"{self.origin}: {member} is not a regular file")
            found[member] = path
        return found


def _list_dir(root: Path) -> list[str]:
    """Members of a directory tree, to the depth the layout has (a trusted host directory:
    symbolic links are followed, as the virtio-win package uses them)."""
    members: list[str] = []

    def walk(directory: Path, prefix: str, depth: int) -> None:
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            if entry.is_dir() and depth < 3:
                walk(entry, rel + "/", depth + 1)
            elif entry.is_file():
                members.append(rel)

    walk(root, "", 0)
    return members


def _bsdtar(argv: list[str], iso: Path) -> str:
    try:
        proc = run(["bsdtar", *argv], timeout=600)
    except CommandFailed as exc:
        raise ConversionError(
            f"{iso}: cannot read the virtio-win ISO: {exc}",
            hint="check that the file is a virtio-win ISO image",
        ) from exc
    return proc.stdout.decode("utf-8", errors="replace")


@contextmanager
def open_tree(path: Path, scratch: Path | None = None) -> Iterator[VirtioTree]:
    """Open a directory or ISO tree; an ISO is listed now and extracted from by fetch()."""
    if path.is_dir():
        yield VirtioTree(path, TreeIndex.of(_list_dir(path)), None)
        return
    if not path.is_file():
        raise ConversionError(f"{path}: no such virtio-win directory or ISO")
    index = TreeIndex.of(_bsdtar(["-t", "-f", str(path)], path).splitlines())
    tmp = Path(tempfile.mkdtemp(prefix="vmshift-virtio-win-", dir=scratch))
    try:
        yield VirtioTree(path, index, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
