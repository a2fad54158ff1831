"""Conversion profiles: named sets of output options (docs/profiles.md).

Two spellings of the same thing: the seed virt-v2v's XML configuration (`/etc/virt-v2v.conf`,
root `<virt-v2v>`) and vmshift's TOML (`profiles.toml`). Pure: bytes in, frozen dataclasses
out. Every problem is a ProfileError whose message starts with `FILE:LINE:`, because a profile
file is edited by hand and the line is what the user needs to find.

The XML file also holds what the seed used for other things (`<app>`, `<capability>`,
`<path-root>` ...): those are skipped. Our own TOML is strict: an unknown key is a typo.
"""

from __future__ import annotations

from pathlib import Path

from vmshift.formats.profiles.common import (
    ALLOCATIONS,
    DATA_DOMAIN_TYPES,
    FORMATS,
    MAX_BYTES,
    METHODS,
    OUT_TYPES,
    NetworkRule,
    Profile,
    ProfileError,
    ProfileFile,
)
from vmshift.formats.profiles.seed_xml import parse_xml
from vmshift.formats.profiles.toml_file import parse_toml

__all__ = [
    "ALLOCATIONS",
    "DATA_DOMAIN_TYPES",
    "FORMATS",
    "MAX_BYTES",
    "METHODS",
    "OUT_TYPES",
    "NetworkRule",
    "Profile",
    "ProfileError",
    "ProfileFile",
    "parse_profile_file",
    "parse_toml",
    "parse_xml",
]


def parse_profile_file(data: bytes, path: Path) -> ProfileFile:
    """XML or TOML: by the file name's extension, else by the first non-blank character."""
    if len(data) > MAX_BYTES:
        raise ProfileError(path, None, f"{len(data)} bytes is far too large for a profile file")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return parse_toml(data, path)
    if suffix == ".xml" or data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        return parse_xml(data, path)
    return parse_toml(data, path)
