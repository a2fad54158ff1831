"""A private OpenSSH server for the tests: on 127.0.0.1 and a free high port, with its own host
key, and one client key of its own in its authorized_keys; it never reads the real ~/.ssh or
/etc/ssh/sshd_config, and is killed when the test is done.

The tests hand vmshift the client key and a known_hosts file naming the server's key through
options (-io ssh-identity=, -io ssh-known-hosts=), and run it without SSH_AUTH_SOCK, so the
machine's own agent and keys play no part.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmshift.process import stop

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 15.0
# sshd wants its privilege separation directory; the Debian service makes it at boot.
PRIVSEP_DIR = Path("/run/sshd")


@dataclass(frozen=True)
class Sshd:
    port: int
    identity: Path  # the client's private key
    known_hosts: Path  # names the server's host key as [127.0.0.1]:PORT
    host_key: Path  # the server's public host key

    def uri(self, path: Path | str, user: str = "root") -> str:
        return f"ssh://{user}@127.0.0.1:{self.port}{path}"

    def options(self) -> list[str]:
        """What vmshift is given to log in with this server's key and trust its host key."""
        return [
            "-io",
            f"ssh-identity={self.identity}",
            "-io",
            f"ssh-known-hosts={self.known_hosts}",
        ]


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_banner(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            if s.recv(4).startswith(b"SSH-"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not answer on port {port}: {log.read_text()}")


@contextlib.contextmanager
def private_sshd(
    root: Path, key_options: str = "", extra_config: tuple[str, ...] = ()
) -> Iterator[Sshd]:
    """sshd -D with everything under root; skips the test where sshd is missing.

    key_options: what the authorized_keys line puts before the client's key (a forced
    command: `command="..."`); extra_config: more sshd_config lines."""
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("needs OpenSSH's sshd and ssh-keygen")
    root.mkdir(parents=True, exist_ok=True)
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    _keygen(host_key, "vmshift-test-host")
    _keygen(client_key, "vmshift-test-client")
    authorized = root / "authorized_keys"
    prefix = f"{key_options} " if key_options else ""
    authorized.write_text(prefix + client_key.with_suffix(".pub").read_text())
    port = _free_port()
    host_pub = host_key.with_suffix(".pub")
    known_hosts = root / "known_hosts"
    key_type, key_data = host_pub.read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_data}\n")
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {root / 'sshd.pid'}",
                "StrictModes no",
                "UsePAM no",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                *extra_config,
            ]
        )
        + "\n"
    )
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    log = root / "sshd.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stderr=err
        )
    try:
        _wait_for_banner(proc, port, log)
        yield Sshd(port, client_key, known_hosts, host_pub)
    finally:
        stop(proc)


def client_env() -> dict[str, str]:
    """The environment for a vmshift run against the private server: no agent of the user's."""
    return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
