"""Inspection: what operating systems a guest's disks hold, and the facts conversion needs.

Runs on an open GuestSession. Each root is mounted read-only in the appliance, examined, and
unmounted again, so a dual-boot guest is reported root by root.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmshift.blockio.imageinfo import probe_image
from vmshift.errors import InspectionError, NoOperatingSystemError
from vmshift.guest import foreign, linux_facts, linux_inspection, windows_facts, windows_inspection
from vmshift.guest.luks import AskKey, LuksKey, unlock_volumes
from vmshift.guest.probes import Probes, blkid_tags, try_call
from vmshift.guest.registry import Hive
from vmshift.guest.root_facts import RootFacts, WindowsRegistry
from vmshift.guest.session import GuestSession, open_session
from vmshift.model.inspection import (
    Application,
    DiskInfo,
    Filesystem,
    ForeignSoftware,
    InspectionReport,
    LinuxDetails,
    OperatingSystem,
    OsIdentity,
    WindowsDetails,
)

log = logging.getLogger(__name__)

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
# The OperatingSystem fields that are the root's facts as inspection found them.
IDENTITY = tuple(f.name for f in dataclasses.fields(OsIdentity))


def inspect_images(
    paths: Sequence[Path], *, keys: Sequence[LuksKey] = (), ask_key: AskKey | None = None
) -> InspectionReport:
    """Open the disks of one guest read-only and inspect every operating system on them
    (LUKS volumes opened with keys, or asked for through ask_key)."""
    images = [probe_image(p) for p in paths]
    with open_session(images, readonly=True) as session:
        unlock_volumes(session, keys, ask_key)
        oses = inspect_session(session)
    return InspectionReport(
        disks=tuple(DiskInfo(str(i.path), i.display_format, i.virtual_size) for i in images),
        accelerator=session.accelerator,
        operating_systems=oses,
    )


def inspect_session(session: GuestSession) -> tuple[OperatingSystem, ...]:
    """Every OS on the session's disks. A plain Debian- or RHEL-family guest is inspected by
    linux_inspection, a plain Windows guest by windows_inspection (seconds faster under TCG);
    any other by libguestfs's inspect_os."""
    g = session.g
    probes = session.probes
    # Windows hives, downloaded once for all of inspection.
    with tempfile.TemporaryDirectory(prefix="vmshift-hives-", dir=session.scratch) as tmp:
        hives = Path(tmp)
        own = linux_inspection.inspect_linux(g, probes) or windows_inspection.inspect_windows(
            g, probes, hives
        )
        if own is not None:
            return (_inspect_root(session, own, probes, hives),)
        # A source whose reads began to fail is not handed to inspect_os: on a half-read disk
        # it crawls through failing reads for minutes before it gives up.
        if (unreadable := session.unreadable()) is not None:
            raise unreadable
        log.info("inspection: asking libguestfs's inspect_os")
        try:
            roots = sorted(g.inspect_os())
        except RuntimeError as exc:
            raise session.unreadable() or InspectionError(f"inspection failed: {exc}") from exc
        if not roots:
            raise session.unreadable() or _no_os_error(session)
        return tuple(
            _inspect_root(session, _libguestfs_facts(g, root), probes, hives) for root in roots
        )


def _libguestfs_facts(g: Any, root: str) -> RootFacts:
    """What inspect_os found of one root."""
    kind = g.inspect_get_type(root)
    return RootFacts(
        root=root,
        type=kind,
        distro=g.inspect_get_distro(root),
        product_name=g.inspect_get_product_name(root),
        product_variant=g.inspect_get_product_variant(root),
        major_version=g.inspect_get_major_version(root),
        minor_version=g.inspect_get_minor_version(root),
        arch=g.inspect_get_arch(root),
        hostname=g.inspect_get_hostname(root),
        package_format=g.inspect_get_package_format(root),
        package_manager=g.inspect_get_package_management(root),
        osinfo=g.inspect_get_osinfo(root),
        mountpoints=dict(g.inspect_get_mountpoints(root)),
        filesystems=tuple(g.inspect_get_filesystems(root)),
        windows=_libguestfs_registry(g, root) if kind == "windows" else None,
    )


