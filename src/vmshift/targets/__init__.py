"""Targets: where the converted guest goes (-o). Each module holds one; TARGETS maps -o names."""

from __future__ import annotations

TARGETS: dict[str, str] = {
    "local": "vmshift.targets.local:LocalTarget",
    "libvirt": "vmshift.targets.libvirt:LibvirtTarget",
    "qemu": "vmshift.targets.qemu:QemuTarget",
    "rhv": "vmshift.targets.rhv:RhvTarget",
    "null": "vmshift.targets.null:NullTarget",
}
