"""A private libvirtd for the tests: its own sockets, config, pools and guests, gone afterwards.

The daemon runs unprivileged ("session" mode), which is what makes it private: every path it
uses comes from XDG_* variables we point into a temporary directory, so the tests neither need
nor touch a system libvirtd, /etc/libvirt or /var/lib/libvirt. As root the daemon is started as
uid 65534 (setpriv), since libvirtd run by root is always the system instance. The tests
connect as root through the socket path: qemu+unix:///session?socket=...

Guests it starts run under TCG as uid 65534; they need no /dev/kvm and no network.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

UNPRIVILEGED = 65534  # nobody
START_TIMEOUT = 30.0
# The daemon quits by itself after this long without clients, should a test run die hard.
IDLE_TIMEOUT = "600"


@dataclass
class PrivateLibvirtd:
    uri: str
    root: Path  # the daemon's private tree; world-traversable so the daemon's uid can use it
    uid: int
    login: tuple[str, str] | None = None  # (user, password) when the socket asks for one

    def connect(self) -> Any:
        import libvirt

        if self.login is None:
            return libvirt.open(self.uri)
        from vmshift.libvirt_binding import open_with_password

        user, password = self.login
        return open_with_password(
            libvirt, self.uri.replace("://", f"://{user}@", 1), password, readonly=False
        )

    def give(self, path: Path) -> None:
        """Hand a file or directory to the daemon's uid (qemu must open disks read-write)."""
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.uid)


def _libvirtd() -> str | None:
    return shutil.which("libvirtd") or shutil.which("libvirtd", path="/usr/sbin:/sbin")


def _ignore(_ctx: object, _err: object) -> None:
    pass


@contextlib.contextmanager
def private_libvirtd(
    sasl_login: tuple[str, str] | None = None, user: int = UNPRIVILEGED
) -> Iterator[PrivateLibvirtd]:
    """The daemon; with sasl_login (user, password) its socket asks for that login (SASL
    SCRAM-SHA-256, from a sasldb of its own: SASL_CONF_PATH points the daemon at it). Run by
    root, it runs as uid user (and its group of the same number, as nobody's)."""
    daemon = _libvirtd()
    if daemon is None:
        pytest.skip("libvirtd is not installed")
    try:
        import libvirt
    except ImportError:
        pytest.skip("the libvirt Python binding is not installed")
    libvirt.registerErrorHandler(_ignore, None)

    # Not under pytest's tmp_path: that is mode 0700 and the daemon's uid could not enter it.
    root = Path(tempfile.mkdtemp(prefix="vmshift-libvirtd-", dir="/tmp"))
    root.chmod(0o755)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "LC_ALL": "C",
    }
    for key in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        Path(env[key]).mkdir(mode=0o700)
    (root / "config" / "libvirt").mkdir()
    # Logs to files instead of a virtlogd the daemon would otherwise spawn and leave behind.
    (root / "config" / "libvirt" / "qemu.conf").write_text('stdio_handler = "file"\n')
    if sasl_login is not None:
        _require_sasl(root, env, *sasl_login)

    argv = [daemon, "--timeout", IDLE_TIMEOUT]
    uid = os.geteuid()
    if uid == 0:
        uid = user
        gid = pwd.getpwuid(uid).pw_gid
        argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
        for path in [root, *root.rglob("*")]:
            os.chown(path, uid, gid)
    socket = root / "run" / "libvirt" / "libvirt-sock"
    log = (root / "libvirtd.log").open("wb")
    proc = subprocess.Popen(
        argv, env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
    )
    server = PrivateLibvirtd(
        uri=f"qemu+unix:///session?socket={socket}", root=root, uid=uid, login=sasl_login
    )
    held = None
    try:
        _wait_until_ready(server, proc, root)
        # A connection held open for the fixture's life: the daemon's idle timeout must not
        # stop it while a long conversion has not yet come to use it.
        held = server.connect()
        yield server
    finally:
        if held is not None:
            with contextlib.suppress(libvirt.libvirtError):
                held.close()
        _stop(server, proc)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def dir_pool(server: PrivateLibvirtd, name: str) -> Iterator[tuple[Any, Path]]:
    """A defined, started directory pool in the daemon's tree, removed afterwards."""
    name = name.replace("[", "-").replace("]", "")
    path = server.root / name
    path.mkdir()
    server.give(path)
    conn = server.connect()
    xml = f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"
    pool = conn.storagePoolDefineXML(xml, 0)
    pool.create(0)
    try:
        yield pool, path
    finally:
        with contextlib.suppress(Exception):
            pool.destroy()
        pool.undefine()
        conn.close()


def _require_sasl(root: Path, env: dict[str, str], user: str, password: str) -> None:
    saslpasswd2 = shutil.which("saslpasswd2") or shutil.which("saslpasswd2", path="/usr/sbin")
    if saslpasswd2 is None:
        pytest.skip("saslpasswd2 is not installed (sasl2-bin)")
    sasl = root / "sasl"
    sasl.mkdir()
    db = sasl / "passwd.db"
    subprocess.run(
        [saslpasswd2, "-f", str(db), "-a", "libvirt", "-c", "-p", user],
        input=password.encode(),
        check=True,
        capture_output=True,
    )
    (sasl / "libvirt.conf").write_text(f"mech_list: scram-sha-256\nsasldb_path: {db}\n")
    (root / "config" / "libvirt" / "libvirtd.conf").write_text(
        'auth_unix_rw = "sasl"\nauth_unix_ro = "sasl"\n'
    )
    env["SASL_CONF_PATH"] = str(sasl)


def _wait_until_ready(server: PrivateLibvirtd, proc: subprocess.Popen[bytes], root: Path) -> None:
    import libvirt

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            log = (root / "libvirtd.log").read_text(errors="replace")
            raise RuntimeError(f"libvirtd exited with {proc.returncode}:\n{log}")
        try:
            server.connect().close()
            return
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _stop(server: PrivateLibvirtd, proc: subprocess.Popen[bytes]) -> None:
    import libvirt

    # Guests first: a qemu left behind would outlive the daemon.
    with contextlib.suppress(libvirt.libvirtError):
        conn = server.connect()
        for dom in conn.listAllDomains(0):
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
        conn.close()
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