def _libguestfs_registry(g: Any, root: str) -> WindowsRegistry | None:
    """Where inspect_os found a Windows root's registry; None where it could not tell."""
    try:
        return WindowsRegistry(
            systemroot=g.inspect_get_windows_systemroot(root),
            current_control_set=g.inspect_get_windows_current_control_set(root),
            system_hive=g.inspect_get_windows_system_hive(root),
            software_hive=g.inspect_get_windows_software_hive(root),
        )
    except RuntimeError as exc:
        log.info("%s: no registry to read: %s", root, exc)
        return None


def _no_os_error(session: GuestSession) -> NoOperatingSystemError:
    names = ", ".join(d.label for d in session.disks)
    try:
        filesystems = {
            dev: kind for dev, kind in session.g.list_filesystems().items() if kind != "unknown"
        }
    except RuntimeError:
        filesystems = {}
    if not filesystems:
        return NoOperatingSystemError(
            f"{names}: no partitions or filesystems found: not a guest disk, or an empty one"
        )
    found = ", ".join(f"{dev} ({kind})" for dev, kind in sorted(filesystems.items()))
    return NoOperatingSystemError(
        f"{names}: no operating system found (filesystems: {found})",
        hint="give all the disks of the guest; an OS split over disks needs every one",
    )


def mount_os(g: Any, mountpoints: dict[str, str], *, readonly: bool = True) -> None:
    """Mount every filesystem of an OS (mountpoint -> device) at its mountpoint."""
    mount = g.mount_ro if readonly else g.mount
    # Mount parents before children: "/" before "/boot" before "/boot/efi".
    for mp, dev in sorted(mountpoints.items(), key=lambda item: len(item[0])):
        try:
            mount(dev, mp)
        except RuntimeError as exc:
            log.info("cannot mount %s on %s: %s", dev, mp, exc)


def _filesystems(
    g: Any, devices: Sequence[str], mountpoints: dict[str, str], probes: Probes
) -> tuple[Filesystem, ...]:
    mounted_at = {dev: mp for mp, dev in mountpoints.items()}
    result = []
    for dev in sorted(devices):
        kind, label, uuid = _identity(g, dev, probes)
        size = used = None
        mp = mounted_at.get(dev)
        stat = try_call(g.statvfs, mp) if mp else None
        if stat:
            size = stat["blocks"] * stat["frsize"]
            used = (stat["blocks"] - stat["bfree"]) * stat["frsize"]
        else:
            size = try_call(g.blockdev_getsize64, dev)
        result.append(
            Filesystem(
                device=dev,
                type=kind or "unknown",
                label=label or None,
                uuid=uuid or None,
                size=size,
                used=used,
            )
        )
    return tuple(result)


def _identity(g: Any, dev: str, probes: Probes) -> tuple[str | None, str | None, str | None]:
    """A filesystem's type, label and UUID: blkid's, else the three vfs_* calls'."""
    tags = blkid_tags(g, dev, probes)
    if tags.get("TYPE"):
        label: str | None = tags.get("LABEL", "")
        if label and "\\" in label:  # its export format escapes spaces and quotes
            label = try_call(g.vfs_label, dev)
        return tags["TYPE"], label, tags.get("UUID", "")
    return try_call(g.vfs_type, dev), try_call(g.vfs_label, dev), try_call(g.vfs_uuid, dev)


def _applications(g: Any, facts: RootFacts, hives: Path) -> tuple[Application, ...]:
    if not facts.inspect_os and facts.windows is not None:
        copy = windows_facts.hive_copy(g, facts.root, facts.windows.software_hive, hives)
        return () if copy is None else windows_inspection.applications(Hive(copy))
    if not facts.inspect_os:
        own = linux_inspection.applications(g, facts.package_format)
        if own is None:
            log.info(
                "cannot list applications: the %s database cannot be read", facts.package_format
            )
        return tuple(sorted(own or (), key=lambda a: a.name.lower()))
    try:
        raw = g.inspect_list_applications2(facts.root)
    except RuntimeError as exc:
        log.info("cannot list applications: %s", exc)
        return ()
    apps = []
    for app in raw:
        name = app["app2_name"]
        if facts.type == "windows" and app.get("app2_display_name"):
            name = app["app2_display_name"]
        apps.append(
            Application(
                name=name,
                version=app.get("app2_version", ""),
                release=app.get("app2_release", ""),
                epoch=int(app.get("app2_epoch", 0)),
                publisher=app.get("app2_publisher", ""),
            )
        )
    return tuple(sorted(apps, key=lambda a: a.name.lower()))


