"""Registry entries that let Windows boot from a virtio disk before any driver is installed.

Windows loads boot-start drivers from the SYSTEM hive alone, and binds a newly found disk
controller to a driver only if the hive already maps the controller's PCI id to it; otherwise
the boot stops with INACCESSIBLE_BOOT_DEVICE before Plug and Play could install anything. So:

- Services\\<drv>: a boot-start kernel driver in the "SCSI miniport" group, as the driver's own
  INF would register it (with Parameters\\PnpInterface, which tells the storage port driver the
  miniport handles PCI devices).
- Windows before 8: CriticalDeviceDatabase\\pci#ven_1af4&dev_...: PCI id -> service and class.
- Windows 8 and later no longer read that database; the same mapping lives in DriverDatabase:
  DeviceIds\\PCI\\<id> names an INF, DriverInfFiles\\<inf> names its active package, and the
  package's Descriptors/Configurations name the service.

The PCI ids are virtio's own: vendor 1AF4, device 1001 (block) / 1004 (SCSI) for legacy and
transitional devices, 1042 / 1048 for virtio 1.0 ones, which QEMU gives subsystem 1100.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from vmshift.guest.registry import ExpandSz, HiveEditor

SCSI_ADAPTER_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
SERVICE_KERNEL_DRIVER = 1
SERVICE_BOOT_START = 0
SERVICE_ERROR_NORMAL = 1
PNP_INTERFACE_PCI_BUS = "5"  # INTERFACE_TYPE PCIBus


@dataclass(frozen=True)
class PciDevice:
    device: str  # PCI device id, hex
    subsys: str  # subsystem id + subsystem vendor, hex
    rev: str

    def hardware_ids(self) -> list[str]:
        """The ids Windows matches, most specific first: with and without the subsystem."""
        base = f"VEN_1AF4&DEV_{self.device}"
        return [f"{base}&SUBSYS_{self.subsys}&REV_{self.rev}", f"{base}&REV_{self.rev}"]


BOOT_DEVICES: dict[str, tuple[PciDevice, ...]] = {
    "viostor": (PciDevice("1001", "00021AF4", "00"), PciDevice("1042", "11001AF4", "01")),
    "vioscsi": (PciDevice("1004", "00081AF4", "00"), PciDevice("1048", "11001AF4", "01")),
}


def hardware_ids(driver: str) -> list[str]:
    return [hwid for dev in BOOT_DEVICES[driver] for hwid in dev.hardware_ids()]


def image_path(driver: str) -> str:
    # Relative to %SystemRoot%: the form every NT version's boot loader resolves.
    return f"System32\\drivers\\{driver}.sys"


def register_service(hive: HiveEditor, ccs: str, driver: str) -> str:
    key = rf"{ccs}\Services\{driver}"
    hive.set_value(key, "Type", SERVICE_KERNEL_DRIVER)
    hive.set_value(key, "Start", SERVICE_BOOT_START)
    hive.set_value(key, "ErrorControl", SERVICE_ERROR_NORMAL)
    hive.set_value(key, "Group", "SCSI miniport")
    hive.set_value(key, "ImagePath", ExpandSz(image_path(driver)))
    hive.set_value(rf"{key}\Parameters\PnpInterface", PNP_INTERFACE_PCI_BUS, 1)
    return key


def critical_device_key(ccs: str, hwid: str) -> str:
    return rf"{ccs}\Control\CriticalDeviceDatabase\pci#{hwid.lower()}"


def register_critical_devices(hive: HiveEditor, ccs: str, driver: str) -> list[str]:
    keys = []
    for hwid in hardware_ids(driver):
        key = critical_device_key(ccs, hwid)
        hive.set_value(key, "Service", driver)
        hive.set_value(key, "ClassGUID", SCSI_ADAPTER_CLASS)
        keys.append(key)
    return keys


@dataclass(frozen=True)
class DriverPackage:
    """How DriverDatabase names a driver package: by INF file, package and configuration."""

    inf: str  # viostor.inf
    package: str  # viostor.inf_amd64_<hash>, as the driver store names package folders
    configuration: str

    @classmethod
    def of(cls, driver: str, inf_name: str, inf_data: bytes, arch: str) -> DriverPackage:
        digest = hashlib.sha256(inf_data).hexdigest()[:16]
        inf = inf_name.lower()
        return cls(inf=inf, package=f"{inf}_{arch}_{digest}", configuration=f"{driver}_inst")


def package_version(class_guid: str) -> bytes:
    """The package's Version record: a tag, the device setup class, driver date and version
    (zero: Plug and Play only needs the class to accept the package at boot)."""
    tag = b"\x00\xff\x09\x00" + bytes(4)
    return tag + uuid.UUID(class_guid).bytes_le + bytes(24)


def register_driver_database(hive: HiveEditor, driver: str, pkg: DriverPackage) -> list[str]:
    db = "DriverDatabase"
    inf_key = rf"{db}\DriverInfFiles\{pkg.inf}"
    hive.set_value(inf_key, "", [pkg.package])
    hive.set_value(inf_key, "Active", pkg.package)
    hive.set_value(inf_key, "Configurations", [pkg.configuration])
    pkg_key = rf"{db}\DriverPackages\{pkg.package}"
    hive.set_value(pkg_key, "Version", package_version(SCSI_ADAPTER_CLASS))
    config_key = rf"{pkg_key}\Configurations\{pkg.configuration}"
    hive.set_value(config_key, "ConfigFlags", 0)
    hive.set_value(config_key, "Service", driver)
    keys = [inf_key, pkg_key, config_key]
    for hwid in hardware_ids(driver):
        # Plug and Play looks a new device's hardware ids up here to find its INF.
        device_key = rf"{db}\DeviceIds\PCI\{hwid}"
        hive.set_value(device_key, pkg.inf, b"\x01\xff\x00\x00")
        descriptor_key = rf"{pkg_key}\Descriptors\PCI\{hwid}"
        hive.set_value(descriptor_key, "Configuration", pkg.configuration)
        keys += [device_key, descriptor_key]
    return keys
