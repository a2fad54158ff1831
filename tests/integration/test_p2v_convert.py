"""Issue 13 acceptance: the real Debian guest converted as a physical machine, over SSH.

The "physical machine" is this host running `vmshift-p2v --cmdline ...` (unattended), its
disk a read-only loop device holding the real Debian guest; the conversion server is a real
OpenSSH server on 127.0.0.1 whose user has no root (tests/integration/p2v_lab.py). The server
converts into an export storage domain through a seed-format profile and boots the result on
virtio (`--verify-boot`, on a libvirtd of that user's). Bytes on the wire are counted by the
kernel; used data is counted by the filesystem's own tools (dumpe2fs), not by vmshift.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import sha256
from tests.guests.manifest import BuiltGuest
from tests.integration.libvirt_fixture import PrivateLibvirtd, private_libvirtd
from tests.integration.p2v_lab import (
    LOCAL_PROFILE,
    USER,
    P2VServer,
    conversion_user,
    loop_device,
    p2v_server,
    used_data,
    wire_counter,
)
from tests.integration.test_vsphere_convert import flat_copy

pytestmark = [pytest.mark.slow, pytest.mark.realguest]

MIB = 1 << 20


@dataclass(frozen=True)
class P2VRun:
    returncode: int
    out: str
    wire: int  # bytes both ways on the SSH connection
    ovf_owners: tuple[int, ...]  # the uid of each OVF in the export domain


def client(cmdline: str, timeout: float = 2400) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "vmshift-p2v"
    return subprocess.run([str(exe), "--cmdline", cmdline], capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    # As the conversion user: it boots what that user's run wrote, on that user's socket.
    with private_libvirtd(user=conversion_user().pw_uid) as server:
        yield server


@pytest.fixture(scope="module")
def physical(real_debian: BuiltGuest) -> Path:
    """The real Debian guest's disk, raw: what the loop device holds."""
    descriptor = flat_copy(real_debian.disks[0], "vmdk", "debian12-vmware")
    return descriptor.with_name(descriptor.stem + "-flat.vmdk")


@pytest.fixture(scope="module")
def runs(physical: Path, libvirtd: PrivateLibvirtd) -> Iterator[dict[str, Future[P2VRun]]]:
    """Two conversions at once (each a single-threaded TCG appliance): compressed and booted
    on the result, and one whose link is cut in the copy. The uncompressed payload's bound
    (the used data, 0.999x) is checked where the ISO itself runs (test_p2v_image.py)."""
    pool = ThreadPoolExecutor(max_workers=2)

    def run() -> P2VRun:
        with p2v_server(libvirtd.uri) as server, loop_device(physical) as disk:
            # The guest gets 1 GiB and one CPU, not this host's (the boot check starts it).
            words = server.cmdline(f"p2v.disks={disk}", "p2v.name=p2vdeb", "p2v.memory=1G",
                                   "p2v.vcpus=1", "p2v.compress=on")  # fmt: skip
            with wire_counter(server.sshd.port) as wire:
                proc = client(words)
            owners = tuple(p.stat().st_uid for p in server.export.rglob("*.ovf"))
            return P2VRun(proc.returncode, proc.stdout + proc.stderr, sum(wire.values()), owners)

    def cut(server: P2VServer, words: str) -> P2VRun:
        """The SSH link cut (the client's connection killed) once the copy is under way."""
        exe = Path(sys.executable).parent / "vmshift-p2v"
        proc = subprocess.Popen([str(exe), "--cmdline", words], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            copied = re.search(r": copy (\d+)%", line)
            if copied and 10 <= int(copied.group(1)) < 100:
                master = f"ssh -M -N -p {server.sshd.port} "
                subprocess.run(["pkill", "-KILL", "-f", master], check=False)
                lines.append("(test: the link was cut here)\n")
                break
        lines += list(proc.stdout)
        proc.wait(timeout=2400)
        owners = tuple(p.stat().st_uid for p in server.local.glob("*.xml"))
        return P2VRun(proc.returncode, "".join(lines), 0, owners)

    def resumed() -> P2VRun:
        with p2v_server(None) as server, loop_device(physical) as disk:
            words = server.cmdline(f"p2v.disks={disk}", "p2v.name=p2vdeb-cut", "p2v.memory=1G",
                                   "p2v.vcpus=1", profile=LOCAL_PROFILE)  # fmt: skip
            return cut(server, words)

    before = sha256(physical)
    futures = {"compressed": pool.submit(run), "cut": pool.submit(resumed)}
    yield futures
    pool.shutdown(wait=True)
    assert sha256(physical) == before, "the physical disk was written"


def test_unattended_p2v_converts_and_boots_on_virtio(runs: dict[str, Future[P2VRun]]) -> None:
    result = runs["compressed"].result()
    assert result.returncode == 0, result.out[-4000:]
    assert "p2vdeb configured with virtio drivers" in result.out, result.out[-3000:]
    assert re.search(r"p2vdeb booted to its login prompt in \d+ s", result.out), result.out[-3000:]
    assert "192.0.2.10 up" in result.out, result.out[-3000:]


def test_only_used_data_crosses_the_wire(runs: dict[str, Future[P2VRun]], physical: Path) -> None:
    used = used_data(physical)
    compressed = runs["compressed"].result()
    assert compressed.returncode == 0, compressed.out[-4000:]
    print(f"used {used / MIB:.1f} MiB; on the wire: compressed {compressed.wire / MIB:.1f} MiB "
          f"({compressed.wire / used:.2f}x)")  # fmt: skip
    assert compressed.wire <= 0.6 * used
    # And the disk was not sent whole: it is 3 GiB.
    assert compressed.wire < physical.stat().st_size / 4


def test_the_server_user_has_no_root(runs: dict[str, Future[P2VRun]]) -> None:
    """What the server wrote belongs to the conversion user, who is not root."""
    import pwd

    result = runs["compressed"].result()
    user = pwd.getpwnam(USER)
    assert user.pw_uid != 0
    assert result.ovf_owners == (user.pw_uid,)


def test_a_cut_link_resumes_the_copy(runs: dict[str, Future[P2VRun]]) -> None:
    """The client reconnects, the server continues the kept copy (--resume; -o local, whose
    copy can be resumed), and the guest is created once."""
    result = runs["cut"].result()
    out = result.out
    assert "(test: the link was cut here)" in out, out[-3000:]
    assert result.returncode == 0, out[-4000:]
    after = out.split("(test: the link was cut here)", 1)[1]
    assert "dropped; reconnecting" in after, after[-3000:]
    assert "resuming the copy" in after, after[-3000:]
    assert "p2vdeb-cut configured with virtio drivers" in after, after[-3000:]
    assert len(result.ovf_owners) == 1
