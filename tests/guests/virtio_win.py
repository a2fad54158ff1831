"""A fake virtio-win tree: Red Hat's folder layout with small stand-in files.

Every driver file says which folder it came from ("viostor w10 amd64"), so a test can tell
which release folder the converter picked. Gaps on purpose: NetKVM has no w11 folder (Windows
11 must fall back to w10), XP has only x86 viostor and NetKVM, qxldod starts at w8, and both
fwcfg and its conflicting stub qemufwcfg exist. Distractors the converter must ignore: the ISO's
flat per-arch copies (amd64/w10/...), an ARM64 folder, and installers next to the drivers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from vmshift.convert.windows.osdirs import OS_DIRS

NT6_PLUS = [d.name for d in OS_DIRS if d.version[0] >= 6]
FROM_W8 = [d.name for d in OS_DIRS if d.version[:2] >= (6, 2)]
FROM_W10 = [d.name for d in OS_DIRS if d.version[0] >= 10]

# driver folder -> (file stem, extra files, release folders)
DRIVERS: dict[str, tuple[str, tuple[str, ...], list[str]]] = {
    "viostor": ("viostor", (), ["xp", *NT6_PLUS]),
    "vioscsi": ("vioscsi", (), NT6_PLUS),
    "NetKVM": (
        "netkvm",
        ("netkvmco.dll", "netkvmp.exe"),
        ["xp", *[r for r in NT6_PLUS if r != "w11"]],
    ),
    "Balloon": ("balloon", ("blnsvr.exe",), NT6_PLUS),
    "vioserial": ("vioser", (), NT6_PLUS),
    "viorng": ("viorng", ("viorngum.dll",), NT6_PLUS),
    "pvpanic": ("pvpanic", (), FROM_W8),
    "qxldod": ("qxldod", (), FROM_W8),
    "vioinput": ("vioinput", ("viohidkmdf.sys",), FROM_W10),
    "fwcfg": ("fwcfg", (), FROM_W10),
    "qemufwcfg": ("qemufwcfg", (), FROM_W10),
}
AGENTS = ("qemu-ga-x86_64.msi", "qemu-ga-i386.msi")


def stand_in(driver: str, release: str, arch: str, name: str) -> bytes:
    """A driver file's content: which folder it is from. .sys/.dll start like PE files."""
    tag = f"{driver} {release} {arch} {name}"
    if name.endswith(".inf"):
        return (
            f'; {tag}\r\n[Version]\r\nSignature="$WINDOWS NT$"\r\n'
            f"Class=SCSIAdapter\r\nProvider=%VENDOR%\r\nCatalogFile={name[:-4]}.cat\r\n"
            "DriverVer=01/01/2024,100.0.0.0\r\n"
        ).encode()
    if name.endswith((".sys", ".dll", ".exe")):
        return b"MZ" + tag.encode()
    return tag.encode()


def build_tree(
    root: Path, *, releases: list[str] | None = None, archs: tuple[str, ...] = ("x86", "amd64")
) -> Path:
    """Write the tree under root; `releases` limits it to some release folders."""
    for driver, (stem, extra, folders) in DRIVERS.items():
        for release in folders:
            if releases is not None and release not in releases:
                continue
            for arch in archs:
                if release == "xp" and arch != "x86":
                    continue
                d = root / driver / release / arch
                d.mkdir(parents=True, exist_ok=True)
                for name in (f"{stem}.sys", f"{stem}.inf", f"{stem}.cat", *extra):
                    (d / name).write_bytes(stand_in(driver, release, arch, name))
    if releases is None:
        agents = root / "guest-agent"
        agents.mkdir(parents=True, exist_ok=True)
        for msi in AGENTS:
            (agents / msi).write_bytes(b"MSI stand-in " + msi.encode())
        flat = root / "amd64" / "w10"
        flat.mkdir(parents=True, exist_ok=True)
        (flat / "viostor.sys").write_bytes(b"MZ flat copy: must not be used")
        arm = root / "viostor" / "w11" / "ARM64"
        arm.mkdir(parents=True, exist_ok=True)
        (arm / "viostor.sys").write_bytes(b"MZ arm64: must not be used")
        (root / "virtio-win-guest-tools.exe").write_bytes(b"MZ installer")
    return root


def build_iso(tree: Path, iso: Path) -> Path:
    """An ISO of the tree, made the way virtio-win's is (Rock Ridge + Joliet)."""
    subprocess.run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "virtio-win",
            "-o",
            str(iso),
            str(tree),
        ],
        check=True,
        capture_output=True,
    )
    return iso
