"""Recognise software of other hypervisors in a guest, from packages, files and services.

Tables, not code: a new tool to recognise is one line. Conversion uses the same tables to decide
what to remove or disable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from vmshift.model.inspection import Application, ForeignKind, ForeignSoftware

# Linux package names (full match, case-sensitive as package managers are).
LINUX_PACKAGES: list[tuple[str, ForeignKind]] = [
    (r"open-vm-tools(-.*)?", ForeignKind.VMWARE),
    (r"vmware-tools.*|VMwareTools.*|vmware-guestd|kmod-vmware-tools.*", ForeignKind.VMWARE),
    (r"xe-guest-utilities.*|xen-guest-agent|xenstore-utils", ForeignKind.XEN),
    (r"kmod-xenpv.*|xenpv.*|xen-kmp-.*|xen-tools-domU|xen-tools-guest", ForeignKind.XEN),
    (r"hyperv-daemons.*|hypervkvpd|hypervvssd|hypervfcopyd|hyper-v", ForeignKind.HYPERV),
    (r"linux-cloud-tools-.*|hv-kvp-daemon-init", ForeignKind.HYPERV),
    (r"virtualbox-guest-.*|virtualbox-ose-guest-.*|VBoxGuestAdditions.*", ForeignKind.VIRTUALBOX),
    (r"parallels-tools.*|prl-tools.*|prltools.*", ForeignKind.PARALLELS),
]

# Files left by installers that bypass the package manager (tarball installs).
LINUX_FILES: list[tuple[str, str, ForeignKind]] = [
    ("/etc/vmware-tools/locations", "VMware Tools (tarball install)", ForeignKind.VMWARE),
    ("/usr/bin/vmware-uninstall-tools.pl", "VMware Tools (tarball install)", ForeignKind.VMWARE),
    ("/opt/VBoxGuestAdditions-*", "VirtualBox Guest Additions", ForeignKind.VIRTUALBOX),
    ("/usr/lib/parallels-tools", "Parallels Tools", ForeignKind.PARALLELS),
    ("/usr/sbin/xe-daemon", "XenServer guest utilities", ForeignKind.XEN),
]

# Windows: Uninstall DisplayName patterns (case-insensitive search).
WINDOWS_APPS: list[tuple[str, ForeignKind]] = [
    (r"^VMware Tools", ForeignKind.VMWARE),
    (r"Citrix XenServer|XenServer (VSS|Windows|PV)|Xen PV|XCP-ng", ForeignKind.XEN),
    (r"Citrix Hypervisor|Citrix VM Tools", ForeignKind.XEN),
    (r"GPL PV Drivers|Xen Windows PV", ForeignKind.XEN),
    (r"Hyper-V Integration Services|Virtual Machine Additions", ForeignKind.HYPERV),
    (r"VirtualBox Guest Additions", ForeignKind.VIRTUALBOX),
    (r"^Parallels Tools", ForeignKind.PARALLELS),
]

# Windows services (case-insensitive). Hyper-V's vmic* services ship with every Windows since
# 8/2012 and are harmless on KVM, so they are not listed.
WINDOWS_SERVICES: list[tuple[str, ForeignKind]] = [
    (r"vmtools|vmhgfs|vmci|vmmemctl|vm3dmp.*|vmrawdsk|vmusbmouse|vmmouse", ForeignKind.VMWARE),
    (r"vmxnet.*|vsepflt", ForeignKind.VMWARE),
    (r"vmvss|vmStatsProvider|VGAuthService|vnetWFP|vsock", ForeignKind.VMWARE),
    (r"xenvbd|xennet|xenbus|xeniface|xenfilt|xensvc|xenvif|XenPV.*|xenagent", ForeignKind.XEN),
    (r"VBoxGuest|VBoxMouse|VBoxSF|VBoxService|VBoxVideo.*", ForeignKind.VIRTUALBOX),
    (r"prl_.*|prlfs|prltoolssvc|parallels.*", ForeignKind.PARALLELS),
]


def _first_match(
    table: list[tuple[str, ForeignKind]], name: str, flags: int = 0, *, full: bool = True
) -> ForeignKind | None:
    matcher: Callable[..., re.Match[str] | None] = re.fullmatch if full else re.search
    for pattern, kind in table:
        if matcher(pattern, name, flags):
            return kind
    return None


def linux_from_packages(apps: Iterable[Application]) -> list[ForeignSoftware]:
    found = []
    for app in apps:
        kind = _first_match(LINUX_PACKAGES, app.name)
        if kind is not None:
            found.append(ForeignSoftware(kind, app.name, f"package {app.name} {app.version}"))
    return found


def windows_from_apps(apps: Iterable[Application]) -> list[ForeignSoftware]:
    found = []
    for app in apps:
        kind = _first_match(WINDOWS_APPS, app.name, re.IGNORECASE, full=False)
        if kind is not None:
            found.append(ForeignSoftware(kind, app.name, f"installed application {app.name!r}"))
    return found


def windows_from_services(services: Iterable[str]) -> list[ForeignSoftware]:
    found = []
    for name in services:
        kind = _first_match(WINDOWS_SERVICES, name, re.IGNORECASE)
        if kind is not None:
            found.append(ForeignSoftware(kind, name, f"service {name}"))
    return found
