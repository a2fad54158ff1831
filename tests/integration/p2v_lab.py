"""The P2V lab: a conversion server on 127.0.0.1 as a real user without root, and a
"physical machine" whose disk is a read-only loop device.

- The conversion user (USER) is a system account made once (useradd); no sudo, no root.
- Its sshd (tests/sshd_fixture.py) runs `vmshift p2v-server` as the key's forced command,
  with the profiles file, the session directory, the fixed appliance (`vmshift p2v-server
  --setup`, built once per host kernel) and the libvirtd to boot results on.
- Bytes on the wire are counted by the kernel (iptables counters on the sshd port), outside
  vmshift.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import vmshift
from tests.export_domain import make_export_domain
from tests.integration.p2v_disks import attached
from tests.sshd_fixture import Sshd, private_sshd
from vmshift.p2v.ssh_link import fingerprint

USER = "vmshift-p2v"
HOME = "/var/lib/vmshift-p2v"
PROFILE = "p2v-rhv"  # into an export storage domain
LOCAL_PROFILE = "p2v-local"  # into a directory (-o local: its copy can be resumed)
SEED_XML = """<?xml version="1.0"?>
<virt-v2v>
  <profile name="{name}">
    <method>rhev</method>
    <storage format="raw" allocation="sparse">{storage}</storage>
    <network type="default">
      <network type="network" name="ovirtmgmt"/>
    </network>
  </profile>
  <profile name="{local_name}">
    <method>local</method>
    <storage format="qcow2">{local_storage}</storage>
  </profile>
