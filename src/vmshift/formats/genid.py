"""VM generation id: the 128-bit value a hypervisor shows the guest so that Windows notices
when it has been copied or restored (Active Directory domain controllers depend on it).

Each hypervisor stores the same 16 guest-visible bytes differently:
- VMware: `vm.genid` and `vm.genidX`, the low and high 64-bit halves as signed decimals;
- libvirt `<genid>` and qemu `-device vmgenid,guid=`: a UUID-shaped string that qemu byte-swaps
  (first three fields) before writing it into guest memory.

vmshift carries the libvirt form. For the VMware halves that is the form virt-v2v writes
(its docs/vm-generation-id-across-hypervisors.txt): the guest then reads the same low and high
values it read under VMware.
"""

from __future__ import annotations

import re

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MASK = (1 << 64) - 1


def genid_from_vmware(low: int, high: int) -> str:
    """The libvirt <genid> for VMware's vm.genid (low) and vm.genidX (high) values."""
    digits = f"{low & _MASK:016x}{high & _MASK:016x}"

    def swapped(start: int, length: int) -> str:
        # The bytes of digits[start:start+length] in reverse order.
        part = digits[start : start + length]
        return "".join(part[i : i + 2] for i in range(length - 2, -2, -2))

    return "-".join(
        (
            digits[8:16],
            digits[4:8],
            digits[0:4],
            swapped(28, 4),
            swapped(16, 12),
        )
    )


def normalise_genid(text: str) -> str | None:
    """A genid as libvirt writes it (lower case, dashed), or None when text is not one."""
    value = text.strip().lower()
    if re.fullmatch(r"[0-9a-f]{32}", value):
        value = f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return value if _UUID.match(value) else None
