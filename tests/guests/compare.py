"""Compare `vmshift inspect --json` output with what a guest builder recorded."""

from __future__ import annotations

from typing import Any

from tests.guests.manifest import BuiltGuest, ExpectedOS


def _check(problems: list[str], what: str, got: Any, want: Any) -> None:
    if got != want:
        problems.append(f"{what}: got {got!r}, want {want!r}")


def compare_os(got: dict[str, Any], want: ExpectedOS) -> list[str]:
    """Every difference between one reported OS and the builder's record, as readable lines."""
    p: list[str] = []
    for name in (
        "type", "distro", "product_name", "major_version", "minor_version", "arch",
        "hostname", "package_format", "package_manager", "firmware",
    ):  # fmt: skip
        _check(p, name, got[name], getattr(want, name))

    fs_types = {fs["device"]: fs["type"] for fs in got["filesystems"]}
    got_mounts = {mp: fs_types.get(dev) for mp, dev in got["mountpoints"].items()}
    _check(p, "mountpoints", got_mounts, want.mountpoints)

    app_names = {a["name"] for a in got["applications"]}
    missing = sorted(set(want.applications) - app_names)
    if missing:
        p.append(f"applications missing: {missing}")

    kinds = sorted({sw["kind"] for sw in got["foreign_software"]})
    _check(p, "foreign_software kinds", kinds, sorted(set(want.foreign_software)))

    if want.linux is not None:
        linux = got["linux"]
        if linux is None:
            return [*p, "no linux details reported"]
        kernels = {k["version"]: k for k in linux["kernels"]}
        _check(p, "kernel versions", sorted(kernels), sorted(k.version for k in want.linux.kernels))
        for wk in want.linux.kernels:
            gk = kernels.get(wk.version)
            if gk is None:
                continue
            _check(p, f"kernel {wk.version} virtio_blk", gk["virtio_blk"], wk.virtio_blk)
            _check(p, f"kernel {wk.version} virtio_net", gk["virtio_net"], wk.virtio_net)
            _check(
                p, f"kernel {wk.version} initramfs_virtio_blk",
                gk["initramfs_virtio_blk"], wk.initramfs_virtio_blk,
            )  # fmt: skip
        _check(p, "bootloader", linux["bootloader"]["kind"], want.linux.bootloader)
        got_net = sorted(
            (c["path"], c["kind"], tuple(c["interfaces"])) for c in linux["network_configs"]
        )
        want_net = sorted((c.path, c.kind, c.interfaces) for c in want.linux.network_configs)
        _check(p, "network_configs", got_net, want_net)

    if want.windows is not None:
        win = got["windows"]
        if win is None:
            return [*p, "no windows details reported"]
        _check(p, "systemroot", win["systemroot"], want.windows.systemroot)
        _check(p, "build", win["build"], want.windows.build)
        _check(
            p, "current_control_set", win["current_control_set"], want.windows.current_control_set
        )
        drivers = {d["name"].lower() for d in win["boot_drivers"]}
        missing_drv = sorted({d.lower() for d in want.windows.boot_drivers} - drivers)
        if missing_drv:
            p.append(f"boot drivers missing: {missing_drv}")
        _check(p, "hibernated", win["hibernated"], want.windows.hibernated)
        _check(p, "fast_startup", win["fast_startup"], want.windows.fast_startup)
    return p


def compare_report(report: dict[str, Any], guest: BuiltGuest) -> list[str]:
    oses = report["operating_systems"]
    if len(oses) != len(guest.oses):
        return [f"{guest.name}: {len(oses)} operating systems found, want {len(guest.oses)}"]
    problems = []
    # Roots come sorted by device; builders list OSes in the same order.
    for got, want in zip(oses, guest.oses, strict=True):
        problems += [f"{guest.name} {got['root']}: {line}" for line in compare_os(got, want)]
    return problems
