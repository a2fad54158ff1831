"""The P2V client's SSH link against the lab's real sshd (no conversion): what the UI's "Test
connection" shows, a password login, and host keys that are not the server's refused in one
line, before anything is sent."""

from __future__ import annotations

import dataclasses
import fcntl
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.p2v_lab import (
    LOCAL_PROFILE,
    PROFILE,
    USER,
    P2VServer,
    loop_device,
    p2v_server,
)
from vmshift import __version__
from vmshift.p2v.client import test_connection as connection_test
from vmshift.p2v.settings import P2VSettings
from vmshift.p2v.ssh_link import LinkError

PASSWORD = "p2v-lab-Secret-1"


@pytest.fixture(scope="module")
def server() -> Iterator[P2VServer]:
    with p2v_server(None, password=PASSWORD) as lab:
        yield lab


def _settings(server: P2VServer, **changes: object) -> P2VSettings:
    base = P2VSettings(server="127.0.0.1", port=server.sshd.port, user=USER,
                       identity=str(server.sshd.identity), hostkey=server.hostkey)  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_connection_test_shows_the_server(server: P2VServer) -> None:
    info = connection_test(_settings(server))
    assert info.version == __version__
    assert info.user == USER
    assert info.host_key == server.hostkey
    assert [p.name for p in info.profiles] == [PROFILE, LOCAL_PROFILE]
    assert [p.output for p in info.profiles] == ["rhv", "local"]
    assert info.profiles[0].storage == str(server.export)


def test_a_password_login(server: P2VServer) -> None:
    info = connection_test(_settings(server, identity=None, password=PASSWORD))
    assert info.user == USER


def test_a_wrong_password_is_one_line(server: P2VServer) -> None:
    with pytest.raises(LinkError, match=r"login refused"):
        connection_test(_settings(server, identity=None, password="not-it"))


def test_a_host_key_that_is_not_the_servers_is_refused(server: P2VServer) -> None:
    other = "SHA256:" + "A" * 43
    with pytest.raises(LinkError) as caught:
        connection_test(_settings(server, hostkey=other))
    assert caught.value.message == (
        f"127.0.0.1:{server.sshd.port}: the server's host key is {server.hostkey}, "
        f"not {other} (p2v.hostkey=): refused"
    )


def test_an_unknown_host_key_is_refused_by_the_command(server: P2VServer, tmp_path: Path) -> None:
    """No p2v.hostkey= and a known_hosts that does not name the server (HOME is a new
    directory): one line, a non-zero exit, nothing sent."""
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    with loop_device(image) as disk:
        words = server.cmdline(f"p2v.disks={disk}").replace(f" p2v.hostkey={server.hostkey}", "")
        exe = Path(sys.executable).parent / "vmshift-p2v"
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)}
        proc = subprocess.run([str(exe), "--cmdline", words], capture_output=True, text=True,
                              env=env, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[0] == (
        f"vmshift-p2v: error: {USER}@127.0.0.1:{server.sshd.port}: the server's host key is not "
        "known here: refused"
    ), proc.stderr
    assert "Traceback" not in proc.stderr


def _helpers_gone(marker: str, wait: float = 10.0) -> bool:
    """No process whose command line names marker, within wait seconds (exiting ones go)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False)
        if not found.stdout:
            return True
        time.sleep(0.2)
    return False


def test_sigterm_ends_the_client_and_the_servers_run(server: P2VServer, tmp_path: Path) -> None:
    """SIGTERM while the server converts: one line and 143 on the client, its temporary files
    and helpers gone; on the server, the run ends as an interrupted one, leaving nothing."""
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    # Deep, so that the control socket and the exports' sockets must take shorter paths.
    scratch = tmp_path / ("deep-" + "d" * 60)
    scratch.mkdir()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": str(scratch)}
    exe = Path(sys.executable).parent / "vmshift-p2v"
    with loop_device(image) as disk:
        proc = subprocess.Popen([str(exe), "--cmdline", server.cmdline(f"p2v.disks={disk}")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if "server: running vmshift.cli.main convert" in line:  # the server's run started
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines() == [
        "vmshift-p2v: interrupted by SIGTERM; the server ends its run as interrupted"
    ]
    assert list(scratch.iterdir()) == []  # the exports' directory went
    assert _helpers_gone(str(scratch))  # no nbdkit or ssh of its own left
    deadline = time.monotonic() + 90
    session = next(server.sessions.glob("p2v-*"))
    while time.monotonic() < deadline:
        with (session / "lock").open() as lock:
            try:  # the server's run holds the session's lock until it has ended
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(1)
    else:
        pytest.fail("the server's run did not end")
    assert [p.name for p in session.glob("vmshift-*")] == []  # no work directory left
    # Ended by the SIGHUP the server passed on (handled: 129; or before vmshift's handler
    # was in place: killed by it).
    ended = (session / "run.log").read_text().splitlines()[-1]
    assert ended in ("--- the run ended: exit 129", "--- the run ended: killed by SIGHUP")
