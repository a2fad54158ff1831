"""Refuse guests that conversion would damage; warn about those that may not come up right.

Refused (ConversionError, nothing is written): a hibernated Windows, including one shut down
with Fast Startup on, which hibernates its kernel session. Resuming it on KVM would restore a
kernel that knows nothing of the new drivers and registry, and ntfs-3g refuses to write to such
a volume anyway; the user has to boot it on the source and shut it down fully.

Warned (the conversion goes on, the final report lists them): things that leave part of the
guest unconverted or make the first boot need a human, but do not damage it -
- BitLocker volumes: copied as they are, still encrypted; the system volume's TPM protector
  fails on new hardware, so Windows asks for the recovery key.
- dynamic (LDM) disks: copied block for block, but their volumes are not converted.
- Group Policy that restricts device installation: the first-boot driver install fails.
- security software known to block drivers installed from outside, or first-boot scripts.
- Fast Startup enabled while the last shutdown was a full one: fine now, but the next shutdown
  of the source copy would hibernate again.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from vmshift.convert.windows.partitions import partition_entries
from vmshift.errors import ConversionError
from vmshift.model.inspection import OperatingSystem

if TYPE_CHECKING:
    from vmshift.convert.windows.context import WindowsGuest

BITLOCKER_TYPES = {"bitlocker", "crypto_bitlocker"}
LDM_MBR_ID = 0x42
LDM_GPT_TYPES = {
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",  # LDM metadata
    "AF9B60A0-1431-4F62-BC68-3311714A69AD",  # LDM data
}
DEVICE_INSTALL_POLICY = r"Policies\Microsoft\Windows\DeviceInstall\Restrictions"
# Policy values that stop Windows from installing drivers for a new device.
BLOCKING_POLICIES = {
    "DenyUnspecified": "installation of devices not explicitly allowed is denied",
    "DenyDeviceIDs": "installation of listed device IDs is denied",
    "DenyDeviceClasses": "installation of listed device classes is denied",
    "DenyAll": "installation of all devices is denied",
}
SERVICE_DISABLED = 4

# Security products whose self-protection or boot-time drivers are known to block drivers
# added offline or first-boot installers (service name patterns, full match ignoring case).
SECURITY_SOFTWARE: list[tuple[str, str]] = [
    (r"SepMasterService|SmcService|SRTSP|SymEFASI|SymEvent", "Symantec Endpoint Protection"),
    (r"McShield|mfehidk|mfefirek|mfeavfk|masvc|macmnsvc", "McAfee / Trellix"),
    (r"ntrtscan|TmListen|tmcomm|TMBMServer|tmactmon|tmevtmgr", "Trend Micro"),
    (r"SAVService|SophosED|Sophos Agent|hmpalert|SAVOnAccess", "Sophos"),
    (r"CSAgent|CSFalconService", "CrowdStrike Falcon"),
    (r"CbDefense|carbonblackk|parity", "Carbon Black"),
    (r"SentinelAgent|SentinelMonitor", "SentinelOne"),
    (r"AVP|klif|kneps", "Kaspersky"),
    (r"ekrn|eamonm|ehdrv", "ESET"),
]


def refuse_or_warn(guest: WindowsGuest) -> None:
    refuse_hibernated(guest.os)
    details = guest.os.windows
    if details is not None and details.fast_startup:
        guest.warn(
            "Fast Startup is on: this copy was shut down fully and converts safely, but turn "
            "it off (powercfg /h off) before converting the guest again"
        )
    _warn_volumes(guest)
    _warn_policies(guest)
    _warn_security_software(guest)


def refuse_hibernated(os: OperatingSystem) -> None:
    """Raise when inspection found the guest hibernated.

    Needs only inspection's facts, so the converter calls it before mounting the system volume
    read-write, which ntfs-3g refuses on a hibernated volume with a less helpful message.
    """
    details = os.windows
    if details is None or not details.hibernated:
        return
    if details.fast_startup:
        raise ConversionError(
            f"{os.product_name} was shut down with Fast Startup on, which hibernates "
            "Windows instead of stopping it: converting it would lose data",
            hint=(
                "boot the guest on its source, turn Fast Startup off (powercfg /h off) or run "
                "'shutdown /s /t 0', then convert again"
            ),
        )
    raise ConversionError(
        f"{os.product_name} is hibernated: converting it would lose its session "
        "and could corrupt its disk",
        hint="resume the guest on its source, shut Windows down fully "
        "('shutdown /s /t 0'), then convert again",
    )


def partition_kinds(g: Any) -> dict[str, str]:
    """Partitions that are BitLocker volumes ("bitlocker") or parts of dynamic disks ("ldm")."""
    kinds: dict[str, str] = {}
    for part, entry in partition_entries(g).items():
        if entry.gpt_type in LDM_GPT_TYPES or entry.mbr_id == LDM_MBR_ID:
            kinds[part] = "ldm"
        elif entry.fstype.lower() in BITLOCKER_TYPES:
            kinds[part] = "bitlocker"
    return kinds


def _warn_volumes(guest: WindowsGuest) -> None:
    kinds = partition_kinds(guest.g)
    encrypted = sorted(p for p, k in kinds.items() if k == "bitlocker")
    if encrypted:
        # The system volume is mounted, so it was readable: these are other volumes, or the
        # volume libguestfs unlocked with a key (the root is then a device-mapper device).
        system = (
            ", including the system volume," if guest.os.root.startswith("/dev/mapper/") else ""
        )
        guest.warn(
            f"BitLocker-encrypted volumes ({', '.join(encrypted)}){system} are copied still "
            "encrypted: Windows will ask for their recovery keys if TPM unlocking fails on KVM"
        )
    dynamic = sorted(p for p, k in kinds.items() if k == "ldm")
    if dynamic:
        guest.warn(
            f"dynamic-disk (LDM) partitions ({', '.join(dynamic)}) are copied as they are; "
            "their volumes are not converted"
        )


def _warn_policies(guest: WindowsGuest) -> None:
    with guest.read_hive("SOFTWARE") as software:
        blocked = [
            why
            for name, why in BLOCKING_POLICIES.items()
            if software.get_int(DEVICE_INSTALL_POLICY, name) == 1
        ]
    if blocked:
        guest.warn(
            "Group Policy restricts device installation (" + "; ".join(blocked) + "): the "
            "VirtIO drivers may fail to install at first boot; lift the policy "
            rf"(HKLM\SOFTWARE\{DEVICE_INSTALL_POLICY}) before converting"
        )


def security_products(services: dict[str, int | None]) -> list[str]:
    """Products of SECURITY_SOFTWARE with a service not disabled, by name, each once."""
    found: list[str] = []
    for name, start in services.items():
        if start == SERVICE_DISABLED:
            continue
        for pattern, product in SECURITY_SOFTWARE:
            if re.fullmatch(pattern, name, re.IGNORECASE) and product not in found:
                found.append(product)
    return found


def _warn_security_software(guest: WindowsGuest) -> None:
    with guest.read_hive("SYSTEM") as system:
        base = rf"{guest.ccs}\Services"
        node = system.node(base)
        services = (
            {}
            if node is None
            else {
                name: system.get_int(rf"{base}\{name}", "Start") for name, _ in system.subkeys(node)
            }
        )
    for product in security_products(services):
        guest.warn(
            f"{product} is installed: its self-protection may block the drivers and first-boot "
            "scripts vmshift adds; if the guest does not come up, disable it before converting"
        )
