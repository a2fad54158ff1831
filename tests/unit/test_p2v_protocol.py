"""The P2V client and server's protocol pieces, without SSH: the verbs a forced command
receives, the events relayed from `vmshift convert --machine-readable`, the options turned
into a command line, the request read by `-i p2v`, and the host key fingerprint."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmshift.errors import SourceError, UsageError
from vmshift.model.vm import Controller, CpuTopology, Firmware, Removable
from vmshift.p2v import server
from vmshift.p2v.client import session_id
from vmshift.p2v.machine import Cpu, Disk, Interface, Machine, RemovableDevice
from vmshift.p2v.ssh_link import fingerprint
from vmshift.progress_lines import event_of
from vmshift.sources.base import SourceOptions
from vmshift.sources.p2v import ForwardedDisk, P2VRequest, P2VSource

MACHINE = Machine(
    hostname="web01",
    cpu=Cpu("Xeon", sockets=2, cores=4, threads=2),
    memory=8 << 30,
    firmware="uefi",
    disks=(Disk("sda", "/dev/sda", 100 << 30, serial="S1"),
           Disk("nvme0n1", "/dev/nvme0n1", 1 << 40)),
    interfaces=(Interface("eth0", "52:54:00:00:00:01", "virtio_net", "up"),
                Interface("eth1", "52:54:00:00:00:02", "e1000e", "down")),
    removables=(RemovableDevice("sr0", "/dev/sr0", "cdrom"),
                RemovableDevice("sdc", "/dev/sdc", "usb"),
                RemovableDevice("sr1", "/dev/sr1", "cdrom")),
)  # fmt: skip


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["hello", "p2v-0123abcd"], ("hello", "p2v-0123abcd")),
        (["vmshift", "p2v-server", "convert", "p2v-0123abcd"], ("convert", "p2v-0123abcd")),
    ],
)
def test_verbs(words: list[str], expected: tuple[str, str]) -> None:
    assert server.parse_verb(words) == expected


@pytest.mark.parametrize(
    "words", [[], ["hello"], ["rm", "-rf", "/"], ["hello", "../etc"], ["convert", "A B"]]
)
def test_bad_verbs_are_refused(words: list[str]) -> None:
    with pytest.raises(UsageError):
        server.parse_verb(words)


def test_machine_readable_lines_become_events() -> None:
    assert event_of("copy web01-sda 1048576 4194304 25%", "stdout") == {
        "event": "progress", "phase": "copy", "label": "web01-sda", "done": 1048576,
        "total": 4194304,
    }  # fmt: skip
    assert event_of("stage copy 135.7 copying disks", "stdout") == {
        "event": "stage", "stage": "copy", "message": "copying disks",
    }  # fmt: skip
    # What the run says on stderr is log, even when it looks like progress.
    assert event_of("copy a 1 2 50%", "stderr") == {"event": "log", "line": "copy a 1 2 50%"}


def test_options_become_a_convert_command_line(tmp_path: Path) -> None:
    config = server.ServerConfig(sessions=tmp_path, conf=tmp_path / "v2v.conf", python="py",
                                 verify_conn="qemu:///system")  # fmt: skip
    opts = server.ConvertOptions.from_json({
        "profile": "rhv", "name": "web01", "vcpus": 2, "memory": 2 << 30,
        "network": [["eth0", "ovirtmgmt"]], "resume": True,
    })  # fmt: skip
    argv = server.convert_argv(config, tmp_path / "request.json", tmp_path / "work", opts)
    assert argv == [
        "py", "-m", "vmshift.cli.main", "convert", "--machine-readable", "-i", "p2v",
        "--profile", "rhv", "--workdir", str(tmp_path / "work"),
        "--conf", str(tmp_path / "v2v.conf"),
        "-on", "web01", "--vcpus", "2", "-m", "2048M", "--network", "eth0:ovirtmgmt", "--resume",
        "--verify-boot", "--verify-boot-conn", "qemu:///system", str(tmp_path / "request.json"),
    ]  # fmt: skip


@pytest.mark.parametrize("doc", [{}, {"profile": 3}, {"profile": "a", "vcpus": -1},
                                 {"profile": "a", "memory": "lots"}])  # fmt: skip
def test_bad_options_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        server.ConvertOptions.from_json(doc)


def test_fingerprint_is_openssh_s(tmp_path: Path) -> None:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    argv = ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"]
    listed = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[1]
    assert fingerprint(Path(f"{key}.pub").read_text().split()[1]) == listed


def test_a_session_is_the_same_for_the_same_machine_and_disks() -> None:
    one = session_id(MACHINE, MACHINE.disks)
    assert one == session_id(MACHINE, MACHINE.disks)
    assert one != session_id(MACHINE, MACHINE.disks[:1])
    assert server.SESSION_ID.fullmatch(one)


@pytest.fixture
def exports(tmp_path: Path) -> Iterator[list[socket.socket]]:
    """Listening sockets standing in for the forwarded NBD exports."""
    listeners = []
    for name in ("sda", "nvme0n1"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(tmp_path / f"{name}.sock"))
        s.listen(4)
        listeners.append(s)
    yield listeners
    for s in listeners:
        s.close()


def _request(tmp_path: Path) -> Path:
    request = P2VRequest(
        machine=MACHINE,
        disks=(ForwardedDisk("sda", str(tmp_path / "sda.sock"), 100 << 30, 5 << 30),
               ForwardedDisk("nvme0n1", str(tmp_path / "nvme0n1.sock"), 1 << 40)),
        interfaces=("eth1", "eth0"),
        session="p2v-0123456789abcdef",
        removables=("sr0", "sdc", "sr1"),
    )  # fmt: skip
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request.to_json()))
    return path


def test_the_p2v_source_describes_the_machine(tmp_path: Path, exports: list[socket.socket]) -> None:
    source = P2VSource(SourceOptions(args=(str(_request(tmp_path)),), memory=2 << 30))
    vm = source.open(tmp_path)
    assert (vm.name, vm.memory, vm.vcpus, vm.origin) == ("web01", 2 << 30, 16, "physical")
    assert vm.topology == CpuTopology(2, 4, 2)
    assert vm.firmware is Firmware.UEFI
    assert [d.endpoint.uri for d in vm.disks] == [
        f"nbd+unix:///?socket={tmp_path / 'sda.sock'}",
        f"nbd+unix:///?socket={tmp_path / 'nvme0n1.sock'}",
    ]
    assert [d.controller for d in vm.disks] == [Controller.SATA, Controller.NVME]
    assert [(n.mac, n.model, n.network) for n in vm.nics] == [
        ("52:54:00:00:00:02", "e1000e", "eth1"), ("52:54:00:00:00:01", "virtio", "eth0"),
    ]  # fmt: skip
    assert vm.removables == (Removable("cdrom", Controller.SATA, unit=0),
                             Removable("cdrom", Controller.SATA, unit=1))  # fmt: skip
    assert vm.warnings == ("sdc (usb): a removable disk gets no drive in the guest; convert it "
                           "as a disk (p2v.disks=sdc) to keep it",)  # fmt: skip
    assert vm.read_remotely
    assert source.lost() is None
    exports[1].close()  # the link went: nothing answers on the forwarded socket
    lost = source.lost()
    assert lost is not None and "nvme0n1" in lost.message and "sda" not in lost.message


def test_a_disk_nobody_forwarded_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"disk sda: nothing answers on .*sda\.sock"):
        P2VSource(SourceOptions(args=(str(_request(tmp_path)),))).open(tmp_path)


FAKE_CONVERT = """#!/bin/sh
trap 'echo "vmshift: interrupted by SIGINT" >&2; exit 130' INT
echo "stage copy 1.0 copying disks"
echo "copy web01-sda 50 100 50%"
echo "vmshift: some message" >&2
if [ "$WAIT" = 1 ]; then echo waiting >&2; while :; do sleep 0.1; done; fi
echo "vmshift: web01 configured with virtio drivers."
"""


def _serve(tmp_path: Path, sessions: Path, wait: bool) -> tuple[int, list[dict[str, object]]]:
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_CONVERT)
    fake.chmod(0o755)
    session = "p2v-0123456789abcdef"
    environ = {"PATH": "/usr/bin:/bin", "WAIT": "1" if wait else "0"}
    config = server.ServerConfig(sessions=sessions, python=str(fake), environ=environ)
    directory = server.session_dir(config, session)
    request = json.loads(_request(directory).read_text())
    for disk in request["disks"]:  # this connection's forwarded sockets, as the client names them
        disk["forwarded"] = disk["socket"].replace(".sock", ".c0ffee.sock")
    r, w = os.pipe()
    stdin = open(r)  # noqa: SIM115, PTH123
    feed = open(w, "w")  # noqa: SIM115, PTH123
    feed.write(json.dumps({"request": request, "options": {"profile": "p"}}) + "\n")
    feed.flush()
    if wait:  # the client goes away: the end of the input
        feed.close()
    listeners = [socket.socket(socket.AF_UNIX) for _ in range(2)]
    for s, name in zip(listeners, ("sda", "nvme0n1"), strict=True):
        s.bind(str(directory / f"{name}.c0ffee.sock"))
        s.listen(1)
    out = io.StringIO()
    rc = server.convert(config, session, (stdin, out), lambda _line: None)
    feed.close()
    for s in listeners:
        s.close()
    return rc, [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Where sessions go: a Unix socket's path has 107 bytes, and pytest's tmp_path is long."""
    path = Path(tempfile.mkdtemp(prefix="p2v-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def test_the_run_is_relayed_then_its_verdict(tmp_path: Path, short_dir: Path) -> None:
    rc, events = _serve(tmp_path, short_dir, wait=False)
    assert rc == 0
    assert {"event": "stage", "stage": "copy", "message": "copying disks"} in events
    assert {"event": "progress", "phase": "copy", "label": "web01-sda", "done": 50,
            "total": 100} in events  # fmt: skip
    assert events[-1]["event"] == "done" and events[-1]["rc"] == 0
    assert "vmshift: web01 configured with virtio drivers." in events[-1]["summary"]  # type: ignore[operator]
    # The stable names the conversion reads lead to this connection's sockets.
    # The server's side has the run's output too, progress included.
    run_log = (short_dir / "p2v-0123456789abcdef" / "run.log").read_text()
    assert "copy web01-sda 50 100 50%" in run_log
    assert (short_dir / "p2v-0123456789abcdef" / "sda.sock").readlink() == Path("sda.c0ffee.sock")


def test_the_end_of_the_input_interrupts_the_run(tmp_path: Path, short_dir: Path) -> None:
    """The client gone (its input closed before the run ends): the run gets SIGHUP, and its
    verdict is still sent (to nobody) once it has ended properly."""
    rc, events = _serve(tmp_path, short_dir, wait=True)
    assert rc == 128 + signal.SIGHUP or rc == -signal.SIGHUP
    assert events[-1]["event"] == "done"


def test_watch_input_cancel_sends_sigint() -> None:
    class Fake:
        signals: list[int] = []

        def interrupt(self, signum: int) -> None:
            self.signals.append(signum)

    fake = Fake()
    t = threading.Thread(target=server.watch_input, args=(iter(["noise\n", "cancel\n"]), fake))
    t.start()
    t.join()
    assert fake.signals == [signal.SIGINT]
    server.watch_input(iter([]), fake)  # type: ignore[arg-type]
    assert fake.signals == [signal.SIGINT, signal.SIGHUP]


@pytest.mark.parametrize(
    ("chosen", "expected"), [((), ["sr0", "sr1"]), (("sr1", "sdc"), ["sr1", "sdc"])]
)
def test_the_request_names_the_drives_and_the_sockets(
    tmp_path: Path, chosen: tuple[str, ...], expected: list[str]
) -> None:
    """Without p2v.removable=, every CD/DVD and floppy drive (not a USB disk); the disks'
    stable socket names and this connection's forwarded ones."""
    from vmshift.p2v import client
    from vmshift.p2v.layout import Layout
    from vmshift.p2v.settings import P2VSettings

    served = client._Exports(tmp_path)
    served.exports.append(client._Export(MACHINE.disks[0], tmp_path / "sda.sock", 5, Layout()))
    settings = P2VSettings(server="h", profile="p", removable=chosen, network=(("eth0", "br0"),))
    talk = client._Conversation(client.link_spec(settings), tmp_path, settings, MACHINE, "p2v-ab12",
                                served, lambda _e: None, threading.Event())  # fmt: skip
    doc = talk.request("/srv/s", "c0ffee", resume=True)
    assert doc["request"]["removables"] == expected
    assert doc["request"]["interfaces"] == ["eth0", "eth1"]
    assert doc["request"]["disks"][0]["socket"] == "/srv/s/sda.sock"
    assert doc["request"]["disks"][0]["forwarded"] == "/srv/s/sda.c0ffee.sock"
    assert doc["options"] == {"profile": "p", "name": "web01", "vcpus": None, "memory": None,
                              "network": [["eth0", "br0"]], "resume": True}  # fmt: skip
    # And the server reads back what the client wrote.
    request = P2VRequest.from_json(doc["request"], "test")
    assert request.removables == tuple(expected)
