"""Import the libvirt binding once, quietly, with our own error when it is missing."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

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


def open_with_password(libvirt: Any, uri: str | None, password: str, *, readonly: bool) -> Any:
    """Connect to uri answering the daemon's password prompts with password (virt-v2v's -ip):
    SASL or an esx:// login asks for a user name (the URI's, else the one the daemon proposes)
    and a passphrase. Raises libvirt.libvirtError like libvirt.open()."""
    user = urlsplit(uri).username if uri else None

    def answer(credentials: list[list[Any]], _data: object) -> int:
        for cred in credentials:
            kind = cred[0]
            if kind == libvirt.VIR_CRED_AUTHNAME:
                cred[4] = user or cred[3] or ""
            elif kind in (libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT):
                cred[4] = password
            else:
                return -1
        return 0

    kinds = [libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT]
    flags = libvirt.VIR_CONNECT_RO if readonly else 0
    return libvirt.openAuth(uri, [kinds, answer, None], flags)
