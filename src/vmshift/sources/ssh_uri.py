"""virt-v2v's `-i vmx -it ssh` argument: `ssh://[USER@]HOST[:PORT]/PATH/GUEST.vmx`.

PATH is the VMX's absolute path on the SSH host, e.g. /vmfs/volumes/datastore1/web01/web01.vmx,
with reserved characters percent-encoded (a space is %20). Without USER the local user name is
used, as ssh does; the port defaults to 22.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from vmshift.errors import UsageError

DEFAULT_PORT = 22


@dataclass(frozen=True)
class SshUri:
    user: str | None  # None: the local user name
    host: str
    port: int
    path: PurePosixPath  # absolute, on the SSH host

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts files name this server: HOST, or [HOST]:PORT off port 22."""
        return self.host if self.port == DEFAULT_PORT else f"[{self.host}]:{self.port}"


def parse_ssh_uri(uri: str) -> SshUri:
    """Parse an ssh:// URI naming a file; UsageError saying what is wrong with it."""
    where = "-i vmx -it ssh"
    parts = urlsplit(uri)
    if parts.scheme.lower() != "ssh" or not parts.netloc:
        raise UsageError(f"{where}: {uri}: expected ssh://[USER@]HOST[:PORT]/PATH/GUEST.vmx")
    if parts.password is not None:
        raise UsageError(
            f"{where}: a password in the URI is refused (it would show in process lists and "
            "logs); put it in a file and give -ip FILE"
        )
    try:
        port = DEFAULT_PORT if parts.port is None else parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise UsageError(f"{where}: {uri}: the port is not a number from 1 to 65535")
    host = parts.hostname
    if not host:
        raise UsageError(f"{where}: {uri}: no host")
    if parts.query or parts.fragment:
        raise UsageError(f"{where}: {uri}: a ? or # in the path must be written %3F or %23")
    text = unquote(parts.path)
    path = PurePosixPath(text)
    if not text.startswith("/") or text.endswith("/") or ".." in path.parts or "\0" in text:
        raise UsageError(
            f"{where}: {uri}: the path must be the VMX file's absolute path on the host, "
            "e.g. ssh://root@esxi/vmfs/volumes/datastore1/GUEST/GUEST.vmx"
        )
    user = unquote(parts.username) if parts.username else None
    return SshUri(user, host, port, path)
