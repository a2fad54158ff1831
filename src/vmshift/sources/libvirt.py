"""-i libvirt [-ic URI] NAME: a guest defined in a libvirt daemon on this host.

The guest must be shut off: reading the disks of a running guest copies a filesystem in the
middle of being written, and the result may not boot. The daemon is asked only for the
domain's XML (and the paths of pool volumes); the disks are then read as local files, so the
URI must name a daemon on this machine.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from vmshift.errors import SourceError
from vmshift.formats.libvirt_domain import parse_domain
from vmshift.libvirt_binding import import_libvirt, open_with_password
from vmshift.model.vm import SourceVM
from vmshift.sources.base import SourceOptions
from vmshift.sources.libvirtxml import vm_from_domain

_UUID = re.compile(r"[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


def _libvirt() -> Any:
    return import_libvirt(SourceError, "-i libvirt")


def is_local_uri(uri: str) -> bool:
    host = urlsplit(uri).hostname
    return not host or host in ("localhost", "127.0.0.1", "::1")


class LibvirtSource:
    def __init__(self, opts: SourceOptions) -> None:
        if len(opts.args) != 1:
            raise SourceError(
                "-i libvirt takes exactly one argument, the guest's name",
                hint="e.g. vmshift convert -i libvirt -ic qemu:///system GUEST -o local -os DIR",
            )
        self._name = opts.args[0]
        self._uri = opts.conn
        self._password = opts.password  # -ip: for a daemon that asks (SASL)
        self._conn: Any = None

    def _connect(self) -> Any:
        libvirt = _libvirt()
        where = self._uri or "the default libvirt connection"
        if self._uri is not None and not is_local_uri(self._uri):
            raise SourceError(
                f"{self._uri}: the guest's disks must be readable on this host",
                hint="run vmshift on the libvirt host, or copy the disks and use -i libvirtxml",
            )
        try:
            # Read-only: the source is never modified, and this is all a source needs.
            if self._password is not None:
                return open_with_password(libvirt, self._uri, self._password, readonly=True)
            return libvirt.openReadOnly(self._uri)
        except libvirt.libvirtError as exc:
            hint = "is libvirtd running, and is -ic right?"
            if self._password is not None:
                hint = "is libvirtd running, and are -ic and the password in -ip right?"
            raise SourceError(
                f"{where}: cannot connect to libvirt: {exc.get_error_message()}", hint=hint
            ) from None

    def _lookup(self, libvirt: Any) -> Any:
        try:
            return self._conn.lookupByName(self._name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise SourceError(f"{self._name}: {exc.get_error_message()}") from None
        if _UUID.fullmatch(self._name):
            try:
                return self._conn.lookupByUUIDString(self._name)
            except libvirt.libvirtError:
                pass
        raise SourceError(
            f"{self._name}: no such guest on {self._conn.getURI()}",
            hint="'virsh list --all' shows the guests libvirt knows",
        )

    def open(self, workdir: Path) -> SourceVM:
        libvirt = _libvirt()
        self._conn = self._connect()
        dom = self._lookup(libvirt)
        try:
            if dom.isActive():
                raise SourceError(
                    f"{self._name}: the guest is running; shut it down first",
                    hint=f"virsh shutdown {self._name}, and wait until it is shut off",
                )
            xml = cast(str, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError as exc:
            raise SourceError(f"{self._name}: {exc.get_error_message()}") from None
        domain = parse_domain(xml, f"{self._name} (libvirt)")
        return vm_from_domain(
            domain,
            base_dir=Path("/"),
            source_file=f"libvirt guest {self._name}",
            resolve_volume=lambda pool, vol: self._volume_path(libvirt, pool, vol),
        )

    def _volume_path(self, libvirt: Any, pool: str, volume: str) -> str:
        try:
            vol = self._conn.storagePoolLookupByName(pool).storageVolLookupByName(volume)
            return cast(str, vol.path())
        except libvirt.libvirtError as exc:
            raise SourceError(
                f"{self._name}: volume {volume} in pool {pool}: {exc.get_error_message()}"
            ) from None

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a broken connection needs no closing
                conn.close()
