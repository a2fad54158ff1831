"""Disable other hypervisors' drivers and services that break or bother Windows on KVM.

What is disabled, and why (decided per kind of driver, not per vendor):
- filter drivers (VMware vmStorFl/vsepflt/vnetflt, Xen xenfilt, Parallels prl_strg, mouse
  filters): they sit in the stack of every disk, controller or mouse of their class, so they
  load on KVM too, and a filter that fails to start takes the boot disk with it. They are also
  taken out of the class UpperFilters/LowerFilters lists: a disabled driver still named there
  makes Windows fail the whole device stack (INACCESSIBLE_BOOT_DEVICE).
- bus, socket and balloon drivers and user-mode services (vmci, vsock, xenbus, VMTools,
  prl_tg ...): they start without their hardware and log errors or spin.
Kept: function drivers of devices KVM never presents (pvscsi, vmxnet3, vm3dmp, VBoxVideo).
They load only when their PCI device exists, so they are harmless, and their removal belongs to
the tools' own uninstaller, which the first boot runs. Nothing is deleted: Start=4 only, and
every change is noted so a user can undo it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vmshift.convert.windows.context import WindowsGuest
    from vmshift.guest.registry import HiveEditor


SERVICE_DISABLED = 4
FILTER_VALUES = ("UpperFilters", "LowerFilters")

# (service name pattern, full match ignoring case; why it goes)
DISABLE: list[tuple[str, str]] = [
    (r"vmStorFl|vsepflt|vnetflt|vnetWFP|vmmouse|vmusbmouse", "VMware filter driver"),
    (r"vmci|vsock|vmhgfs|vmmemctl|vmrawdsk|vmxhid|vmusb", "VMware guest driver"),
    (r"VMTools|VGAuthService|vmvss|VMwareCAF.*|vmwTimeProvider", "VMware Tools service"),
    (r"xenfilt|xenpci|xenscsi|xenstub", "Xen PV filter driver"),
    (r"xenbus|xenbus_monitor|xenvbd|xennet6?|xenvif|xeniface|xencons", "Xen PV driver"),
    (r"xevtchn|xenevtchn|xenutil|xenv4v|xenhid|xenvkbd|xendisk", "Xen PV driver"),
    (r"xensvc|xenagent|XenPVInstall|xenlite|XenServiceManager", "Xen guest agent service"),
    (r"prl_.*|prlfs|prlmouse", "Parallels Tools driver"),
    (r"prltoolssvc|Parallels Tools Service|Parallels.*Service", "Parallels Tools service"),
    (r"VBoxMouse|VBoxSF|VBoxGuest", "VirtualBox Guest Additions driver"),
    (r"VBoxService", "VirtualBox Guest Additions service"),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), why) for p, why in DISABLE]


def reason(service: str) -> str | None:
    """Why `service` must be disabled on KVM, or None to keep it."""
    for pattern, why in _COMPILED:
        if pattern.fullmatch(service):
            return why
    return None


def without(names: Iterable[str], removed: set[str]) -> list[str]:
    """`names` less every entry in `removed` (names are compared ignoring case)."""
    return [n for n in names if n.lower() not in removed]


def provider_order(order: str, removed: set[str]) -> str:
    """A NetworkProvider ProviderOrder (comma-separated) without the removed providers."""
    return ",".join(without((p for p in order.split(",") if p.strip()), removed))


def disable_foreign(guest: WindowsGuest) -> None:
    with guest.edit_hive("SYSTEM") as hive:
        disabled = _disable_services(guest, hive)
        if disabled:
            _strip_class_filters(guest, hive, disabled)
            _strip_network_providers(guest, hive, disabled)


def _disable_services(guest: WindowsGuest, hive: HiveEditor) -> set[str]:
    base = rf"{guest.ccs}\Services"
    node = hive.node(base)
    if node is None:
        return set()
    disabled: set[str] = set()
    for name, _child in list(hive.subkeys(node)):
        why = reason(name)
        if why is None:
            continue
        path = rf"{base}\{name}"
        start = hive.get_int(path, "Start")
        if start is None:
            continue  # not a service: a stray key (Parameters of an uninstalled one ...)
        disabled.add(name.lower())
        if start == SERVICE_DISABLED:
            continue
        hive.set_value(path, "Start", SERVICE_DISABLED)
        guest.note(
            "services",
            f"disabled {name} ({why}; Start was {start})",
            rf"HKLM\SYSTEM\{path}",
        )
    return disabled


def _strip_class_filters(guest: WindowsGuest, hive: HiveEditor, disabled: set[str]) -> None:
    base = rf"{guest.ccs}\Control\Class"
    node = hive.node(base)
    if node is None:
        return
    for class_guid, _child in list(hive.subkeys(node)):
        path = rf"{base}\{class_guid}"
        for value_name in FILTER_VALUES:
            filters = hive.get(path, value_name)
            if not isinstance(filters, list):
                continue
            kept = without(filters, disabled)
            if kept == filters:
                continue
            if kept:
                hive.set_value(path, value_name, kept)
            else:
                hive.delete_value(path, value_name)
            gone = ", ".join(f for f in filters if f not in kept)
            guest.note(
                "services",
                f"removed {gone} from {value_name} of device class {class_guid}",
                rf"HKLM\SYSTEM\{path}",
            )


def _strip_network_providers(guest: WindowsGuest, hive: HiveEditor, disabled: set[str]) -> None:
    # A disabled network provider left in the order makes every UNC access wait for it.
    path = rf"{guest.ccs}\Control\NetworkProvider\Order"
    for value_name in ("ProviderOrder", "HwOrder"):
        order = hive.get_str(path, value_name)
        if order is None:
            continue
        kept = provider_order(order, disabled)
        if kept != order:
            hive.set_value(path, value_name, kept)
            guest.note(
                "services",
                f"network provider order {order!r} -> {kept!r}",
                rf"HKLM\SYSTEM\{path}",
            )
