"""Which folder of a virtio-win tree holds the drivers for a Windows guest.

virtio-win names one folder per Windows release (`viostor/2k19/amd64/`), while a guest says
what it is by version number, build and client/server kind: Windows 10 and 11, and Server 2016
to 2025, all call themselves 10.0 and differ only by build number. A guest takes the folder of
its own release when the tree has it, else the nearest older release of the same kind, else the
nearest older release of the other kind (client and server releases of one era share a kernel,
so 2k22 drivers work on Windows 11). Drivers never go to a release older than NT 6 from a newer
one: the XP and 2003 drivers are built for another driver model.
"""

from __future__ import annotations

from dataclasses import dataclass

CLIENT = "client"
SERVER = "server"
ANY = "any"  # NT 5: XP x64 is a 2003 kernel, so client and server share folders


@dataclass(frozen=True)
class OsDir:
    name: str  # the folder name as virtio-win spells it
    kind: str  # client, server or any
    version: tuple[int, int, int]  # major, minor, first build of the release


OS_DIRS: tuple[OsDir, ...] = (
    OsDir("xp", ANY, (5, 1, 0)),
    OsDir("2k3", ANY, (5, 2, 0)),
    OsDir("vista", CLIENT, (6, 0, 0)),
    OsDir("2k8", SERVER, (6, 0, 0)),
    OsDir("w7", CLIENT, (6, 1, 0)),
    OsDir("2k8R2", SERVER, (6, 1, 0)),
    OsDir("w8", CLIENT, (6, 2, 0)),
    OsDir("2k12", SERVER, (6, 2, 0)),
    OsDir("w8.1", CLIENT, (6, 3, 0)),
    OsDir("2k12R2", SERVER, (6, 3, 0)),
    OsDir("w10", CLIENT, (10, 0, 10240)),
    OsDir("2k16", SERVER, (10, 0, 14393)),
    OsDir("2k19", SERVER, (10, 0, 17763)),
    OsDir("2k22", SERVER, (10, 0, 20348)),
    OsDir("w11", CLIENT, (10, 0, 22000)),
    OsDir("2k25", SERVER, (10, 0, 26100)),
)
BY_NAME = {d.name.lower(): d for d in OS_DIRS}

# virtio-win's architecture folders; "i386" is what some older trees call x86.
ARCH_DIRS = {"x86": "x86", "i386": "x86", "amd64": "amd64"}
GUEST_ARCH = {"i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86", "x86_64": "amd64"}


def guest_kind(product_variant: str, product_name: str) -> str:
    """client or server, from inspection's variant (InstallationType) or the product name."""
    variant = product_variant.lower()
    if variant == "client":
        return CLIENT
    if variant.startswith("server"):  # "Server", "Server Core"
        return SERVER
    return SERVER if "server" in product_name.lower() else CLIENT


def parse_build(build: str) -> int:
    """CurrentBuildNumber as a number; 0 when the guest does not say (or says something odd)."""
    head = build.strip().split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def arch_dir(arch: str) -> str | None:
    """The virtio-win architecture folder for inspection's arch, or None if it has none."""
    return GUEST_ARCH.get(arch)


def candidates(major: int, minor: int, build: int, kind: str) -> list[str]:
    """Folder names to try for a guest, best first."""
    if build == 0:
        # Unknown build: the first release of that version number.
        build = min((d.version[2] for d in OS_DIRS if d.version[:2] == (major, minor)), default=0)
    guest = (major, minor, build)
    older = [d for d in OS_DIRS if d.version <= guest and (d.version[0] >= 6) == (major >= 6)]
    older.sort(key=lambda d: d.version, reverse=True)
    same = [d.name for d in older if d.kind in (kind, ANY)]
    other = [d.name for d in older if d.kind not in (kind, ANY)]
    return same + other


def describe(major: int, minor: int, build: int, kind: str, arch: str) -> str:
    """How messages name the guest's release: "w10/amd64 (10.0 build 19045, client)"."""
    names = candidates(major, minor, build, kind)
    best = names[0] if names else f"{major}.{minor}"
    return f"{best}/{arch_dir(arch) or arch} ({major}.{minor} build {build or '?'}, {kind})"
