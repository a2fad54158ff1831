"""-i vmx -it ssh ssh://[USER@]HOST[:PORT]/vmfs/volumes/DATASTORE/GUEST/GUEST.vmx: a VMware
guest on an ESXi host (or any SSH server), read where it lies.

The VMX and the VMDK descriptors are read over SFTP (ssh_session.py) and checked exactly as a
local VMX is (vmx.py). No disk is copied first: each disk's flat extent (GUEST-flat.vmdk) is
served by nbdkit's ssh plugin, read-only, as an NBD export on a unix socket in the work
directory, so inspection and conversion fetch only the blocks they read and the copy only what
the converted overlay needs. The password (-ip FILE) reaches nbdkit in a 0600 file. A --resume
opens the source again on the kept work directory: the same sockets, checked by identity().

Only flat disks are read over SSH, which is what ESXi keeps: one FLAT or VMFS extent
(createType vmfs, monolithicFlat ...). A snapshot (delta) disk, a sparse VMDK or a disk of
several extents is refused in one line: qemu would need every file of the chain or the
extents side by side, and an NBD export serves one file. Consolidate the snapshots, or copy the
VM's files and use -i vmx without -it ssh.
"""

from __future__ import annotations

import getpass
from pathlib import Path, PurePath

from vmshift.errors import DiskImageError, SourceError, UsageError
from vmshift.formats.vmdk_descriptor import SECTOR
from vmshift.model.vm import DiskEndpoint
from vmshift.sources.base import SourceOptions
from vmshift.sources.nbdkit import NbdkitServers, export_size, write_secret
from vmshift.sources.ssh_session import CONNECT_TIMEOUT, SftpFiles, SshLogin
from vmshift.sources.ssh_uri import parse_ssh_uri
from vmshift.sources.vmx_files import CheckedDisk

KNOWN_HOSTS_OPTION = "ssh-known-hosts"
IDENTITY_OPTION = "ssh-identity"
FLAT_KINDS = ("FLAT", "VMFS")
# nbdkit's retry filter: a dropped SSH connection is reopened, waiting 1, 2, 4 ... 32 s.
RETRIES = 6
COPY = "copy the VM's files and use -i vmx without -it ssh"


class SshTransport:
    """The VM's files on an SSH host (see the module docstring)."""

    def __init__(self, opts: SourceOptions) -> None:
        self.display = opts.args[0]
        self.source_file = opts.args[0]
        self._uri = parse_ssh_uri(opts.args[0])
        self.vmx_path = self._uri.path
        self._login = SshLogin(
            uri=self._uri,
            user=self._uri.user or getpass.getuser(),
            known_hosts=_option_file(opts, KNOWN_HOSTS_OPTION),
            identity=_option_file(opts, IDENTITY_OPTION),
            password=opts.password,
        )
        self._files = SftpFiles(self._login, self.display)
        self._servers = NbdkitServers()
        self._served: list[PurePath] = []  # the flat files nbdkit serves

    @property
    def files(self) -> SftpFiles:
        return self._files

    def accept(self, disk: CheckedDisk, where: str) -> None:
        top = disk.chain[0]
        desc = top.desc
        if len(disk.chain) > 1 or desc.has_parent:
            raise DiskImageError(
                f"{where}: {top.path} is a snapshot (delta) disk, which is not read over SSH; "
                f"consolidate (or delete) the VM's snapshots, or {COPY}"
            )
        if desc.embedded or len(desc.extents) != 1 or desc.extents[0].kind not in FLAT_KINDS:
            what = "sparse" if desc.embedded else f"{len(desc.extents)}-extent"
            if not desc.embedded and len(desc.extents) == 1:
                what = desc.extents[0].kind
            raise DiskImageError(
                f"{where}: {top.path} is a {desc.create_type} VMDK ({what}); over SSH only "
                f"flat disks (one FLAT or VMFS extent, as ESXi keeps them) are read; {COPY}"
            )

    def expose(self, disk: CheckedDisk, workdir: Path, name: str, where: str) -> DiskEndpoint:
        layer = disk.chain[0]
        extent, file = layer.desc.extents[0], layer.extent_files[0]
        assert file is not None  # a FLAT or VMFS extent names its file (accept())
        size = extent.sectors * SECTOR
        offset = (extent.offset or 0) * SECTOR
        label = f"{where}: {file}"
        try:
            have = self._files.stat(file).st_size or 0
        except OSError as exc:
            raise DiskImageError(f"{label}: cannot read: {exc.strerror}") from None
        if have < offset + size:
            raise DiskImageError(
                f"{label}: holds {have} bytes, the descriptor says {offset + size} (truncated?)"
            )
        plugin = ["ssh", f"host={self._uri.host}", f"port={self._uri.port}"]
        plugin += [f"user={self._login.user}", f"path={file}", f"timeout={CONNECT_TIMEOUT:.0f}"]
        # No ~/.ssh/config: nbdkit logs in exactly as the SFTP session did.
        plugin += ["config=", "verify-remote-host=true"]
        if self._login.known_hosts is not None:
            plugin.append(f"known-hosts={self._login.known_hosts}")
        if self._login.identity is not None:
            plugin.append(f"identity={self._login.identity}")
        if self._login.password is not None:
            plugin.append(f"password=+{self._password_file(workdir)}")
        plugin += [f"retries={RETRIES}", "retry-delay=1", "retry-exponential=yes"]
        filters = ["retry"]
        if offset or have != size:  # serve only the extent's bytes
            filters.append("offset")
            plugin += [f"offset={offset}", f"range={size}"]
        sock = workdir / f"ssh-{name}.sock"
        uri = self._servers.serve(sock, plugin, label, filters, count_reads=True)
        self._served.append(file)
        served = export_size(sock, label)
        if served != size:
            raise SourceError(f"{label}: nbdkit serves {served} bytes, not {size}")
        return DiskEndpoint(uri=uri, format="raw", virtual_size=size)

    def _password_file(self, workdir: Path) -> Path:
        path = workdir / "ssh-password"
        if not path.exists():
            write_secret(path, self._login.password or "")
        return path

    def identity(self) -> tuple[str, ...]:
        """ReopenableSource.identity(): the VMX and the served flat files, each with the size
        and modification time the host reports."""
        found = []
        for path in [self.vmx_path, *self._served]:
            try:
                st = self._files.stat(path)
            except OSError as exc:
                raise SourceError(f"{self.display}: {path}: cannot read: {exc.strerror}") from None
            found.append(f"{path} {st.st_size} {st.st_mtime}")
        return tuple(found)

    def fetched(self) -> dict[str, int]:
        """Bytes read over SSH per disk (RemoteSource)."""
        return self._servers.fetched()

    def lost(self) -> SourceError | None:
        """The host stopped answering and a disk's reads failed after every retry."""
        retried = f"each read was tried {RETRIES + 1} times over about {2**RETRIES - 1} s"
        return self._servers.lost(self.display, retried)

    def close(self) -> None:
        self._servers.close()
        self._files.close()


def _option_file(opts: SourceOptions, key: str) -> Path | None:
    value = opts.options.get(key)
    if value is None:
        return None
    path = Path(value).absolute()
    if not path.is_file():
        raise UsageError(f"-io {key}={value}: no such file")
    return path
