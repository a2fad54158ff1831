"""Checking an OVA's manifests: every `.mf` in the package (ovftool writes one beside the OVF,
some exporters one per disk) is read, and every checksum in them is verified against the file
it names, streaming the data once per file whatever the number of lines naming it.

What virt-v2v reads past is a warning, not a refusal: a line that is not a checksum vmshift
reads, and a file listed but absent from the OVA (VMware lists disk1.vmdk where the OVA holds
its snapshot files disk1.vmdk.00000000N, RHBZ#1570407). A checksum that does not match refuses
the OVA.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field

from vmshift.errors import SourceError
from vmshift.formats.ovf_manifest import MAX_MANIFEST_BYTES, ManifestEntry, parse_manifest
from vmshift.sources.ova_package import Package, resolve

# Unreadable lines warned about one by one per manifest; the rest are counted.
_MAX_LINE_WARNINGS = 5
_MAX_LINE_SHOWN = 120


@dataclass
class Checked:
    """What the manifests of a package vouch for."""

    manifests: tuple[str, ...]  # their names; empty when the package has none
    listed: set[str] = field(default_factory=set)  # files present, every checksum matching
    absent: set[str] = field(default_factory=set)  # files listed but not in the package
    warnings: list[str] = field(default_factory=list)


def verify_manifests(pkg: Package) -> Checked:
    """Verify every checksum of every manifest of pkg; raise SourceError on a mismatch."""
    names = sorted(n for n in pkg.names() if n.lower().endswith(".mf"))
    checked = Checked(tuple(names))
    wanted: dict[str, list[tuple[str, ManifestEntry]]] = {}
    for mf_name in names:
        for name, entry in _entries(pkg, mf_name, checked.warnings):
            wanted.setdefault(name, []).append((mf_name, entry))
    for name, group in wanted.items():
        target = pkg.get(name)
        if target is None:
            lists = ", ".join(dict.fromkeys(mf for mf, _ in group))
            checked.warnings.append(
                f"{pkg.label}: the manifest {lists} lists {name}, which is not in the OVA (ignored)"
            )
            checked.absent.add(name)
            continue
        hashes = {e.algorithm: hashlib.new(e.algorithm) for _, e in group}
        for data in pkg.chunks(target):
            for h in hashes.values():
                h.update(data)
        for mf_name, entry in group:
            actual = hashes[entry.algorithm].hexdigest()
            if actual != entry.digest:
                raise SourceError(
                    f"{pkg.label}: {name}: {entry.algorithm.upper()} checksum does not match the "
                    f"manifest {mf_name} (manifest {entry.digest}, file {actual})",
                    hint="the OVA is damaged or incomplete; export or download it again",
                )
        checked.listed.add(name)
    return checked


def _entries(pkg: Package, mf_name: str, warnings: list[str]) -> list[tuple[str, ManifestEntry]]:
    """The manifest's checksums with the names they apply to in the package; a warning for
    each line that is not one."""
    member = pkg.need(mf_name, "the manifest")
    if member.size > MAX_MANIFEST_BYTES:
        raise SourceError(f"{pkg.label}: {mf_name} is too large for a manifest")
    label = f"{pkg.label}: {mf_name}"
    manifest = parse_manifest(pkg.read(member, MAX_MANIFEST_BYTES), path=label)
    for number, line in manifest.unreadable[:_MAX_LINE_WARNINGS]:
        shown = line if len(line) <= _MAX_LINE_SHOWN else line[:_MAX_LINE_SHOWN] + "..."
        warnings.append(
            f"{label}: line {number} is not a checksum vmshift can read (ignored): {shown!r}"
        )
    if (more := len(manifest.unreadable) - _MAX_LINE_WARNINGS) > 0:
        warnings.append(f"{label}: {more} more lines are not checksums vmshift can read (ignored)")
    base = posixpath.dirname(mf_name)
    return [
        (resolve(pkg, base, entry.filename, f"the manifest {mf_name}"), entry)
        for entry in manifest.entries
    ]
