"""OVF manifests (.mf): one `ALG(file)= hex` line per file of the package.

ovftool writes `SHA256(name)= hex` (SHA1 in older versions); other exporters write
`SHA1 (name) = hex`; some packages carry one .mf per disk. A line that is not such a checksum
(an MD5 line, a comment, garbage) is handed back as unreadable rather than refused, as virt-v2v
does: the source warns about it and still verifies every line it could read. A checksum whose
digest has the wrong length for its algorithm can never match, so it is refused.

Pure: bytes in, frozen dataclasses out; the ova source checks the digests against the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmshift.formats.ovf_model import OvfError

MAX_MANIFEST_BYTES = 1 << 20

_MF_LINE = re.compile(
    r"(?P<alg>SHA1|SHA256|SHA512)\s*\((?P<name>.+)\)\s*=\s*(?P<digest>[0-9A-Fa-f]+)", re.IGNORECASE
)
_DIGEST_HEX = {"sha1": 40, "sha256": 64, "sha512": 128}


@dataclass(frozen=True)
class ManifestEntry:
    algorithm: str  # hashlib name: sha1, sha256, sha512
    filename: str  # as written, relative to the manifest
    digest: str  # lower-case hex


@dataclass(frozen=True)
class Manifest:
    entries: tuple[ManifestEntry, ...]
    # (line number, text) of each non-blank line that is not a checksum vmshift reads.
    unreadable: tuple[tuple[int, str], ...] = ()


def parse_manifest(data: bytes, *, path: str) -> Manifest:
    """Parse a .mf: `SHA256(name)= hex` lines (ovftool), `SHA1 (name) = hex` (others)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise OvfError(path, f"{len(data)} bytes is far too large for a manifest")
    entries: list[ManifestEntry] = []
    unreadable: list[tuple[int, str]] = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            unreadable.append((number, raw.decode("utf-8", errors="replace").strip()))
            continue
        if not line:
            continue
        match = _MF_LINE.fullmatch(line)
        if match is None:
            unreadable.append((number, line))
            continue
        alg = match.group("alg").lower()
        digest = match.group("digest").lower()
        if len(digest) != _DIGEST_HEX[alg]:
            raise OvfError(
                path,
                f"line {number}: a {alg.upper()} digest has {_DIGEST_HEX[alg]} hex digits, "
                f"not {len(digest)}",
            )
        entries.append(ManifestEntry(alg, match.group("name").strip(), digest))
    return Manifest(tuple(entries), tuple(unreadable))
