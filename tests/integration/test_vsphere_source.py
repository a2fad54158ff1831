"""-ic esx:// and vpx:// against govmomi's vSphere simulator (TLS on 127.0.0.1, one login):
what `--print-source` reads through the vSphere API and the datastore's HTTPS file service, and
every refusal in one line, quickly, with the datastore's files unchanged."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import print_source_row as row
from tests.conftest import sha256, vmshift
from tests.vsphere.simulator import (
    SimDisk,
    SimNic,
    Simulator,
    SimVm,
    flat_file,
    make_flat_vmdk,
    simulator,
)

pytestmark = pytest.mark.skipif(shutil.which("nbdkit") is None, reason="needs nbdkit")

PASSWORD = "s3cret:pass word"
GENID = ("-802103094701856339", "-5104727847056752683")  # virt-v2v's test-i-vmx-7 values
QUICK = 20.0


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Flat VMDKs with a known first sector, for the simulator's datastore."""
    base = tmp_path_factory.mktemp("vsphere-disks")
    for name, size in (("efi", 64), ("busy", 16)):
        raw = base / f"{name}.raw"
        with raw.open("wb") as f:
            f.truncate(size << 20)
            f.write(f"vmshift {name} disk".encode().ljust(512, b"\0"))
        make_flat_vmdk(raw, "raw", base / f"{name}.vmdk")
    return base


def _vms(disks: Path) -> list[SimVm]:
    return [
        SimVm(
            "sb-guest",
            (SimDisk(disks / "efi.vmdk"),),
            (SimNic("00:50:56:aa:bb:01"), SimNic("00:50:56:aa:bb:02", model="e1000")),
            memory_mib=2048,
            vcpus=4,
            cores_per_socket=2,
            firmware="efi",
            secure_boot=True,
            guest_id="windows2019srv_64Guest",
            extra_config={"vm.genid": GENID[0], "vm.genidX": GENID[1]},
        ),
        SimVm("busy", (SimDisk(disks / "busy.vmdk", "lsilogic"),), power_on=True),
        SimVm("noflat", (SimDisk(disks / "busy.vmdk"),)),
        SimVm("snapped", (SimDisk(disks / "busy.vmdk"),)),
    ]


@pytest.fixture(scope="module", params=["esx", "vpx"])
def sim(request: pytest.FixtureRequest, disks: Path) -> Iterator[Simulator]:
    user = "root" if request.param == "esx" else "administrator@vsphere.local"
    with simulator(request.param, user, PASSWORD) as server:
        for vm in _vms(disks):
            server.add_vm(vm)
        # As on vSAN: the descriptor is there, no flat file behind it.
        (server.datastore_dir / "noflat" / "busy-flat.vmdk").unlink()
        server.snapshot("snapped", "before-upgrade")
        yield server


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pw") / "password"
    path.write_text(PASSWORD + "\n")
    return path


def run(
    sim: Simulator, *args: str | Path, uri: str | None = None
) -> subprocess.CompletedProcess[str]:
    return vmshift(["convert", "-ic", uri or sim.uri(), *args], timeout=120)


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode in (1, 2), proc.stdout + proc.stderr  # 2: a command-line problem
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_print_source_reads_the_vm(sim: Simulator, disks: Path, password_file: Path) -> None:
    before = {p: sha256(p) for p in (disks / "efi.vmdk", flat_file(disks / "efi.vmdk"))}
    proc = run(sim, "sb-guest", "-ip", password_file, "--print-source")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert row(out, "name") == "sb-guest"
    assert row(out, "origin") == "vmware"
    assert row(out, "VM genid") == "2f0de9ad-5b7c-f4de-d53f-23b1115d28b9"
    assert row(out, "memory") == "2.0 GiB"
    assert row(out, "vCPUs") == "4 (2 sockets x 2 cores x 1)"
    assert row(out, "firmware") == "uefi"
    assert row(out, "UEFI secure boot") == "yes"
    assert row(out, "guest OS hint") == "windows2019srv_64Guest"
    assert "scsi (pvscsi)" in out and "64.0 MiB" in out and "nbd+unix" in out
    assert "00:50:56:aa:bb:01" in out and "network VM Network" in out
    assert "00:50:56:aa:bb:02" in out and "e1000" in out
    assert PASSWORD not in proc.stdout + proc.stderr
    assert {p: sha256(p) for p in before} == before


