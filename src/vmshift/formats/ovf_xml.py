"""Reading OVF XML: the namespaces, a parser that expands no entities and fetches nothing,
element lookups by local name, the per-document context that turns attribute text into numbers
with errors naming the line, and DSP0004 allocation units.

Elements are matched by local name, whatever their namespace: OVF 1.x puts everything in `rasd:`
Items, OVF 2.x may use `StorageItem` (sasd:) and `EthernetPortItem` (epasd:) with the same
child names, and hand-written descriptors mix prefixes freely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from math import prod

from lxml import etree

from vmshift.formats.ovf_model import OvfError
from vmshift.formats.safexml import untrusted_parser

OVF1_NS = "http://schemas.dmtf.org/ovf/envelope/1"
OVF2_NS = "http://schemas.dmtf.org/ovf/envelope/2"
VMW_NS = "http://www.vmware.com/schema/ovf"
VBOX_NS = "http://www.virtualbox.org/ovf/machine"

# Real descriptors are tens of kilobytes; anything this big is not one.
MAX_OVF_BYTES = 16 << 20


def parse_xml(data: bytes, path: str) -> etree._Element:
    """The document's root; no DTD, entity, network access or huge tree is allowed."""
    if len(data) > MAX_OVF_BYTES:
        raise OvfError(path, f"{len(data)} bytes is far too large for an OVF descriptor")
    parser = untrusted_parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise OvfError(path, f"not well-formed XML: {getattr(exc, 'msg', None) or exc}") from exc
    if root.getroottree().docinfo.internalDTD is not None:
        raise OvfError(path, "has a DOCTYPE; OVF descriptors have none and vmshift reads no DTDs")
    return root


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def kids(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and local(c) == name]


def kid(el: etree._Element, name: str) -> etree._Element | None:
    found = kids(el, name)
    return found[0] if found else None


def text(el: etree._Element | None) -> str | None:
    if el is None or el.text is None or not el.text.strip():
        return None
    return el.text.strip()


def is_vmw(el: etree._Element, *names: str) -> bool:
    """Whether el is one of the vmw: elements named."""
    return etree.QName(el).namespace == VMW_NS and local(el) in names


@dataclass
class Ctx:
    """One descriptor being parsed: its name for messages and its envelope namespace."""

    path: str
    ns: str

    def attr(self, el: etree._Element, name: str) -> str | None:
        value = el.get(f"{{{self.ns}}}{name}")
        return value if value is not None else el.get(name)

    def need(self, el: etree._Element, name: str) -> str:
        value = self.attr(el, name)
        if not value:
            raise OvfError(self.path, f"<{local(el)}> has no ovf:{name} (line {el.sourceline})")
        return value

    def int(self, value: str | None, what: str, el: etree._Element) -> int | None:
        if value is None:
            return None
        try:
            return int(value.strip())
        except ValueError:
            raise OvfError(
                self.path, f'{what} "{value}" is not a whole number (line {el.sourceline})'
            ) from None


_NAMED_UNITS = {
    "byte": 1, "bytes": 1,
    "kilobytes": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
    "megabytes": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
    "gigabytes": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
    "terabytes": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
}  # fmt: skip
_UNIT_EXPR = re.compile(r"bytes?((?:\s*\*\s*\d+(?:\s*\^\s*\d+)?)*)")
_UNIT_FACTOR = re.compile(r"\*\s*(\d+)(?:\s*\^\s*(\d+))?")


def parse_allocation_units(text: str) -> int:
    """Bytes per unit of a DSP0004 programmatic unit ("byte * 2^20", "byte*1024*1024") or of the
    older names VirtualBox writes ("MegaBytes"). Raise ValueError for anything else."""
    unit = " ".join(text.split()).lower()
    if unit in _NAMED_UNITS:
        return _NAMED_UNITS[unit]
    match = _UNIT_EXPR.fullmatch(unit)
    if match is None:
        raise ValueError(f'unknown unit "{text}"')
    factors = []
    for base, exp in _UNIT_FACTOR.findall(match.group(1)):
        # A cap keeps a hostile "byte * 10^999999999" from taking minutes to evaluate.
        if int(exp or 1) > 64 or int(base) > 1 << 40:
            raise ValueError(f'unit "{text}" is too large')
        factors.append(int(base) ** int(exp or 1))
    return prod(factors)
