"""Facts about an inspected Windows guest read from its registry and system volume.

The hives are downloaded from the appliance into inspection's temporary directory and parsed
by hivex; the guest's system volume must be mounted (read-only is enough) at /.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vmshift.guest.probes import try_call
from vmshift.guest.registry import Hive
from vmshift.guest.root_facts import WindowsRegistry
from vmshift.model.inspection import WindowsDetails, WindowsDriver

log = logging.getLogger(__name__)

SERVICE_BOOT_START = 0
# Kernel and filesystem drivers; services of other types do not load at boot.
DRIVER_TYPES = {1, 2}
# hiberfil.sys starts with one of these while it holds a hibernated (or Fast Startup) image.
HIBERNATION_SIGNATURES = {b"hibr", b"HIBR", b"wake", b"WAKE"}

CURRENT_VERSION = r"Microsoft\Windows NT\CurrentVersion"


def case_path(g: Any, path: str, test: Any = None) -> str | None:
    """The real path of `path` on a case-insensitive NTFS volume when `test` (g.exists by
    default; g.is_dir, g.is_file) holds for it, else None."""
    real = try_call(g.case_sensitive_path, path)
    return str(real) if real and try_call(test or g.exists, real) else None


def hive_copy(g: Any, dev: str, guest_path: str, directory: Path) -> Path | None:
    """A local copy of a hive of the root on `dev` (mounted at /), downloaded into
    `directory` the first time it is asked for; None when it cannot be downloaded."""
    local = directory / f"{dev}{guest_path}".strip("/").replace("/", "_")
    if local.exists():
        return local
    try:
        g.download(guest_path, str(local))
    except RuntimeError as exc:
        log.info("cannot download %s: %s", guest_path, exc)
        local.unlink(missing_ok=True)
        return None
    return local


def _driver_file(systemroot: str, image_path: str, name: str) -> str:
    """Turn a service ImagePath into a path on the system volume."""
    path = image_path.replace("\\", "/")
    if not path:
        return f"{systemroot}/System32/drivers/{name}.sys"
    lowered = path.lower()
    for prefix in ("\\systemroot\\", "/systemroot/", "%systemroot%/"):
        if lowered.startswith(prefix.replace("\\", "/")):
            return f"{systemroot}/{path[len(prefix) :]}"
    if lowered.startswith("/??/") or lowered.startswith("//?/"):
        path = path[4:]
        lowered = path.lower()
    if len(path) > 2 and path[1] == ":":
        return path[2:]
    if lowered.startswith("system32/"):
        return f"{systemroot}/{path}"
    return path if path.startswith("/") else f"{systemroot}/{path}"


def boot_drivers(g: Any, system: Hive, ccs: str, systemroot: str) -> tuple[WindowsDriver, ...]:
    services = system.node(rf"{ccs}\Services")
    if services is None:
        return ()
    drivers = []
    for name, node in system.subkeys(services):
        if system.value(node, "Start") != SERVICE_BOOT_START:
            continue
        if system.value(node, "Type") not in DRIVER_TYPES:
            continue
        group = system.value(node, "Group")
        image = system.value(node, "ImagePath")
        image_path = image if isinstance(image, str) else ""
        file_path = _driver_file(systemroot, image_path, name)
        drivers.append(
            WindowsDriver(
                name=name,
                group=group if isinstance(group, str) else "",
                image_path=image_path,
                file_present=case_path(g, file_path) is not None,
            )
        )
    return tuple(sorted(drivers, key=lambda d: d.name.lower()))


def service_names(system: Hive, ccs: str) -> list[str]:
    services = system.node(rf"{ccs}\Services")
    return [] if services is None else [name for name, _node in system.subkeys(services)]


def is_hibernated(g: Any) -> bool:
    path = case_path(g, "/hiberfil.sys")
    if path is None:
        return False
    try:
        if g.filesize(path) < 4:
            return False
        header: bytes = g.pread(path, 4, 0)
    except RuntimeError:
        return False
    return header in HIBERNATION_SIGNATURES


def windows_details(
    g: Any, root: str, registry: WindowsRegistry, product_name: str, hives: Path
) -> tuple[WindowsDetails | None, list[str]]:
    """Windows facts for root (mounted at /) and the names of all services, for foreign tools.
    The hives are read from copies in `hives` (see hive_copy)."""
    system_copy = hive_copy(g, root, registry.system_hive, hives)
    software_copy = hive_copy(g, root, registry.software_hive, hives)
    if system_copy is None or software_copy is None:
        return None, []
    system, software = Hive(system_copy), Hive(software_copy)
    ccs, systemroot = registry.current_control_set, registry.systemroot
    build = (
        software.get_str(CURRENT_VERSION, "CurrentBuildNumber")
        or software.get_str(CURRENT_VERSION, "CurrentBuild")
        or ""
    )
    power = system.get_int(rf"{ccs}\Control\Session Manager\Power", "HiberbootEnabled")
    details = WindowsDetails(
        systemroot=systemroot,
        product_name=product_name,
        build=build,
        current_control_set=ccs,
        boot_drivers=boot_drivers(g, system, ccs, systemroot),
        hibernated=is_hibernated(g),
        fast_startup=power == 1,
    )
    return details, service_names(system, ccs)
