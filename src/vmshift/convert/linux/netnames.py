"""Which interface name belongs to which NIC, and the text that pins it there: pure functions.

A NIC's name follows from its hardware: VMware's vmxnet3 in PCI slot 192 is `ens192`, the same
guest's virtio-net NIC on KVM is `enp1s0`. Static configurations name the interface, so they stop
applying after conversion unless the old name is bound to the NIC's MAC address, which the
target keeps. network.py reads the guest's files and writes what these functions return.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import yaml

from vmshift.formats import netconf

# Interface names that can be written into a file name and a udev rule: what the kernel accepts
# minus the characters that mean "alias" (:) and "VLAN" (.). Anything else is left alone.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,15}")
# Interfaces that are not a NIC of their own (bonds, bridges, tunnels, wireless...).
_VIRTUAL = re.compile(
    r"(bond|br|team|vlan|virbr|docker|veth|tun|tap|wg|ppp|dummy|vnet|vxlan|macvlan|ipvlan|"
    r"sit|gre|ip6tnl|ib|wl|ww)\d.*|(br-|docker|veth|virbr|wlan|wlp|wwan|wwp).*"
)
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# ifupdown options whose values name other interfaces (bridge ports, bond slaves, VLAN parents).
_IFUPDOWN_MEMBERS = {
    "bridge_ports", "bridge-ports", "bond-slaves", "bond_slaves", "slaves",
    "vlan-raw-device", "vlan_raw_device", "bond-primary",
}  # fmt: skip


def normalize_mac(value: str | None) -> str | None:
    """Lower-case colon form of an Ethernet address; None for anything else."""
    if not value:
        return None
    mac = value.strip().strip("\"'").lower().replace("-", ":")
    return mac if _MAC.fullmatch(mac) else None


def is_nic_name(name: str) -> bool:
    """True for a name that a physical (or emulated) NIC can carry and that is safe to write."""
    if name == "lo" or not _SAFE_NAME.fullmatch(name) or name.isdigit():
        return False
    return not _VIRTUAL.fullmatch(name)


def ifupdown_members(text: str) -> tuple[str, ...]:
    """Interfaces that ifupdown names only as a bridge port, bond slave or VLAN parent."""
    names: list[str] = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) > 1 and words[0] in _IFUPDOWN_MEMBERS:
            names.extend(w for w in words[1:] if w not in ("none", "all"))
    return tuple(dict.fromkeys(names))


# --- MAC addresses the guest's own configuration ties to a name ----------------------------


def config_macs(kind: str, text: str, filename: str) -> dict[str, str]:
    """Interface name -> MAC address, where the configuration file itself pairs them."""
    if kind in ("ifcfg", "wicked"):
        mac = normalize_mac(netconf.ifcfg_hwaddr(text))
        names = netconf.ifcfg_interfaces(text, filename)
        return {names[0]: mac} if mac and names else {}
    if kind == "networkmanager":
        return _nm_macs(text)
    if kind == "netplan":
        return _netplan_macs(text)
    if kind == "systemd-networkd":
        return _networkd_macs(text)
    return {}


def _nm_macs(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text)
    except configparser.Error:
        return {}
    name = parser.get("connection", "interface-name", fallback="")
    for section in ("ethernet", "802-3-ethernet"):
        mac = normalize_mac(parser.get(section, "mac-address", fallback=None))
        if name and mac:
            return {name: mac}
    return {}


def _netplan_macs(text: str) -> dict[str, str]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    network = doc.get("network") if isinstance(doc, dict) else None
    ethernets = network.get("ethernets") if isinstance(network, dict) else None
    found: dict[str, str] = {}
    for dev_id, conf in (ethernets or {}).items() if isinstance(ethernets, dict) else ():
        if not isinstance(conf, dict) or not isinstance(conf.get("match"), dict):
            continue
        mac = normalize_mac(str(conf["match"].get("macaddress", "")))
        name = conf.get("set-name") or dev_id
        if mac:
            found[str(name)] = mac
    return found


def _networkd_macs(text: str) -> dict[str, str]:
    section, macs, names = "", [], []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Match" and line.startswith("MACAddress="):
            macs.extend(line.partition("=")[2].split())
        elif section in ("Match", "Link") and line.startswith("Name="):
            names.extend(line.partition("=")[2].split())
    mac = normalize_mac(macs[0]) if len(macs) == 1 else None
    return {names[0]: mac} if mac and len(names) == 1 else {}


# --- /etc/udev/rules.d/70-persistent-net.rules ---------------------------------------------

_UDEV_KEY = re.compile(r'([A-Z]+(?:\{[^}]*\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"')


@dataclass(frozen=True)
class UdevNetRule:
    index: int  # line number, from 0
    mac: str | None
    name: str | None
    drivers: str | None


def parse_persistent_net_rules(text: str) -> list[UdevNetRule]:
    """The rules that name a NIC by its address, as udev's persistent-net generator writes them."""
    rules = []
    for index, raw in enumerate(text.splitlines()):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keys = {key: value for key, op, value in _UDEV_KEY.findall(line) if op != "!="}
        mac = normalize_mac(keys.get("ATTR{address}") or keys.get("SYSFS{address}"))
        name = keys.get("NAME")
        if mac or name:
            rules.append(UdevNetRule(index, mac, name, keys.get("DRIVERS") or keys.get("DRIVER")))
    return rules


