"""The seed virt-v2v's XML configuration: `<virt-v2v>` holding `<profile>` and `<network>`
elements. Everything else the seed kept there (`<app>`, `<capability>`, `<path-root>` ...) is
skipped, without error: it configured things vmshift does differently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lxml import etree

from vmshift.formats.profiles.common import (
    ALLOCATIONS,
    FORMATS,
    METHODS,
    OUT_TYPES,
    NetworkRule,
    Profile,
    ProfileError,
    ProfileFile,
    add_rule,
    check_choice,
)
from vmshift.formats.safexml import untrusted_parser


def _line(element: Any) -> int | None:
    line = element.sourceline
    return line if isinstance(line, int) and line > 0 else None


def _children(element: Any, tag: str) -> list[Any]:
    return [c for c in element if isinstance(c.tag, str) and c.tag == tag]


def parse_xml(data: bytes, path: Path) -> ProfileFile:
    try:
        root = etree.fromstring(data, untrusted_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if isinstance(exc.lineno, int) and exc.lineno > 0 else None
        msg = getattr(exc, "msg", None) or str(exc)
        raise ProfileError(path, line, f"not well-formed XML: {msg}") from exc
    dtd: Any = root.getroottree().docinfo.internalDTD  # lxml-stubs lack DTD.entities()
    if dtd is not None and list(dtd.entities()):
        # Unexpanded entities would silently read as empty text: say so instead.
        raise ProfileError(path, 1, "declares XML entities; vmshift does not expand them")
    if root.tag != "virt-v2v":
        raise ProfileError(path, _line(root), f"root element is <{root.tag}>, expected <virt-v2v>")
    file_rules: dict[str | None, NetworkRule] = {}
    for element in _children(root, "network"):
        add_rule(path, file_rules, _xml_rule(path, element), "top-level mappings")
    profiles: dict[str, Profile] = {}
    for element in _children(root, "profile"):
        profile = _xml_profile(path, element, tuple(file_rules.values()))
        if profile.name in profiles:
            first = profiles[profile.name]
            raise ProfileError(
                path,
                profile.line,
                f"profile {profile.name!r} is already defined at line {first.line}",
            )
        profiles[profile.name] = profile
    return ProfileFile(path, "xml", tuple(profiles.values()))


def _one(path: Path, profile: Any, name: str, tag: str) -> Any | None:
    found = _children(profile, tag)
    if len(found) > 1:
        raise ProfileError(
            path, _line(found[1]), f"profile {name!r}: more than one <{tag}> element"
        )
    return found[0] if found else None


def _xml_profile(path: Path, element: Any, file_rules: tuple[NetworkRule, ...]) -> Profile:
    line = _line(element)
    name = (element.get("name") or "").strip()
    if not name:
        raise ProfileError(path, line, "<profile> without a name attribute")
    where = f"profile {name!r}"
    method_el = _one(path, element, name, "method")
    method = (method_el.text or "").strip() if method_el is not None else ""
    if method_el is None or not method:
        at = _line(method_el) if method_el is not None else line
        raise ProfileError(path, at, f"{where}: no <method> (rhev or libvirt)")
    check_choice(path, _line(method_el), f"{where}: method", method, METHODS)
    storage_el = _one(path, element, name, "storage")
    storage = (storage_el.text or "").strip() if storage_el is not None else ""
    if not storage and method != "null":
        at = _line(storage_el) if storage_el is not None else line
        raise ProfileError(path, at, f"{where}: no <storage> (the -os of method {method})")
    fmt = alloc = None
    if storage_el is not None:
        at = _line(storage_el)
        if (fmt := storage_el.get("format")) is not None:
            check_choice(path, at, f"{where}: storage format", fmt, FORMATS)
        if (alloc := storage_el.get("allocation")) is not None:
            check_choice(path, at, f"{where}: storage allocation", alloc, ALLOCATIONS)
    rules: dict[str | None, NetworkRule] = {}
    for net in _children(element, "network"):
        add_rule(path, rules, _xml_rule(path, net), where)
    return Profile(
        name=name,
        method=method,
        output=METHODS[method],
        storage=storage or None,
        path=path,
        line=line,
        format=fmt,
        allocation=alloc,
        networks=tuple(rules.values()),
        file_networks=file_rules,
    )


def _xml_rule(path: Path, element: Any) -> NetworkRule:
    """`<network type="bridge|network|default" name="IN"><network type="network|bridge"
    name="OUT"/></network>`."""
    line = _line(element)
    kind = element.get("type")
    if kind is None:
        raise ProfileError(
            path, line, "<network> without a type attribute (default, network, bridge)"
        )
    check_choice(path, line, "<network>: source type", kind, ("default", *OUT_TYPES))
    source = (element.get("name") or "").strip() or None
    if kind != "default" and source is None:
        raise ProfileError(path, line, f'<network type="{kind}"> without a name attribute')
    inner = _children(element, "network")
    if len(inner) != 1:
        raise ProfileError(
            path,
            line,
            f"<network> for {source or 'default'} must hold exactly one "
            f'<network type="network|bridge" name="..."/> (found {len(inner)})',
        )
    out = inner[0]
    out_type = check_choice(
        path, _line(out), "<network>: target type", out.get("type") or "", OUT_TYPES
    )
    out_name = (out.get("name") or "").strip()
    if not out_name:
        raise ProfileError(path, _line(out), "target <network> without a name attribute")
    return NetworkRule(
        source=None if kind == "default" else source,
        out_type=out_type,
        out_name=out_name,
        source_type=None if kind == "default" else kind,
        line=line,
    )
