"""Import the libvirt binding once, quietly, with our own error when it is missing."""

from __future__ import annotations

from typing import Any

from vmshift.errors import VmshiftError


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error to stderr; we raise ours instead."""


def import_libvirt(error: type[VmshiftError], option: str) -> Any:
    """The libvirt module, or `error` naming the option that needs it."""
    try:
        import libvirt
    except ImportError as exc:
        raise error(
            f"{option} needs the libvirt Python binding", hint="install python3-libvirt"
        ) from exc
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)
    return libvirt