def udev_rule(name: str, mac: str) -> str:
    # DRIVERS=="?*" and type 1 keep the rule off VLANs and bridges, which share the NIC's MAC.
    return (
        f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{mac}", '
        f'ATTR{{type}}=="1", NAME="{name}"'
    )


def link_file(name: str, mac: str, why: str) -> str:
    """A systemd .link file giving the NIC with this MAC this name; `why` becomes a comment."""
    return f"# Written by vmshift: {why}\n[Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n"


# --- which name goes to which NIC ----------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    name: str
    mac: str
    nic: int  # index into SourceVM.nics
    reason: str  # how the pair was found, for the report


@dataclass(frozen=True)
class Rename:
    """A configured name whose NIC has no known MAC: configs move to the name it will get."""

    old: str
    new: str | None  # None: the new name cannot be predicted
    nic: int


@dataclass
class NamePlan:
    bindings: list[Binding] = field(default_factory=list)
    renames: list[Rename] = field(default_factory=list)
    # Configured names with no NIC, and why.
    unbound: list[tuple[str, str]] = field(default_factory=list)


def plan_names(
    names: Sequence[str],
    named_macs: Mapping[str, str],
    nic_macs: Sequence[str | None],
    rule_macs: Mapping[str, str],
    predict: Callable[[int], str | None],
) -> NamePlan:
    """Pair configured interface names with the source VM's NICs.

    A MAC that the guest's own files give a name (ifcfg HWADDR, NetworkManager mac-address,
    netplan match, a udev rule) decides first; the other names then go to the other NICs in
    order, the order in which the source VM lists them and the target creates them.
    """
    plan = NamePlan()
    nic_of = {mac: i for i, mac in enumerate(nic_macs) if mac}
    taken: set[int] = set()
    done: set[str] = set()
    for source, reason in ((named_macs, "configuration"), (rule_macs, "udev rule")):
        for name in names:
            mac = source.get(name)
            if name in done or mac is None or mac not in nic_of or nic_of[mac] in taken:
                continue
            plan.bindings.append(Binding(name, mac, nic_of[mac], f"MAC in its {reason}"))
            taken.add(nic_of[mac])
            done.add(name)
    free = [i for i in range(len(nic_macs)) if i not in taken]
    for name in names:
        if name in done:
            continue
        pinned = named_macs.get(name)
        # A file pinned to another MAC cannot be for a NIC whose MAC is known and different.
        fits = [i for i in free if not (pinned and nic_macs[i])]
        if not fits:
            why = f"its configuration is for {pinned}, not a NIC of this VM" if pinned else ""
            plan.unbound.append((name, why or "the source VM has no NIC left for it"))
            continue
        nic = fits[0]
        free.remove(nic)
        mac = nic_macs[nic]
        if mac:
            plan.bindings.append(Binding(name, mac, nic, "NIC order"))
        else:
            plan.renames.append(Rename(name, predict(nic), nic))
        done.add(name)
    return plan


