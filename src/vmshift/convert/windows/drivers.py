"""VirtIO drivers for Windows: copy them in, register the boot disk driver, queue the installs.

The drivers come from a virtio-win tree (virtio_tree.py), in the folder for the guest's release
and architecture (osdirs.py). All of them are copied to %SystemRoot%\\Drivers\\VirtIO, which is
added to DevicePath so Plug and Play finds them for every new device. Only the disk driver
must work before Windows runs: it is copied to System32\\drivers and registered as a boot-start
driver bound to the virtio PCI ids (bootdriver.py). The rest are installed by pnputil at first
boot, with the QEMU guest agent when the tree has its installer.

Without drivers for the guest the conversion still goes on, on emulated devices, and says so.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path

from vmshift.convert.windows import bootdriver
from vmshift.convert.windows.context import WindowsGuest
from vmshift.convert.windows.guestfiles import Placement, put_files
from vmshift.convert.windows.osdirs import arch_dir, candidates, describe, guest_kind, parse_build
from vmshift.convert.windows.virtio_tree import DriverFiles, VirtioTree, open_tree
from vmshift.errors import ConversionError
from vmshift.guest.registry import ExpandSz

ENV = "VIRTIO_WIN"
DEFAULT_DIR = Path("/usr/share/virtio-win")
WIN_DIR = r"%SystemRoot%\Drivers\VirtIO"
CURRENT_VERSION = r"Microsoft\Windows\CurrentVersion"
DEFAULT_DEVICE_PATH = r"%SystemRoot%\inf"
BLOCK_DRIVERS = {"virtio-blk": "viostor", "virtio-scsi": "vioscsi"}
# fwcfg drives the fw_cfg device; qemufwcfg is a stub for the same device, and Windows fails
# to start either when both are installed.
CONFLICTS = {"qemufwcfg": "fwcfg"}


def source_path(option: str | None, environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The virtio-win tree to use, and whether the user named it (then it must exist)."""
    given = option or environ.get(ENV)
    if given:
        return Path(given), True
    iso = DEFAULT_DIR / "virtio-win.iso"
    return (iso if iso.is_file() else DEFAULT_DIR), False


def install(guest: WindowsGuest) -> None:
    path, given = source_path(guest.opts.virtio_win, guest.opts.environ)
    os_ = guest.os
    kind = guest_kind(os_.product_variant, os_.product_name)
    build = parse_build(os_.windows.build if os_.windows else "")
    what = describe(os_.major_version, os_.minor_version, build, kind, os_.arch)
    if not path.exists():
        if given:
            source = "--virtio-win" if guest.opts.virtio_win else ENV
            raise ConversionError(
                f"{source} {path}: no such directory or ISO",
                hint="point it at a virtio-win ISO or its unpacked tree",
            )
        guest.warn(f"no VirtIO drivers: {path} does not exist (install virtio-win)")
        return
    arch = arch_dir(os_.arch)
    releases = candidates(os_.major_version, os_.minor_version, build, kind)
    with open_tree(path, guest.scratch) as tree:
        chosen = without_conflicts(tree.index.select(releases, arch) if arch else [])
        if not chosen:
            guest.warn(f"no VirtIO drivers for {what} in {path}")
            return
        agent = tree.index.agent(arch) if arch else None
        boot = _boot_choice(guest, chosen)
        inf_data = _copy_in(guest, tree, chosen, agent, boot)
    guest.drivers_installed.extend(d.driver for d in chosen)
    if boot is not None:
        _register_boot_driver(guest, boot, inf_data)
    _add_device_path(guest)
    _queue_installs(guest, agent)


def without_conflicts(chosen: list[DriverFiles]) -> list[DriverFiles]:
    names = {d.driver.lower() for d in chosen}
    return [d for d in chosen if CONFLICTS.get(d.driver.lower()) not in names]


def driver_dir(guest: WindowsGuest) -> str:
    return guest.mkdir(f"{guest.systemroot}/Drivers/VirtIO")


def _copy_in(
    guest: WindowsGuest,
    tree: VirtioTree,
    chosen: list[DriverFiles],
    agent: str | None,
    boot: str | None,
) -> bytes:
    """Copy the drivers (and agent) to the VirtIO folder and the boot driver to System32\\drivers,
    all at once; the boot driver's INF, as it now is in the VirtIO folder (b"" if it has none)."""
    members = [f for d in chosen for f in d.files] + ([agent] if agent else [])
    local = tree.fetch(members)
    # By the name each gets in the guest; a name two drivers share ends up with the last one's.
    files = {posixpath.basename(m).lower(): local[m] for m in members}
    directory = driver_dir(guest)
    placements = [Placement(directory, name, file) for name, file in files.items()]
    if boot is not None:
        drivers_dir = guest.mkdir(f"{guest.systemroot}/System32/drivers")
        placements.append(Placement(drivers_dir, f"{boot}.sys", files[f"{boot}.sys"]))
    targets = put_files(guest.g, placements, guest.scratch)
    for d in chosen:
        guest.note("drivers", f"copied {d.driver} ({d.osdir}) to {WIN_DIR}", directory)
    if agent:
        guest.note("drivers", f"copied the QEMU guest agent installer {agent}", directory)
    if boot is None:
        return b""
    guest.note("drivers", f"installed the boot disk driver {boot}.sys", targets[-1])
    inf = files.get(f"{boot}.inf")
    if inf is not None:
        return inf.read_bytes()
    # Not in the tree: an INF an earlier conversion left in the folder is the one there now.
    earlier = guest.case_path(f"{directory}/{boot}.inf")
    data: bytes = guest.g.read_file(earlier) if earlier else b""
    return data


