"""An SSH login to the host of a source's files, and SFTP access to its small files (paramiko).

The host key is checked against known_hosts (-io ssh-known-hosts=FILE, else ~/.ssh/known_hosts
and /etc/ssh/ssh_known_hosts, the files ssh and nbdkit's ssh plugin read): an unknown or
changed key refuses the host, never adds it. Authentication is what ssh would try without
asking: the agent, -io ssh-identity=FILE and ~/.ssh/id_*, then the password from -ip FILE.
Every failure is one SourceError naming where (the URI); the password is never in one.
"""

from __future__ import annotations

import errno
import logging
import stat
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from vmshift.errors import SourceError, UsageError
from vmshift.formats.vmdk_descriptor import Readable
from vmshift.sources.ssh_uri import SshUri

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # an unreachable host fails in seconds, not minutes
AUTH_TIMEOUT = 30.0
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


@dataclass(frozen=True)
class SshLogin:
    uri: SshUri
    user: str
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts and SYSTEM_KNOWN_HOSTS
    identity: Path | None = None  # a private key tried before ~/.ssh/id_*
    password: str | None = None

    def known_hosts_shown(self) -> str:
        return str(self.known_hosts) if self.known_hosts else "~/.ssh/known_hosts"


class _UnknownHostKey(Exception):
    pass


def connect(login: SshLogin, where: str) -> paramiko.SSHClient:
    """A logged-in SSH client, or SourceError saying what to do."""
    import paramiko

    class Refuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: object, hostname: str, key: paramiko.PKey) -> None:
            raise _UnknownHostKey

    uri = login.uri
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(Refuse())
    if login.known_hosts is not None:
        try:
            client.load_host_keys(str(login.known_hosts))
        except OSError as exc:
            raise UsageError(
                f"-io ssh-known-hosts={login.known_hosts}: cannot read: {exc.strerror}"
            ) from None
    else:
        client.load_system_host_keys()  # ~/.ssh/known_hosts, if there is one
        if SYSTEM_KNOWN_HOSTS.is_file():
            client.load_system_host_keys(str(SYSTEM_KNOWN_HOSTS))
    name, known = uri.known_hosts_name, login.known_hosts_shown()
    try:
        client.connect(
            uri.host,
            port=uri.port,
            username=login.user,
            password=login.password,
            key_filename=str(login.identity) if login.identity else None,
            timeout=CONNECT_TIMEOUT,
            banner_timeout=CONNECT_TIMEOUT,
            auth_timeout=AUTH_TIMEOUT,
        )
    except _UnknownHostKey:
        client.close()
        port = f"-p {uri.port} " if uri.port != 22 else ""
        raise SourceError(
            f"{where}: the host key of {name} is unknown (not in {known}); check it and add "
            f"it (ssh-keyscan {port}{uri.host} >> {known}, or log in once with ssh)"
        ) from None
    except paramiko.BadHostKeyException:
        client.close()
        raise SourceError(
            f"{where}: the host key of {name} has CHANGED since it was recorded in {known} "
            "(a reinstalled host, or someone in between); if the change is expected, remove "
            f"the old key (ssh-keygen -R '{name}' -f {known}) and add the new one"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise _auth_failed(login, where) from None
    except (paramiko.SSHException, EOFError) as exc:
        client.close()
        if "authentication" in str(exc).lower():  # "No authentication methods available"
            raise _auth_failed(login, where) from None
        raise SourceError(f"{where}: SSH to {uri.host} port {uri.port} failed: {exc}") from None
    except OSError as exc:
        client.close()
        errors = getattr(exc, "errors", None)  # paramiko: one error per address of the host
        reasons = {e.strerror or str(e) for e in errors.values()} if errors else set()
        why = ", ".join(sorted(reasons)) or exc.strerror or str(exc) or type(exc).__name__
        raise SourceError(f"{where}: cannot connect to {uri.host} port {uri.port}: {why}") from None
    return client


def _auth_failed(login: SshLogin, where: str) -> SourceError:
    tried = "the password from -ip" if login.password else "no password (-ip FILE gives one)"
    return SourceError(
        f"{where}: authentication as {login.user} failed (keys: ssh-agent, "
        f"{'-io ssh-identity, ' if login.identity else ''}~/.ssh/id_*; {tried}); add your "
        "public key to the host's authorized_keys (ESXi: /etc/ssh/keys-root/authorized_keys)"
    )


class SftpFiles:
    """The VmFiles of an SSH host, read over SFTP; connects at the first use."""

    def __init__(self, login: SshLogin, where: str) -> None:
        self._login = login
        self._where = where
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def _session(self) -> paramiko.SFTPClient:
        import paramiko

        if self._sftp is None:
            self._client = connect(self._login, self._where)
            try:
                self._sftp = self._client.open_sftp()
            except (paramiko.SSHException, EOFError) as exc:
                raise SourceError(f"{self._where}: the host offers no SFTP: {exc}") from None
        return self._sftp

    def _lost(self, exc: Exception) -> SourceError:
        why = str(exc) or type(exc).__name__
        return SourceError(f"{self._where}: the SSH connection failed: {why}")

    def stat(self, path: PurePath) -> paramiko.SFTPAttributes:
        """The file's attributes; OSError (FileNotFoundError ...) as a local stat raises it."""
        import paramiko

        try:
            return self._session().stat(str(path))
        except (paramiko.SSHException, EOFError) as exc:
            raise self._lost(exc) from None

    def read_small(self, path: PurePath, limit: int) -> bytes:
        if stat.S_ISDIR(self.stat(path).st_mode or 0):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        with self.open(path) as f:
            return f.read(limit)

    def open(self, path: PurePath) -> AbstractContextManager[Readable]:
        import paramiko

        try:
            return self._session().open(str(path), "rb")
        except (paramiko.SSHException, EOFError) as exc:
            raise self._lost(exc) from None

    def is_file(self, path: PurePath) -> bool:
        try:
            return stat.S_ISREG(self.stat(path).st_mode or 0)
        except OSError:
            return False

    def identity(self, path: PurePath) -> str:
        import paramiko

        try:
            return self._session().normalize(str(path))
        except OSError:
            return str(path)
        except (paramiko.SSHException, EOFError) as exc:
            raise self._lost(exc) from None

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None