def predict_name(index: int, *, virtio: bool, systemd: bool, ifnames: bool) -> str | None:
    """The name a NIC of the converted guest will get, for the fallback when no MAC is known.

    On the target's q35 machine each virtio-net NIC sits on its own PCIe root port in the
    order the NICs are listed: bus index+1, slot 0, which systemd names enpNs0. Kernel names
    (no predictable naming) follow the same order. An emulated e1000 lands behind a PCI bridge
    whose address depends on the other devices: not predictable.
    """
    if not systemd or not ifnames:
        return f"eth{index}"
    return f"enp{index + 1}s0" if virtio else None


def ifnames_disabled(cmdline_text: str) -> bool:
    """True when a kernel command line (or a file holding one) turns predictable names off."""
    return re.search(r"(^|[\s\"'])net\.ifnames=0($|[\s\"'])", cmdline_text, re.M) is not None


def systemd_version(apps: Iterable[tuple[str, str]]) -> int | None:
    """The systemd version from (package name, version) pairs, e.g. ("systemd", "252.22-1")."""
    for name, version in apps:
        if name in ("systemd", "systemd-udev"):
            match = re.match(r"(?:\d+:)?(\d+)", version)
            if match:
                return int(match.group(1))
    return None


# --- rewriting configuration files ---------------------------------------------------------


def prune_persistent_rules(text: str, bindings: Sequence[Binding]) -> tuple[str, list[str]]:
    """Comment out rules that would give one of our MACs another name, or our names to
    another MAC (a NIC that is gone keeps its name reserved, and the new NIC gets eth1).

    Rules that bind exactly as we do are kept, unless they also demand a driver the converted
    NIC does not have. Returns the new text and the lines disabled.
    """
    by_mac = {b.mac: b.name for b in bindings}
    by_name = {b.name: b.mac for b in bindings}
    lines = text.splitlines(keepends=True)
    disabled = []
    for rule in parse_persistent_net_rules(text):
        same = rule.mac in by_mac and by_mac[rule.mac] == rule.name
        conflict = (rule.mac in by_mac and by_mac[rule.mac] != rule.name) or (
            rule.name in by_name and by_name[rule.name] != rule.mac
        )
        driver_bound = rule.drivers not in (None, "?*", "*")
        if conflict or (same and driver_bound):
            original = lines[rule.index]
            lines[rule.index] = "# disabled by vmshift (the NIC is renamed): " + original
            disabled.append(original.strip())
    return "".join(lines), disabled


def rules_with_bindings(text: str, bindings: Sequence[Binding]) -> str:
    """Append a rule for each binding that the file does not already make."""
    have = {(r.mac, r.name) for r in parse_persistent_net_rules(text) if r.drivers in (None, "?*")}
    new = [udev_rule(b.name, b.mac) for b in bindings if (b.mac, b.name) not in have]
    if not new:
        return text
    head = text if not text or text.endswith("\n") else text + "\n"
    return (
        head
        + "# Added by vmshift: names the NICs had on the source hypervisor\n"
        + ("\n".join(new) + "\n")
    )


def rename_interface(text: str, old: str, new: str) -> str:
    """Replace the interface name `old` by `new` on every non-comment line, also where it is
    the stem of an alias (old:1) or VLAN (old.10)."""
    word = re.compile(rf"(?<![\w-]){re.escape(old)}(?![\w-])")
    out = []
    for line in text.splitlines(keepends=True):
        stripped = line.lstrip()
        out.append(line if stripped.startswith(("#", ";")) else word.sub(new, line))
    return "".join(out)


def drop_mac_match(kind: str, text: str, new_name: str) -> str:
    """Remove what ties a configuration to a MAC address the converted NIC will not have."""
    dropped = {"networkmanager": "mac-address=", "systemd-networkd": "MACAddress="}
    out = []
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        indent = line[: len(line) - len(line.lstrip())]
        if kind in dropped and stripped.startswith(dropped[kind]):
            continue
        if kind in ("ifcfg", "wicked") and stripped.startswith("HWADDR="):
            out.append("# HWADDR removed by vmshift (the NIC gets a new MAC): " + line.lstrip())
        elif kind == "netplan" and stripped.startswith("macaddress:"):
            out.append(f"{indent}name: {new_name}\n")
        else:
            out.append(line)
    return "".join(out)
