"""The kernel inside an x86 bzImage, and whether QEMU can boot it uncompressed (PVH).

A bzImage is real-mode setup code followed by the compressed kernel (its payload: the boot
protocol header gives its offset and length since 2.08). Decompressed, the payload is the ELF
vmlinux; an ELF note of type XEN_ELFNOTE_PHYS32_ENTRY (18, owner "Xen") marks the 32-bit PVH
entry point, which QEMU's -kernel jumps to directly, with no BIOS loading and no decompression.
"""

from __future__ import annotations

import struct

from vmshift.formats.initramfs import InitramfsError, decompress

_PHYS32_ENTRY = 18
_PT_NOTE = 4


class KernelImageError(InitramfsError):
    """A kernel image could not be read."""


def payload(image: bytes) -> bytes:
    """The compressed kernel a bzImage carries."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        raise KernelImageError("not a bzImage (no HdrS boot header)")
    version = struct.unpack_from("<H", image, 0x206)[0]
    if version < 0x0208:
        raise KernelImageError(f"boot protocol {version:#06x} has no payload field")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if start + length > len(image):
        raise KernelImageError("the payload runs past the end of the image")
    return image[start : start + length]


def vmlinux(image: bytes) -> bytes:
    """The uncompressed ELF kernel of a bzImage."""
    found = decompress(payload(image))
    if found is None:
        raise KernelImageError("the payload's compression is not known")
    kernel = found[1]
    if not kernel.startswith(b"\x7fELF\x02\x01"):
        raise KernelImageError("the payload is not a 64-bit little-endian ELF kernel")
    return kernel


def has_pvh_entry(elf: bytes) -> bool:
    """Whether a 64-bit ELF kernel has the PVH entry note QEMU boots it by."""
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 56 > len(elf):
            return False
        p_type = struct.unpack_from("<I", elf, base)[0]
        if p_type != _PT_NOTE:
            continue
        offset, _vaddr, _paddr, size = struct.unpack_from("<QQQQ", elf, base + 8)
        if _note_present(elf[offset : offset + size], b"Xen", _PHYS32_ENTRY):
            return True
    return False


def _note_present(notes: bytes, owner: bytes, kind: int) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
        if name == owner and ntype == kind:
            return True
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return False
