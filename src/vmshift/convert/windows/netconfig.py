"""Static IPv4 settings of the source NICs, and the first-boot script that puts them back.

Windows keeps a NIC's TCP/IP settings under Tcpip\\Parameters\\Interfaces\\{GUID}, keyed by the
adapter's instance GUID. The virtio NIC that replaces it is a new adapter with a new GUID, so
the settings would be lost; the MAC address is what survives the conversion (targets keep the
source's MACs). The registry does not hold the hardware MAC, though: it is found from a MAC
override on the adapter (NetworkAddress), or by pairing the adapters with the source VM's NICs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from vmshift.convert.windows.batch import literal
from vmshift.model.vm import Nic

NET_CLASS = "{4D36E972-E325-11CE-BFC1-08002BE10318}"
# Characteristics bit of adapters backed by hardware (not VPN, loopback or WAN miniports).
NCF_PHYSICAL = 0x4

_IPV4 = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_MAC = re.compile(r"[0-9a-fA-F]{2}([-:]?[0-9a-fA-F]{2}){5}")


class HiveReader(Protocol):
    """The reading half of vmshift.guest.registry.Hive."""

    def node(self, path: str) -> int | None: ...
    def subkeys(self, node: int) -> Iterable[tuple[str, int]]: ...
    def get(self, path: str, name: str) -> object: ...


@dataclass(frozen=True)
class Adapter:
    """A network adapter from the network class key, in the order Windows numbered them."""

    instance_id: str  # NetCfgInstanceId, "{GUID}"
    description: str  # DriverDesc
    mac: str | None  # a NetworkAddress override, as aa:bb:cc:dd:ee:ff


@dataclass(frozen=True)
class StaticConfig:
    """One interface's static IPv4 settings."""

    instance_id: str
    addresses: tuple[tuple[str, str], ...]  # (address, netmask)
    gateway: str | None
    dns: tuple[str, ...]


@dataclass(frozen=True)
class NicRestore:
    """Settings to apply to the adapter with `mac` (None: the only virtio NIC)."""

    mac: str | None
    config: StaticConfig
    description: str


def normalise_mac(text: str) -> str | None:
    if not _MAC.fullmatch(text.strip()):
        return None
    digits = re.sub(r"[-:]", "", text.strip()).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [s for s in re.split(r"[,\s]+", value) if s]
    if isinstance(value, list):
        return [s.strip() for s in value if isinstance(s, str) and s.strip()]
    return []


def _ipv4s(value: object) -> list[str]:
    return [s for s in _strings(value) if _IPV4.fullmatch(s) and s != "0.0.0.0"]


def adapters(system: HiveReader, ccs: str) -> list[Adapter]:
    """Hardware network adapters the guest had, by class key order (0000, 0001 ...)."""
    base = rf"{ccs}\Control\Class\{NET_CLASS}"
    node = system.node(base)
    if node is None:
        return []
    found = []
    for name, _child in sorted(system.subkeys(node)):
        if not name.isdigit():
            continue  # "Properties" and other non-instance keys
        path = rf"{base}\{name}"
        instance = system.get(path, "NetCfgInstanceId")
        if not isinstance(instance, str):
            continue
        characteristics = system.get(path, "Characteristics")
        component = system.get(path, "ComponentId")
        physical = (isinstance(characteristics, int) and characteristics & NCF_PHYSICAL) or (
            isinstance(component, str) and component.lower().startswith("pci\\")
        )
        if not physical:
            continue
        override = system.get(path, "NetworkAddress")
        description = system.get(path, "DriverDesc")
        found.append(
            Adapter(
                instance_id=instance.upper(),
                description=description if isinstance(description, str) else name,
                mac=normalise_mac(override) if isinstance(override, str) else None,
            )
        )
    return found


def static_configs(system: HiveReader, ccs: str) -> list[StaticConfig]:
    """Interfaces configured with a static IPv4 address (DHCP ones need nothing restored)."""
    base = rf"{ccs}\Services\Tcpip\Parameters\Interfaces"
    node = system.node(base)
    if node is None:
        return []
    configs = []
    for name, _child in sorted(system.subkeys(node)):
        path = rf"{base}\{name}"
        if system.get(path, "EnableDHCP") != 0:
            continue
        ips = _strings(system.get(path, "IPAddress"))
        masks = _strings(system.get(path, "SubnetMask"))
        pairs = tuple(
            (ip, mask)
            for ip, mask in zip(ips, masks, strict=False)
            if _IPV4.fullmatch(ip) and ip != "0.0.0.0" and _IPV4.fullmatch(mask)
        )
        if not pairs:
            continue
        gateways = _ipv4s(system.get(path, "DefaultGateway"))
        configs.append(
            StaticConfig(
                instance_id=name.upper(),
                addresses=pairs,
                gateway=gateways[0] if gateways else None,
                dns=tuple(_ipv4s(system.get(path, "NameServer"))),
            )
        )
    return configs


