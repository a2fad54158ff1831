"""The P2V client's one SSH connection to the conversion server (OpenSSH's ssh, as virt-p2v).

A master connection (ControlMaster) carries everything: the server's commands (`vmshift
p2v-server hello|convert`) and, forwarded as remote Unix sockets, each disk's NBD export. One
TCP connection, so compression (`p2v.compress=`) and the traffic count cover all of it.

The server's host key is verified: against `p2v.hostkey=SHA256:...` when given (the key is
fetched with ssh-keyscan, compared, then pinned in a known_hosts file of the run's own), else
against the user's known_hosts; an unknown key is refused in one line. A password is given to
ssh through SSH_ASKPASS (a script in the run's directory reading a 0600 file), never on a
command line.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import VmshiftError
from vmshift.process import stop
from vmshift.sources.nbdkit import MAX_SOCKET_PATH, write_secret

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15  # seconds for TCP and the SSH handshake
ALIVE_INTERVAL = 5  # a dead link is noticed after ALIVE_INTERVAL * ALIVE_COUNT seconds
ALIVE_COUNT = 3
REMOTE_COMMAND = ("vmshift", "p2v-server")
CONTROL_SUFFIX = 17  # what ssh appends to ControlPath while it sets the socket up


class LinkError(VmshiftError):
    """The SSH connection to the conversion server failed or was refused."""


@dataclass(frozen=True)
class LinkSpec:
    server: str
    port: int
    user: str
    identity: Path | None = None
    password: str | None = None
    hostkey: str | None = None  # SHA256:...
    compress: bool = True
    known_hosts: Path | None = None  # None: the user's own (~/.ssh/known_hosts)

    @property
    def where(self) -> str:
        return f"{self.user}@{self.server}:{self.port}"


def fingerprint(key_b64: str) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob (base64, as in known_hosts)."""
    digest = hashlib.sha256(base64.b64decode(key_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def pin_host_key(spec: LinkSpec, directory: Path) -> tuple[Path, str]:
    """Fetch the server's host keys, keep the one p2v.hostkey names in a known_hosts file of
    our own; (that file, the fingerprint). LinkError when none matches."""
    proc = subprocess.run(
        ["ssh-keyscan", "-T", str(CONNECT_TIMEOUT), "-p", str(spec.port), spec.server],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    seen: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            seen[fingerprint(fields[2])] = line
    if not seen:
        raise LinkError(
            f"{spec.server}:{spec.port}: no SSH server answers (ssh-keyscan found no key)"
        )
    if spec.hostkey not in seen:
        raise LinkError(
            f"{spec.server}:{spec.port}: the server's host key is {', '.join(sorted(seen))}, "
            f"not {spec.hostkey} (p2v.hostkey=): refused",
        )
    known = directory / "known_hosts"
    known.write_text(seen[spec.hostkey] + "\n")
    return known, spec.hostkey


class SshLink:
    """A logged-in master connection; close() ends it (and every forward and command on it)."""

    def __init__(self, spec: LinkSpec, directory: Path) -> None:
        self.spec = spec
        self.directory = directory
        # ssh binds the control socket at this path plus ".XXXXXXXXXXXXXXXX" first, and a Unix
        # socket's path holds 107 bytes: a deep run directory gets a short one of its own.
        self.short_dir: Path | None = None
        self.control = directory / "ctl"
        if len(os.fsencode(self.control)) + CONTROL_SUFFIX > MAX_SOCKET_PATH:
            self.short_dir = Path(tempfile.mkdtemp(prefix="vmshift-ssh-", dir="/tmp"))
            self.control = self.short_dir / "ctl"
        self.master: subprocess.Popen[bytes] | None = None
        self.host_key = ""
        self.env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}

    def _options(self) -> list[str]:
        spec = self.spec
        opts = {
            "ControlPath": str(self.control),
            "ConnectTimeout": str(CONNECT_TIMEOUT),
            "ServerAliveInterval": str(ALIVE_INTERVAL),
            "ServerAliveCountMax": str(ALIVE_COUNT),
            "StrictHostKeyChecking": "yes",
            "ExitOnForwardFailure": "yes",
            "Compression": "yes" if spec.compress else "no",
            "LogLevel": "ERROR",
        }
        if spec.known_hosts is not None:
            opts["UserKnownHostsFile"] = str(spec.known_hosts)
            opts["GlobalKnownHostsFile"] = "/dev/null"
        if spec.identity is not None:
            opts["IdentityFile"] = str(spec.identity)
            opts["IdentitiesOnly"] = "yes"
        opts["BatchMode"] = "no" if spec.password is not None else "yes"
        argv = ["-p", str(spec.port), "-l", spec.user]
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        return argv

    def open(self) -> None:
        spec = self.spec
        if spec.hostkey is not None:
            known, self.host_key = pin_host_key(spec, self.directory)
            self.spec = spec = LinkSpec(**{**spec.__dict__, "known_hosts": known})
        env = dict(self.env)
        if spec.password is not None:
            secret = self.directory / "password"
            write_secret(secret, spec.password)
            askpass = self.directory / "askpass"
            askpass.write_text(f"#!/bin/sh\nexec cat {shlex.quote(str(secret))}\n")
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        errors = self.directory / "ssh.log"
        argv = ["ssh", "-M", "-N", *self._options(), spec.server]
        log.info("connecting: %s", shlex.join(argv))
        with errors.open("wb") as err:
            self.master = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + CONNECT_TIMEOUT + 30
        while not self._check():
            if self.master.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise self._refused(errors.read_text(errors="replace"))
            time.sleep(0.1)
        if not self.host_key:
            self.host_key = self._learned_key()

    def _refused(self, said: str) -> LinkError:
        lines = [line.strip() for line in said.splitlines() if line.strip()]
        text = " ".join(lines[-2:]) or "the connection ended"
        where = self.spec.where
        if "Host key verification failed" in said or "No ED25519 host key is known" in said:
            return LinkError(
                f"{where}: the server's host key is not known here: refused",
                hint="give p2v.hostkey=SHA256:... (the server's `ssh-keygen -lf` of its key) "
                "or add the key to known_hosts",
            )
        if "Permission denied" in said:
            return LinkError(f"{where}: login refused ({text})",
                             hint="check p2v.user=, p2v.identity= or p2v.password=")  # fmt: skip
        return LinkError(f"{where}: cannot connect: {text}")

    def _check(self) -> bool:
        proc = subprocess.run(
            ["ssh", "-S", str(self.control), "-O", "check", self.spec.server],
            capture_output=True, check=False,
        )  # fmt: skip
        return proc.returncode == 0

    def _learned_key(self) -> str:
        """The fingerprint of the key known_hosts holds for the server (shown in the UI)."""
        host = (
            self.spec.server if self.spec.port == 22 else f"[{self.spec.server}]:{self.spec.port}"
        )
        argv = ["ssh-keygen", "-F", host]
        if self.spec.known_hosts is not None:
            argv += ["-f", str(self.spec.known_hosts)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        for line in proc.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#"):
                return fingerprint(fields[2])
        return ""

    @property
    def alive(self) -> bool:
        return self.master is not None and self.master.poll() is None and self._check()

    def command(self, *words: str) -> list[str]:
        """The ssh command line running `vmshift p2v-server WORDS` over the master."""
        remote = shlex.join([*REMOTE_COMMAND, *words])
        return ["ssh", "-S", str(self.control), "-o", "ControlMaster=no", *self._options(),
                self.spec.server, remote]  # fmt: skip

    def forward(self, remote: str, local: Path) -> None:
        """Make remote (a Unix socket path on the server) lead to local over the master."""
        proc = subprocess.run(
            ["ssh", "-S", str(self.control), "-O", "forward", "-R", f"{remote}:{local}",
             self.spec.server],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            said = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise LinkError(
                f"{self.spec.where}: cannot forward {remote}: {said[0]}",
                hint="the server's sshd must allow forwarding (AllowStreamLocalForwarding yes, "
                "no 'restrict' or 'no-port-forwarding' on the key)",
            )

    def close(self) -> None:
        if self.master is not None:
            stop(self.master, grace=5)
            self.master = None
        self.control.unlink(missing_ok=True)
        if self.short_dir is not None:
            shutil.rmtree(self.short_dir, ignore_errors=True)
