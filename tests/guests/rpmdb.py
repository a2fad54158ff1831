"""A real rpm database inside a staged guest tree, holding empty packages.

libguestfs lists rpm applications by running the appliance's librpm chrooted into the guest, so
three things must hold (learned by trying, libguestfs 1.48 with Debian's librpm 4.18):
- the database must be in a backend that librpm reads and the host's rpm can write; Debian's rpm
  writes only sqlite, which is what RHEL 9, Fedora 33+ and current SUSE use anyway;
- librpm reads its configuration from the guest: without /usr/lib/rpm/rpmrc it loads no macros
  at all, and without a %_dbpath macro it finds no database, so the guest needs both files;
- the packages must be real rpm headers: they are built empty with rpmbuild and recorded with
  `rpm --justdb`, which writes the database and nothing else.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RpmPackage:
    name: str
    version: str
    release: str
    arch: str = "x86_64"
    epoch: int | None = None
    summary: str = ""


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def _spec(pkg: RpmPackage) -> str:
    epoch = f"Epoch: {pkg.epoch}\n" if pkg.epoch is not None else ""
    summary = pkg.summary or f"The {pkg.name} package"
    return (
        f"Name: {pkg.name}\nVersion: {pkg.version}\nRelease: {pkg.release}\n{epoch}"
        f"Summary: {summary}\nLicense: GPL-2.0-or-later\nURL: https://example.invalid/{pkg.name}\n"
        f"BuildArch: {pkg.arch}\n\n%description\n{summary} (an empty test package).\n\n%files\n"
    )


def build_packages(packages: Sequence[RpmPackage], workdir: Path) -> list[Path]:
    """Build one empty .rpm per package, all in one rpmbuild run, and return their paths."""
    workdir.mkdir(parents=True, exist_ok=True)
    specs = []
    for i, pkg in enumerate(packages):
        spec = workdir / f"{i:02d}-{pkg.name}.spec"
        spec.write_text(_spec(pkg))
        specs.append(str(spec))
    _run(
        [
            "rpmbuild",
            "-bb",
            "--quiet",
            "--define",
            f"_topdir {workdir / 'top'}",
            # Empty packages need no build-id links, and the host may lack debugedit.
            "--define",
            "_build_id_links none",
            "--define",
            "debug_package %{nil}",
            *specs,
        ]
    )
    rpms = sorted((workdir / "top" / "RPMS").glob("*/*.rpm"))
    if len(rpms) != len(packages):
        raise RuntimeError(f"rpmbuild made {len(rpms)} packages, expected {len(packages)}")
    return rpms


def write_rpmdb(
    root: Path, packages: Sequence[RpmPackage], workdir: Path, dbpath: str = "/var/lib/rpm"
) -> None:
    """Record `packages` as installed in the guest tree at `root`, and give the guest the rpm
    configuration librpm needs to find them again."""
    rpms = build_packages(packages, workdir)
    _run(
        [
            "rpm",
            "--root",
            str(root),
            "--dbpath",
            dbpath,
            "--define",
            "_db_backend sqlite",
            "-i",
            "--justdb",
            "--nodeps",
            "--noscripts",
            "--notriggers",
            "--ignorearch",
            "--ignoreos",
            "--nosignature",
            "--nodigest",
            *map(str, rpms),
        ]
    )
    rpmlib = root / "usr/lib/rpm"
    rpmlib.mkdir(parents=True, exist_ok=True)
    (rpmlib / "rpmrc").write_text(
        "# Minimal rpmrc: librpm refuses to load any macros when this file is missing.\n"
        "buildarchtranslate: x86_64: x86_64\n"
    )
    (rpmlib / "macros").write_text(
        f"%_dbpath\t\t{dbpath}\n%_db_backend\t\tsqlite\n%_var\t\t\t/var\n%_usr\t\t\t/usr\n"
    )
