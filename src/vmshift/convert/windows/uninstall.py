"""First-boot scripts that uninstall other hypervisors' guest tools (VMware Tools, Xen PV
drivers, Parallels Tools, VirtualBox Guest Additions).

Their installers must run inside Windows to undo what they did (drivers in the driver store,
services, network providers), so vmshift only disables their drivers offline (services.py) and
queues the uninstaller for the first boot. Only silent uninstallers are queued: one that waits
for a click would hang the first boot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmshift.convert.windows.batch import literal
from vmshift.convert.windows.netconfig import HiveReader
from vmshift.guest.foreign import WINDOWS_APPS
from vmshift.model.inspection import ForeignKind

UNINSTALL_KEYS = (
    r"Microsoft\Windows\CurrentVersion\Uninstall",
    r"WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall",
)
# Hyper-V's integration components are part of Windows itself and harmless on KVM.
UNINSTALLED_KINDS = {
    ForeignKind.VMWARE,
    ForeignKind.XEN,
    ForeignKind.PARALLELS,
    ForeignKind.VIRTUALBOX,
}
_PRODUCT_CODE = re.compile(r"\{[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}")
# msiexec's "success, reboot needed" codes: the dispatcher reboots at the end anyway.
MSI_REBOOT_CODES = (3010, 1641)


@dataclass(frozen=True)
class Uninstaller:
    name: str  # DisplayName
    kind: ForeignKind
    product_code: str | None  # an MSI product: msiexec /x
    command: str | None  # QuietUninstallString of a non-MSI installer

    @property
    def usable(self) -> bool:
        return self.product_code is not None or self.command is not None


def _kind(name: str) -> ForeignKind | None:
    for pattern, kind in WINDOWS_APPS:
        if re.search(pattern, name, re.IGNORECASE):
            return kind
    return None


def _product_code(key: str, uninstall: object) -> str | None:
    """The MSI product code when the entry is an MSI install, else None."""
    if isinstance(uninstall, str) and re.search(r"msiexec", uninstall, re.IGNORECASE):
        found = _PRODUCT_CODE.search(uninstall)
        if found:
            return found.group(0).upper()
    if _PRODUCT_CODE.fullmatch(key) and not isinstance(uninstall, str):
        return key.upper()
    return None


def find(software: HiveReader) -> list[Uninstaller]:
    """Foreign guest tools listed under Uninstall, 64-bit view first, each product once."""
    found: dict[str, Uninstaller] = {}
    for base in UNINSTALL_KEYS:
        node = software.node(base)
        if node is None:
            continue
        for key, _child in sorted(software.subkeys(node)):
            path = rf"{base}\{key}"
            name = software.get(path, "DisplayName")
            if not isinstance(name, str):
                continue
            kind = _kind(name)
            if kind is None or kind not in UNINSTALLED_KINDS:
                continue
            if software.get(path, "SystemComponent") == 1 and not _PRODUCT_CODE.fullmatch(key):
                continue  # a hidden part of a bigger product, removed with it
            code = _product_code(key, software.get(path, "UninstallString"))
            quiet = software.get(path, "QuietUninstallString")
            uninstaller = Uninstaller(
                name=name,
                kind=kind,
                product_code=code,
                command=quiet if isinstance(quiet, str) and quiet.strip() and not code else None,
            )
            found.setdefault((code or name).lower(), uninstaller)
    return list(found.values())


def script(u: Uninstaller) -> str:
    """The batch script that removes one product silently, without rebooting by itself."""
    lines = ["@echo off", f"rem Uninstall {literal(u.name)}: its services fail on KVM."]
    if u.product_code:
        lines.append(f'start "" /wait msiexec.exe /x {u.product_code} /qn /norestart')
    elif u.command:
        lines.append(f'start "" /wait {literal(u.command)}')
    else:
        raise ValueError(f"{u.name} has no silent uninstaller")
    lines.append('set "rc=%errorlevel%"')
    for code in MSI_REBOOT_CODES:
        lines.append(f"if %rc%=={code} exit /b 0")
    lines.append("exit /b %rc%")
    return "\r\n".join(lines) + "\r\n"


def script_name(u: Uninstaller) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", u.name.lower()).strip("-")[:40]
    return f"uninstall-{slug or u.kind.value}"