def _boot_choice(guest: WindowsGuest, chosen: list[DriverFiles]) -> str | None:
    """viostor or vioscsi, as --block-driver asks; the other one when only it is there."""
    have = {
        posixpath.basename(f).lower()
        for d in chosen
        if d.driver.lower() in BLOCK_DRIVERS.values()
        for f in d.files
    }
    wanted = BLOCK_DRIVERS.get(guest.opts.block_driver, "viostor")
    if f"{wanted}.sys" in have:
        return wanted
    other = next((n for n in BLOCK_DRIVERS.values() if n != wanted and f"{n}.sys" in have), None)
    if other:
        guest.warn(f"no {wanted} driver for this guest: using {other} instead")
    else:
        guest.warn("no VirtIO disk driver (viostor or vioscsi) for this guest")
    return other


def _register_boot_driver(guest: WindowsGuest, driver: str, inf_data: bytes) -> None:
    arch = arch_dir(guest.os.arch) or "amd64"
    pre_win8 = (guest.os.major_version, guest.os.minor_version) < (6, 2)
    with guest.edit_hive("SYSTEM") as hive:
        key = bootdriver.register_service(hive, guest.ccs, driver)
        guest.note("drivers", f"registered {driver} as a boot-start driver", rf"HKLM\SYSTEM\{key}")
        if pre_win8:
            keys = bootdriver.register_critical_devices(hive, guest.ccs, driver)
            where = "CriticalDeviceDatabase"
        else:
            pkg = bootdriver.DriverPackage.of(driver, f"{driver}.inf", inf_data, arch)
            keys = bootdriver.register_driver_database(hive, driver, pkg)
            where = "DriverDatabase"
        guest.note(
            "drivers",
            f"bound the virtio disk controller to {driver} in {where} ({len(keys)} keys)",
            rf"HKLM\SYSTEM\{keys[0]}",
        )
    guest.boot_driver = driver


def with_entry(device_path: str, entry: str) -> str:
    """DevicePath with entry appended, unless it is there already (any case)."""
    entries = [e for e in device_path.split(";") if e.strip()]
    if any(e.strip().lower() == entry.lower() for e in entries):
        return ";".join(entries)
    return ";".join([*entries, entry])


def _add_device_path(guest: WindowsGuest) -> None:
    with guest.edit_hive("SOFTWARE") as hive:
        current = hive.get_str(CURRENT_VERSION, "DevicePath") or DEFAULT_DEVICE_PATH
        updated = with_entry(current, WIN_DIR)
        if updated != current:
            # REG_EXPAND_SZ: Windows must expand %SystemRoot% when it reads it.
            hive.set_value(CURRENT_VERSION, "DevicePath", ExpandSz(updated))
            guest.note(
                "drivers",
                f"DevicePath {current!r} -> {updated!r}",
                rf"HKLM\SOFTWARE\{CURRENT_VERSION}",
            )


def install_drivers_script(major: int) -> str | None:
    """The first-boot batch script that installs every copied driver, or None before Vista
    (XP and 2003 have no pnputil; they search DevicePath when they find the new devices)."""
    if major < 6:
        return None
    if major >= 10:
        command = f'pnputil /add-driver "{WIN_DIR}\\*.inf" /install'
    else:
        command = f'pnputil -i -a "{WIN_DIR}\\*.inf"'
    return "\r\n".join(
        [
            "@echo off",
            "rem Install the VirtIO drivers vmshift copied in, for every virtio device found.",
            command,
            "",
        ]
    )


def install_agent_script(msi_name: str) -> str:
    log = r"%SystemRoot%\Temp\vmshift-qemu-ga.log"
    return "\r\n".join(
        [
            "@echo off",
            "rem The QEMU guest agent: clean shutdown, filesystem freeze and guest facts.",
            f'msiexec /i "{WIN_DIR}\\{msi_name}" /qn /norestart /l*v "{log}"',
            "",
        ]
    )


def _queue_installs(guest: WindowsGuest, agent: str | None) -> None:
    script = install_drivers_script(guest.os.major_version)
    if script:
        guest.firstboot_scripts.append(("install VirtIO drivers", script))
    if agent:
        msi = posixpath.basename(agent).lower()
        guest.firstboot_scripts.append(("install QEMU guest agent", install_agent_script(msi)))
