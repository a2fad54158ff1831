"""The architecture of a Windows executable from its PE header, named as libguestfs's
inspection names it (inspect_get_arch of a Windows root: file(1) run on cmd.exe)."""

from __future__ import annotations

import struct

HEADER_BYTES = 4096  # where the PE header of any ordinary executable starts and ends
_PE32, _PE32_PLUS = 0x10B, 0x20B
# file(1) says "PE32 executable" for the first optional-header magic and "PE32+ executable"
# for the second, whatever the machine; libguestfs maps those to i386 and x86_64. Only the
# machines for which that is true are answered here.
_ARCH = {(_PE32, 0x014C): "i386", (_PE32_PLUS, 0x8664): "x86_64"}


def pe_arch(header: bytes) -> str | None:
    """i386 or x86_64 for a PE image of that machine whose header lies within `header`;
    None for anything else (not PE, another machine, a header further in)."""
    if len(header) < 0x40 or header[:2] != b"MZ":
        return None
    (pe_offset,) = struct.unpack_from("<I", header, 0x3C)
    # "PE\0\0", the 20-byte file header (machine first), then the optional header's magic.
    if pe_offset + 26 > len(header) or header[pe_offset : pe_offset + 4] != b"PE\0\0":
        return None
    (machine,) = struct.unpack_from("<H", header, pe_offset + 4)
    (magic,) = struct.unpack_from("<H", header, pe_offset + 24)
    return _ARCH.get((magic, machine))