def test_the_disk_is_read_over_https(sim: Simulator, password_file: Path, tmp_path: Path) -> None:
    """The endpoint --print-source names is served from the datastore: read its first sector
    while the source is open, through the library (the CLI's endpoint dies with it)."""
    from vmshift.sources.base import SourceOptions
    from vmshift.sources.vsphere import VsphereSource

    source = VsphereSource(SourceOptions(args=("sb-guest",), conn=sim.uri(), password=PASSWORD))
    try:
        vm = source.open(tmp_path)
        import nbd

        handle = nbd.NBD()
        handle.connect_uri(vm.disks[0].endpoint.uri)
        assert handle.pread(512, 0).rstrip(b"\0") == b"vmshift efi disk"
        assert handle.get_size() == 64 << 20
        handle.shutdown()
    finally:
        source.close()
    assert oct((tmp_path / "vsphere-cookie").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "login failed for "),
        ("unknown VM", "sb-gues: no such VM on "),
        ("powered on", "busy: the VM is poweredOn"),
        (
            "no flat file",
            "noflat/busy-flat.vmdk: cannot be read: HEAD /folder/noflat/busy-flat.vmdk",
        ),
        ("snapshots", "snapped: the VM has snapshots (before-upgrade)"),
        ("no password, no terminal", "a password is needed and there is no terminal"),
        ("certificate", "the server's certificate is not trusted"),
        ("wrong fingerprint", "the server's certificate fingerprint is "),
    ],
)
def test_refusals(
    sim: Simulator, password_file: Path, tmp_path: Path, case: str, expected: str
) -> None:
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    args: list[str | Path] = ["sb-guest", "-ip", password_file, "--print-source"]
    uri = None
    if case == "wrong password":
        args[2] = bad
    elif case == "unknown VM":
        args[0] = "sb-gues"
    elif case == "powered on":
        args[0] = "busy"
    elif case == "no flat file":
        args[0] = "noflat"
    elif case == "snapshots":
        args[0] = "snapped"
    elif case == "no password, no terminal":
        args = ["sb-guest", "--print-source"]
    elif case == "certificate":
        uri = sim.uri(no_verify=False)
    elif case == "wrong fingerprint":
        uri = sim.uri(no_verify=False)
        args += ["-io", "vddk-thumbprint=" + ":".join(["AB"] * 20)]
    started = time.monotonic()
    error = one_error(run(sim, *args, uri=uri))
    assert expected in error, error
    assert time.monotonic() - started < QUICK
    if case == "unknown VM":
        assert "did you mean: sb-guest?" in run(sim, *args, uri=uri).stderr