def plan(
    configs: Sequence[StaticConfig], found: Sequence[Adapter], nics: Sequence[Nic]
) -> tuple[list[NicRestore], list[str]]:
    """Which MAC each static configuration goes to, and warnings for those that cannot go.

    A NetworkAddress override names the MAC outright. Otherwise the adapters are paired with
    the source VM's NICs in order, which is certain only when there is one of each: Windows
    numbers adapters as it finds them, usually but not always in the hypervisor's slot order.
    """
    by_id = {a.instance_id: a for a in found}
    macs = [n.mac for n in nics]
    paired = len(found) == len(nics)
    restores: list[NicRestore] = []
    warnings: list[str] = []
    for config in configs:
        adapter = by_id.get(config.instance_id)
        if adapter is None:
            continue  # settings of an adapter removed long ago, or of a VPN/virtual one
        first = config.addresses[0][0]
        if adapter.mac:
            restores.append(NicRestore(adapter.mac, config, adapter.description))
        elif paired:
            mac = macs[found.index(adapter)]
            restores.append(NicRestore(mac, config, adapter.description))
            if len(found) > 1:
                warnings.append(
                    f"static address {first} ({adapter.description}) goes to the NIC with MAC "
                    f"{mac or '(generated)'}, matched by order: check it after first boot"
                )
        else:
            warnings.append(
                f"static address {first} ({adapter.description}) cannot be restored: "
                f"{len(found)} adapters in the guest but {len(nics)} NICs in the source; "
                "set it again after first boot"
            )
    return restores, warnings


def _dash_mac(mac: str) -> str:
    return mac.replace(":", "-").upper()


def restore_script(restore: NicRestore) -> str:
    """A batch script (cmd.exe, XP and later) that finds the adapter and sets its addresses.

    netsh selects adapters by connection name, so the name is looked up by MAC with getmac. The
    adapter may appear only once the driver scripts before this one have bound virtio-net, so
    the lookup waits for up to five minutes. Positional netsh arguments: the keyword names
    differ between XP and later versions, the positions do not.
    """
    cfg = restore.config
    lines = [
        "@echo off",
        f"rem Restore the static IPv4 settings of {literal(restore.description)}",
        "setlocal EnableExtensions EnableDelayedExpansion",
        'set "nic="',
    ]
    if restore.mac:
        lines += [
            f'set "mac={_dash_mac(restore.mac)}"',
            "for /l %%i in (1,1,30) do if not defined nic (",
            "  for /f \"tokens=1,3 delims=,\" %%a in ('getmac /v /fo csv /nh') do (",
            '    if /i "%%~b"=="!mac!" set "nic=%%~a"',
            "  )",
            "  if not defined nic ping -n 11 127.0.0.1 >nul",
            ")",
            "if not defined nic (",
            "  echo no network adapter with MAC !mac! appeared",
            "  exit /b 1",
            ")",
        ]
    else:
        # The source gave no MAC: the target generates one, so take the only VirtIO adapter.
        lines += [
            "for /l %%i in (1,1,30) do if not defined nic (",
            "  for /f \"tokens=1,2 delims=,\" %%a in ('getmac /v /fo csv /nh') do (",
            '    echo %%~b | find /i "VirtIO" >nul && set "nic=%%~a"',
            "  )",
            "  if not defined nic ping -n 11 127.0.0.1 >nul",
            ")",
            "if not defined nic (",
            "  echo no VirtIO network adapter appeared",
            "  exit /b 1",
            ")",
        ]
    (ip, mask), *more = cfg.addresses
    gateway = f" {cfg.gateway} 1" if cfg.gateway else ""
    lines.append(f'echo setting {ip}/{mask} on "!nic!"')
    lines.append(f'netsh interface ip set address "!nic!" static {ip} {mask}{gateway}')
    lines.append("if errorlevel 1 exit /b 2")
    for extra_ip, extra_mask in more:
        lines.append(f'netsh interface ip add address "!nic!" {extra_ip} {extra_mask}')
    for index, server in enumerate(cfg.dns, start=1):
        if index == 1:
            lines.append(f'netsh interface ip set dns "!nic!" static {server}')
        else:
            lines.append(f'netsh interface ip add dns "!nic!" {server} index={index}')
    lines.append("exit /b 0")
    return "\r\n".join(lines) + "\r\n"