</virt-v2v>
"""


def conversion_user() -> pwd.struct_passwd:
    """USER, made if missing: a shell (sshd runs the forced command through it), a home of
    its own, no password (a '*', not a lock: sshd refuses key logins to locked accounts)."""
    if os.geteuid() != 0:
        pytest.skip("the P2V lab makes a conversion user: needs root")
    # Test workers in parallel (test_p2v_convert and test_p2v_image start together) make it
    # once: the first under the lock, the others find it.
    with Path(f"/var/tmp/.{USER}-user.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--shell", "/bin/sh", "--home-dir", HOME,
                            "--create-home", USER], check=True, capture_output=True)  # fmt: skip
            subprocess.run(["usermod", "-p", "*", USER], check=True, capture_output=True)
        user = pwd.getpwnam(USER)
        if user.pw_dir != HOME or not Path(HOME).is_dir():
            subprocess.run(["usermod", "--home", HOME, USER], check=True, capture_output=True)
            Path(HOME).mkdir(mode=0o700, exist_ok=True)
            os.chown(HOME, user.pw_uid, user.pw_gid)
    return pwd.getpwnam(USER)


def fixed_appliance() -> Path:
    """`vmshift p2v-server --setup`'s appliance, built once per host kernel and libguestfs, in
    /var/tmp (the user cannot enter root's cache)."""
    versions = subprocess.run(["dpkg-query", "-W", "libguestfs0", "linux-image-amd64"],
                              capture_output=True, text=True, check=False).stdout  # fmt: skip
    key = hashlib.sha256((versions + os.uname().release).encode()).hexdigest()[:12]
    where = Path(f"/var/tmp/vmshift-p2v-appliance-{key}")
    with Path(f"{where}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (where / "kernel").exists():
            vmshift(["p2v-server", "--setup", "--appliance", where], check=True, timeout=900)
    return where


@dataclass(frozen=True)
class P2VServer:
    sshd: Sshd
    root: Path  # world-traversable; the user's files under it
    export: Path  # the export storage domain's top directory (PROFILE's storage)
    local: Path  # LOCAL_PROFILE's output directory
    sessions: Path

    @property
    def hostkey(self) -> str:
        return fingerprint(self.sshd.host_key.read_text().split()[1])

    def cmdline(self, *extra: str, profile: str = PROFILE) -> str:
        words = [
            "p2v.server=127.0.0.1", f"p2v.port={self.sshd.port}", f"p2v.user={USER}",
            f"p2v.identity={self.sshd.identity}", f"p2v.hostkey={self.hostkey}",
            f"p2v.profile={profile}", *extra,
        ]  # fmt: skip
        return " ".join(words)


@contextlib.contextmanager
def p2v_server(verify_conn: str | None, password: str | None = None) -> Iterator[P2VServer]:
    """The server; with password, the user also logs in with that password, the forced
    command then given by sshd_config's ForceCommand (as a site without keys would)."""
    user = conversion_user()
    root = Path(tempfile.mkdtemp(prefix="vmshift-p2v-lab-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        export, local, sessions = root / "export", root / "local", root / "sessions"
        export.mkdir()
        make_export_domain(export, owner=(user.pw_uid, user.pw_gid))
        for path in (sessions, local, export):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, user.pw_uid, user.pw_gid)
        conf = root / "virt-v2v.conf"
        conf.write_text(SEED_XML.format(name=PROFILE, storage=export, local_name=LOCAL_PROFILE,
                                        local_storage=local))  # fmt: skip
        command = [str(Path(sys.executable).parent / "vmshift"), "p2v-server", "--conf", str(conf),
                   "--sessions", str(sessions), "--appliance", str(fixed_appliance())]  # fmt: skip
        if verify_conn:
            command += ["--verify-boot-conn", verify_conn]
        forced = f'command="{" ".join(command)}",no-pty,no-agent-forwarding,no-X11-forwarding'
        config = [f"AllowUsers {USER}"]
        if password is not None:
            hashed = subprocess.run(["openssl", "passwd", "-6", password], capture_output=True,
                                    text=True, check=True).stdout.strip()  # fmt: skip
            subprocess.run(["usermod", "-p", hashed, USER], check=True, capture_output=True)
            config += [f"Match User {USER}", "  PasswordAuthentication yes",
                       f"  ForceCommand {' '.join(command)}"]  # fmt: skip
        with private_sshd(root / "sshd", key_options=forced, extra_config=tuple(config)) as sshd:
            yield P2VServer(sshd, root, export, local, sessions)
    finally:
        if password is not None:  # no password left on the account
            subprocess.run(["usermod", "-p", "*", USER], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[Path]:
    """image as a read-only loop device without partition nodes: the physical disk."""
    proc = subprocess.run(["losetup", "-r", "-f", "--show", str(image)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.strip()}")
    device = Path(proc.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", str(device)], check=False)


class Wire(dict[str, int]):
    """Bytes per direction ("dpt": to the port, "spt": from it); and the packets they were
    in, whose IP and TCP headers (TCP_IP_HEADERS each) are part of those bytes."""

    packets: int = 0

    @property
    def payload(self) -> int:
        """The bytes the TCP connections carried, headers taken off."""
        return sum(self.values()) - TCP_IP_HEADERS * self.packets


TCP_IP_HEADERS = 52  # IPv4 (20) and TCP with timestamps (32), as Linux sends them on lo


@contextlib.contextmanager
def wire_counter(port: int) -> Iterator[Wire]:
    """Bytes of every TCP packet to or from port on the loopback (both directions, headers
    included), counted by iptables; read into the dict when the block ends."""
    rules = [["OUTPUT", "-o", "lo", "-p", "tcp", "--dport", str(port)],
             ["OUTPUT", "-o", "lo", "-p", "tcp", "--sport", str(port)]]  # fmt: skip
    for rule in rules:
        proc = subprocess.run(["iptables", "-I", *rule, "-j", "ACCEPT"], capture_output=True,
                              text=True, check=False)  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"iptables cannot count here: {proc.stderr.strip()}")
    counted = Wire()
    try:
        yield counted
    finally:
        listing = subprocess.run(["iptables", "-L", "OUTPUT", "-v", "-x", "-n"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        for direction in ("dpt", "spt"):
            m = re.search(rf"^\s*(\d+)\s+(\d+)\s+ACCEPT.*{direction}:{port}\b", listing, re.M)
            counted[direction] = int(m.group(2)) if m else 0
            counted.packets += int(m.group(1)) if m else 0
        for rule in rules:
            subprocess.run(["iptables", "-D", *rule, "-j", "ACCEPT"], check=False)


def used_data(image: Path) -> int:
    """What the guest's disk holds in use, by e2fsprogs: the ext4 partition's allocated
    blocks, plus the area before it (partition table, boot loader)."""
    table = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    start = int(re.search(r'"start":\s*(\d+)', table).group(1)) * 512  # type: ignore[union-attr]
    size = int(re.search(r'"size":\s*(\d+)', table).group(1)) * 512  # type: ignore[union-attr]
    with attached(image, (start, size), ro=True) as part:
        head = subprocess.run(["dumpe2fs", "-h", part], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip
    fields = dict(re.findall(r"^([A-Za-z ]+):\s+(\d+)$", head, re.M))
    blocks = int(fields["Block count"]) - int(fields["Free blocks"])
    return start + blocks * int(fields["Block size"])
