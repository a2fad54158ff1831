"""Parsing of virt-v2v style option values: network mappings, sizes."""

from __future__ import annotations

import re

from vmshift.errors import UsageError
from vmshift.targets.base import NetworkMap

MAC_RE = re.compile(r"^([0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}):(network|bridge):(.+)$")


def network_map(
    networks: list[str] | None, bridges: list[str] | None, macs: list[str] | None
) -> NetworkMap:
    """Build the mapping from repeated --network/--bridge/--mac values.

    `--network in:out` maps one source network; `--network out` (no colon) is the default for
    NICs on source networks not otherwise mapped, `--bridge out` for NICs on source bridges
    (one default of each kind, as virt-v2v keeps). `--mac MAC:network|bridge:out` maps one
    NIC by its MAC address and wins over the others.
    """
    nets: dict[str, str] = {}
    brs: dict[str, str] = {}
    mac_map: dict[str, tuple[str, str]] = {}
    defaults: dict[str, str] = {}
    for kind, values, table in (("network", networks, nets), ("bridge", bridges, brs)):
        for value in values or []:
            src, sep, out = value.rpartition(":")
            if not sep:
                if kind in defaults:
                    raise UsageError(
                        f"--{kind} {value}: a default {kind} was already given "
                        f"(--{kind} {defaults[kind]})"
                    )
                defaults[kind] = value
                continue
            if not src or not out:
                raise UsageError(f"--{kind} {value}: expected IN:OUT or OUT")
            table[src] = out
    for value in macs or []:
        match = MAC_RE.match(value)
        if match is None:
            raise UsageError(f"--mac {value}: expected MAC:network:NAME or MAC:bridge:NAME")
        mac_map[match.group(1).lower()] = (match.group(2), match.group(3))
    return NetworkMap(
        networks=nets,
        bridges=brs,
        macs=mac_map,
        default_network=defaults.get("network"),
        default_bridge=defaults.get("bridge"),
    )


def memory_size(text: str) -> int:
    """--memory: a number of MiB, or with a unit suffix (K, M, G)."""
    match = re.fullmatch(r"(\d+)\s*([KkMmGg]i?[Bb]?)?", text.strip())
    if match is None:
        raise UsageError(f"--memory {text}: expected a size such as 2048 or 4G")
    number = int(match.group(1))
    unit = (match.group(2) or "M")[0].upper()
    return number << {"K": 10, "M": 20, "G": 30}[unit]