def test_a_pinned_fingerprint_replaces_the_ca(sim: Simulator, password_file: Path) -> None:
    refused = run(
        sim, "sb-guest", "-ip", password_file, "--print-source", uri=sim.uri(no_verify=False)
    )
    hint = next(line for line in refused.stderr.splitlines() if "vddk-thumbprint=" in line)
    pin = hint.split("vddk-thumbprint=", 1)[1].split(",", 1)[0]
    proc = run(
        sim, "sb-guest", "-ip", password_file, "--print-source", "-io", f"vddk-thumbprint={pin}",
        uri=sim.uri(no_verify=False),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert row(proc.stdout, "name") == "sb-guest"


def test_unreachable_host_fails_in_seconds(password_file: Path) -> None:
    started = time.monotonic()
    proc = vmshift(
        ["convert", "-ic", "esx://127.0.0.1:9/?no_verify=1", "g", "-ip", password_file,
         "--print-source"],
        timeout=60,
    )  # fmt: skip
    assert "esx://127.0.0.1:9: cannot connect" in one_error(proc)
    assert time.monotonic() - started < QUICK


class DroppingProxy:
    """A TCP proxy to the simulator on 127.0.0.1 that cuts the first connection whose answer
    grows past `limit` bytes (a disk read; the API's answers are smaller), as a reset link
    would, and passes everything else through."""

    def __init__(self, target_port: int, limit: int = 256 << 10) -> None:
        self.target_port = target_port
        self.limit = limit
        self.dropped = 0
        self.answered: list[int] = []  # bytes each connection's server sent, once it closed
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                sent += len(data)
                if answers and sent > self.limit and self.dropped == 0:
                    self.dropped += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        if answers:
            self.answered.append(sent)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_a_dropped_connection_is_retried(sim: Simulator, tmp_path: Path) -> None:
    from vmshift.sources.base import SourceOptions
    from vmshift.sources.vsphere import VsphereSource

    proxy = DroppingProxy(sim.port)
    uri = sim.uri().replace(f":{sim.port}/", f":{proxy.port}/")
    source = VsphereSource(SourceOptions(args=("sb-guest",), conn=uri, password=PASSWORD))
    try:
        vm = source.open(tmp_path)
        import nbd

        handle = nbd.NBD()
        handle.connect_uri(vm.disks[0].endpoint.uri)
        data = handle.pread(4 << 20, 0)
        handle.shutdown()
    finally:
        source.close()
        proxy.close()
    assert proxy.dropped == 1, "the read never crossed the proxy's limit"
    assert data[:512].rstrip(b"\0") == b"vmshift efi disk"
    assert len(data) == 4 << 20 and not any(data[512:])


def test_a_host_gone_mid_read_is_named(
    disks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator stops while the disk is being read: the reads are retried, then fail, and
    the source says which disk stopped answering and why (curl's own words), instead of
    leaving the reader's I/O error as the story. The bytes fetched before are counted."""
    import nbd

    from vmshift.sources import vsphere
    from vmshift.sources.base import RemoteSource, SourceOptions

    monkeypatch.setattr(vsphere, "RETRIES", 1)  # one retry after 1 s, not six in a minute
    with simulator("esx", "root", PASSWORD) as server:
        server.add_vm(_vms(disks)[0])
        source = vsphere.VsphereSource(
            SourceOptions(args=("sb-guest",), conn=server.uri(), password=PASSWORD)
        )
        assert isinstance(source, RemoteSource)
        try:
            vm = source.open(tmp_path)
            handle = nbd.NBD()
            handle.connect_uri(vm.disks[0].endpoint.uri)
            assert handle.pread(512, 0).rstrip(b"\0") == b"vmshift efi disk"
            assert source.lost() is None
            assert server.proc.stdin is not None
            server.proc.stdin.close()
            server.proc.wait(timeout=30)
            with pytest.raises(nbd.Error):
                handle.pread(1 << 20, 8 << 20)
            lost = source.lost()
            assert lost is not None
            assert "[LocalDS_0] sb-guest/efi.vmdk stopped answering: " in lost.message, lost
            assert "connect" in lost.message.lower(), lost  # curl: couldn't connect to server
            handle.shutdown()
        finally:
            source.close()
    assert source.fetched() == {"[LocalDS_0] sb-guest/efi.vmdk": 512}


def test_an_ended_session_is_renewed_while_the_disks_are_read(
    sim: Simulator, tmp_path: Path
) -> None:
    """vSphere ends idle sessions, and an administrator can end one: while the source is open,
    a keep-alive call finds out, logs in again and hands nbdkit the new cookie, so the reads
    go on (here every half second instead of every few minutes)."""
    import nbd
    from pyVim.connect import Disconnect

    from vmshift.sources.base import SourceOptions
    from vmshift.sources.vsphere import VsphereSource

    source = VsphereSource(
        SourceOptions(args=("sb-guest",), conn=sim.uri(), password=PASSWORD), keepalive=0.5
    )
    admin = sim.connect()
    try:
        vm = source.open(tmp_path)
        cookie = (tmp_path / "vsphere-cookie").read_text()
        key = source._si.content.sessionManager.currentSession.key
        admin.content.sessionManager.TerminateSession([key])
        deadline = time.monotonic() + QUICK
        while (tmp_path / "vsphere-cookie").read_text() == cookie:
            assert time.monotonic() < deadline, "the session was not renewed"
            time.sleep(0.1)
        assert oct((tmp_path / "vsphere-cookie").stat().st_mode & 0o777) == "0o600"
        assert source._keeper is not None and source._keeper.renewals == 1
        assert source._keeper.si.CurrentTime() is not None  # the new session works
        handle = nbd.NBD()
        handle.connect_uri(vm.disks[0].endpoint.uri)
        assert handle.pread(512, 0).rstrip(b"\0") == b"vmshift efi disk"
        handle.shutdown()
    finally:
        source.close()
        Disconnect(admin)


def test_a_disk_is_read_over_several_connections(sim: Simulator, tmp_path: Path) -> None:
    """Reads in flight at once (qemu-img keeps several) go over several HTTPS connections,
    since one ESXi connection is throttled: a proxy that drops nothing counts what each
    connection carried."""
    import nbd

    from vmshift.sources.base import SourceOptions
    from vmshift.sources.vsphere import CONNECTIONS, VsphereSource

    proxy = DroppingProxy(sim.port, limit=1 << 62)
    uri = sim.uri().replace(f":{sim.port}/", f":{proxy.port}/")
    source = VsphereSource(SourceOptions(args=("sb-guest",), conn=uri, password=PASSWORD))
    try:
        vm = source.open(tmp_path)
        handle = nbd.NBD()
        handle.connect_uri(vm.disks[0].endpoint.uri)
        buffers = [nbd.Buffer(4 << 20) for _ in range(8)]
        for i, buf in enumerate(buffers):
            handle.aio_pread(buf, i * (4 << 20))
        while handle.aio_in_flight() > 0:
            handle.poll(-1)
        assert buffers[0].to_bytearray()[:16] == b"vmshift efi disk"
        handle.shutdown()
    finally:
        source.close()
        time.sleep(0.5)  # the proxy notes each connection as it closes
        proxy.close()
    assert source.fetched() == {"[LocalDS_0] sb-guest/efi.vmdk": 32 << 20}
    carried = [n for n in proxy.answered if n >= 4 << 20]  # data connections, not the API's
    assert 2 <= len(carried) <= CONNECTIONS, proxy.answered
    assert sum(carried) >= 32 << 20


def test_the_plugin_checks_the_pin_on_its_own_connections(sim: Simulator, tmp_path: Path) -> None:
    """The fingerprint is checked by the plugin on every HTTPS connection it opens, not only
    by the API login: a server whose certificate is not the pinned one is refused at once."""
    from vmshift.errors import SourceError
    from vmshift.sources.nbdkit import NbdkitServers, export_size
    from vmshift.sources.vsphere import HTTPS_PLUGIN

    cookie = tmp_path / "cookie"
    cookie.write_text("vmware_soap_session=none")
    url = f"https://127.0.0.1:{sim.port}/folder/sb-guest/efi-flat.vmdk?dsName=LocalDS_0"
    servers = NbdkitServers()
    try:
        sock = tmp_path / "pinned.sock"
        plugin = ["python", str(HTTPS_PLUGIN), f"url={url}", f"cookie-file={cookie}",
                  f"verify=sha256:{'00' * 32}", "retries=3"]  # fmt: skip
        servers.serve(sock, plugin, "pinned")
        started = time.monotonic()
        with pytest.raises(SourceError, match="not the pinned one"):
            export_size(sock, "pinned")
        assert time.monotonic() - started < QUICK / 4  # not retried
    finally:
        servers.close()


def test_a_deep_work_directory_still_serves_the_disks(sim: Simulator, tmp_path: Path) -> None:
    """A unix socket's path holds 107 bytes: in a deeper work directory the socket is bound
    through a short link in /tmp, which close() removes."""
    import nbd

    from vmshift.sources.base import SourceOptions
    from vmshift.sources.vsphere import VsphereSource

    deep = tmp_path / ("deep" * 30)
    deep.mkdir()
    source = VsphereSource(SourceOptions(args=("sb-guest",), conn=sim.uri(), password=PASSWORD))
    try:
        vm = source.open(deep)
        uri = vm.disks[0].endpoint.uri
        assert uri.startswith("nbd+unix:///?socket=/tmp/vmshift-") and len(uri) < 140, uri
        handle = nbd.NBD()
        handle.connect_uri(uri)
        assert handle.pread(512, 0).rstrip(b"\0") == b"vmshift efi disk"
        handle.shutdown()
    finally:
        source.close()
    assert not Path(uri.split("=", 1)[1]).parent.exists()
