"""virt-v2v's -ic URIs for VMware: `esx://[USER@]HOST[:PORT]/[?no_verify=1]` for an ESXi host,
`vpx://[USER@]VCENTER[:PORT]/DATACENTER[/CLUSTER]/HOST[?no_verify=1]` for a host through vCenter.

A user such as administrator@vsphere.local is written `administrator%40vsphere.local`. The
default user is root for esx:// and administrator@vsphere.local for vpx://, the port 443.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from vmshift.errors import UsageError

SCHEMES = ("esx", "vpx")
DEFAULT_USERS = {"esx": "root", "vpx": "administrator@vsphere.local"}


@dataclass(frozen=True)
class VsphereUri:
    scheme: str  # esx or vpx
    user: str
    host: str
    port: int
    no_verify: bool  # ?no_verify=1: do not check the server's certificate
    datacenter: str | None = None  # vpx: the inventory path, DATACENTER/[CLUSTER/]HOST
    cluster: str | None = None
    esx_host: str | None = None

    @property
    def server(self) -> str:
        """HOST[:PORT] as shown to the user (no password, no user)."""
        return self.host if self.port == 443 else f"{self.host}:{self.port}"


def is_vsphere_uri(uri: str | None) -> bool:
    return uri is not None and urlsplit(uri).scheme.lower() in SCHEMES


def parse_vsphere_uri(uri: str) -> VsphereUri:
    """Parse an esx:// or vpx:// URI; UsageError naming -ic when it is not one."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UsageError(f"-ic {uri}: not an esx:// or vpx:// URI")
    if parts.password is not None:
        raise UsageError(
            f"-ic {_shown(uri)}: a password in the URI is refused (it would show in process "
            "lists and logs)",
            hint="put it in a file and give -ip FILE",
        )
    try:
        port = parts.port or 443
    except ValueError:
        raise UsageError(f"-ic {uri}: the port is not a number") from None
    host = parts.hostname
    if not host:
        raise UsageError(f"-ic {uri}: no host")
    query = parse_qs(parts.query)
    no_verify = query.get("no_verify", ["0"])[-1] == "1"
    user = unquote(parts.username) if parts.username else DEFAULT_USERS[scheme]
    path = [unquote(p) for p in parts.path.split("/") if p]
    if scheme == "esx":
        if path:
            raise UsageError(f"-ic {uri}: esx:// takes no path (esx://[USER@]HOST/)")
        return VsphereUri(scheme, user, host, port, no_verify)
    if len(path) not in (2, 3):
        raise UsageError(
            f"-ic {uri}: vpx:// needs the host's place in vCenter: "
            "vpx://[USER@]VCENTER/DATACENTER[/CLUSTER]/HOST"
        )
    cluster = path[1] if len(path) == 3 else None
    return VsphereUri(scheme, user, host, port, no_verify, path[0], cluster, path[-1])


def _shown(uri: str) -> str:
    """uri with its password replaced, for messages."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