def firmware_of(g: Any, filesystems: Sequence[str], probes: Probes | None = None) -> str:
    """UEFI when a disk holding this OS has an EFI System Partition, else BIOS."""
    probes = {} if probes is None else probes
    gpt_disks = set()
    for dev in filesystems:
        # A partition's probe names the table it is in: an MBR one needs no more asking.
        scheme = blkid_tags(g, dev, probes).get("PART_ENTRY_SCHEME")
        if scheme == "dos":
            continue
        whole = try_call(g.part_to_dev, dev)
        if whole and (scheme == "gpt" or _partition_table(g, whole, probes) == "gpt"):
            gpt_disks.add(whole)
    for disk in sorted(gpt_disks):
        for part in g.part_list(disk):
            guid = try_call(g.part_get_gpt_type, disk, part["part_num"])
            if isinstance(guid, str) and guid.upper() == ESP_GUID:
                return "uefi"
    return "bios"


def _partition_table(g: Any, disk: str, probes: Probes) -> str | None:
    """gpt, msdos...: blkid's answer when it is one of the two, else part_get_parttype's
    (which runs parted: a few times slower)."""
    table = blkid_tags(g, disk, probes).get("PTTYPE")
    if table in ("gpt", "dos"):
        return "msdos" if table == "dos" else "gpt"
    result: str | None = try_call(g.part_get_parttype, disk)
    return result


def _inspect_root(
    session: GuestSession, facts: RootFacts, probes: Probes, hives: Path
) -> OperatingSystem:
    """The OperatingSystem record of one root; Windows hives are read from copies in
    `hives`."""
    g = session.g
    root, os_type = facts.root, facts.type
    log.info("inspecting %s (%s)", root, os_type)
    mount_os(g, facts.mountpoints)
    try:
        fs_devices = list(facts.filesystems)
        n_filesystems = len(fs_devices)
        # LVM logical volumes do not map back to a partition: look at every PV's disk instead.
        if any(dev.startswith("/dev/mapper/") or dev.count("/") > 2 for dev in fs_devices):
            fs_devices += list(try_call(g.pvs) or [])
        firmware = firmware_of(g, fs_devices, probes)
        applications = _applications(g, facts, hives)
        linux: LinuxDetails | None = None
        windows: WindowsDetails | None = None
        foreign_sw: list[ForeignSoftware] = []
        if os_type == "linux":
            linux = LinuxDetails(
                kernels=linux_facts.list_kernels(g),
                bootloader=linux_facts.find_bootloader(g, firmware),
                network_configs=linux_facts.find_network_configs(g),
            )
            foreign_sw += foreign.linux_from_packages(applications)
            foreign_sw += linux_facts.foreign_files(g, foreign.LINUX_FILES)
        elif os_type == "windows":
            services: list[str] = []
            if facts.windows is not None:
                windows, services = windows_facts.windows_details(
                    g, root, facts.windows, facts.product_name, hives
                )
            foreign_sw += foreign.windows_from_apps(applications)
            foreign_sw += foreign.windows_from_services(services)
        return OperatingSystem(
            **{name: getattr(facts, name) for name in IDENTITY},
            firmware=firmware,
            mountpoints=dict(sorted(facts.mountpoints.items())),
            filesystems=_filesystems(g, fs_devices[:n_filesystems], facts.mountpoints, probes),
            applications=applications,
            foreign_software=tuple(foreign_sw),
            linux=linux,
            windows=windows,
        )
    finally:
        g.umount_all()
