"""Parsers that find the interface names a Linux network configuration file uses.

Each takes the file's text (and its path where the name lives in it) and returns the names in
the order they first appear. They only read: rewriting these files is the converter's job.
"""

from __future__ import annotations

import configparser
import re
import shlex
from collections.abc import Iterable

import yaml


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in names:
        if name and name not in seen:
            seen[name] = None
    return tuple(seen)


def ifupdown_interfaces(text: str) -> tuple[str, ...]:
    """Debian's /etc/network/interfaces: names from iface, auto, allow-* and mapping stanzas."""
    names: list[str] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        keyword = words[0]
        if keyword in ("iface", "mapping") and len(words) > 1:
            names.append(words[1])
        elif keyword == "auto" or keyword.startswith("allow-"):
            names.extend(words[1:])
    return _unique(names)


def netplan_interfaces(text: str) -> tuple[str, ...]:
    """Netplan YAML: the ids under network.ethernets/bonds/bridges/vlans, and set-name values."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return ()
    network = doc.get("network") if isinstance(doc, dict) else None
    if not isinstance(network, dict):
        return ()
    names: list[str] = []
    for section in ("ethernets", "bonds", "bridges", "vlans", "wifis"):
        devices = network.get(section)
        if not isinstance(devices, dict):
            continue
        for dev_id, conf in devices.items():
            names.append(str(dev_id))
            if isinstance(conf, dict):
                set_name = conf.get("set-name")
                if isinstance(set_name, str):
                    names.append(set_name)
                match = conf.get("match")
                if isinstance(match, dict) and isinstance(match.get("name"), str):
                    names.append(match["name"])
    return _unique(names)


def _shell_vars(text: str) -> dict[str, str]:
    """KEY=value lines of an ifcfg file, with shell quoting removed (never evaluated)."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value, comments=True)
        except ValueError:
            parts = [value.strip("\"'")]
        result[key.strip()] = parts[0] if parts else ""
    return result


def ifcfg_interfaces(text: str, filename: str) -> tuple[str, ...]:
    """RHEL ifcfg and SUSE wicked ifcfg: DEVICE= (RHEL), else the name after 'ifcfg-'."""
    values = _shell_vars(text)
    names = [values.get("DEVICE", ""), values.get("INTERFACE_NAME", "")]
    if not any(names):
        names.append(filename.removeprefix("ifcfg-"))
    return _unique(names)


def ifcfg_hwaddr(text: str) -> str | None:
    value = _shell_vars(text).get("HWADDR")
    return value.lower() if value else None


def nmconnection_interfaces(text: str) -> tuple[str, ...]:
    """NetworkManager keyfile: [connection] interface-name."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return ()
    name = parser.get("connection", "interface-name", fallback="")
    return _unique([name])


def networkd_interfaces(text: str) -> tuple[str, ...]:
    """systemd-networkd .network / .link files: [Match] Name= (may list several, with globs)."""
    names: list[str] = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        header = re.fullmatch(r"\[(.+)\]", line)
        if header:
            section = header.group(1)
            continue
        if section == "Match" and line.startswith("Name="):
            names.extend(line[len("Name=") :].split())
        elif section == "Link" and line.startswith("Name="):
            names.append(line[len("Name=") :].strip())
    return _unique(names)


_IPV4 = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3})(?:/\d{1,2})?")


def _ipv4s(values: Iterable[str]) -> tuple[str, ...]:
    """The IPv4 addresses (prefix dropped) among values; anything else is left out."""
    found = []
    for value in values:
        m = _IPV4.fullmatch(value.strip().split(",", 1)[0].strip())
        if m and all(int(part) < 256 for part in m.group(1).split(".")):
            found.append(m.group(1))
    return _unique(found)


def static_ipv4(kind: str, text: str) -> tuple[str, ...]:
    """The static IPv4 addresses a configuration file of `kind` (as NetworkConfig.kind says)
    gives its interfaces, in order; DHCP and IPv6 configurations give none."""
    if kind == "ifupdown":
        values, static = [], False
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split()
            if words[:1] == ["iface"]:
                static = len(words) >= 4 and words[2] == "inet" and words[3] == "static"
            elif static and len(words) == 2 and words[0] == "address":
                values.append(words[1])
        return _ipv4s(values)
    if kind == "netplan":
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            return ()
        network = doc.get("network") if isinstance(doc, dict) else None
        values = []
        for section in ("ethernets", "bonds", "bridges", "vlans"):
            devices = network.get(section) if isinstance(network, dict) else None
            for conf in devices.values() if isinstance(devices, dict) else ():
                addresses = conf.get("addresses") if isinstance(conf, dict) else None
                values += [a for a in addresses or () if isinstance(a, str)]
        return _ipv4s(values)
    if kind in ("ifcfg", "wicked"):
        shell = _shell_vars(text)
        return _ipv4s(v for k, v in shell.items() if re.fullmatch(r"IPADDR\w*", k))
    if kind == "networkmanager":
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read_string(text)
        except configparser.Error:
            return ()
        if not parser.has_section("ipv4") or parser.get("ipv4", "method", fallback="") != "manual":
            return ()
        return _ipv4s(v for k, v in parser.items("ipv4") if re.fullmatch(r"address(es)?\d*", k))
    if kind == "systemd-networkd":
        section, values = "", []
        for raw in text.splitlines():
            line = raw.strip()
            header = re.fullmatch(r"\[(.+)\]", line)
            if header:
                section = header.group(1)
            elif section in ("Network", "Address") and line.startswith("Address="):
                values.append(line[len("Address=") :])
        return _ipv4s(values)
    return ()
