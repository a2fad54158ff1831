"""-o qemu's boot check: wires to the script's NICs, without changing the script.

The script's NICs are qemu user-mode netdevs (`-netdev user,id=netN` with a `-device
MODEL,netdev=netN,mac=MAC`); the check reads them from the script vmshift wrote. It appends,
through the script's "$@", for each netdev: two socket chardevs that connect to Unix sockets
the check listens on in its work directory, a filter-mirror that copies the frames the guest
sends (the netdev's rx queue: what it receives from the NIC) to the first, and a
filter-redirector that delivers what arrives on the second to the guest (the netdev's tx
queue: what it sends to the NIC). The user-mode network stays the netdev; the frames are
framed as arp.StreamWire reads them. Filesystem sockets reach across the network namespace
the script runs in.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmshift.targets.qemu import qemu_value
from vmshift.verify.arp import StreamWire

_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes


@dataclass(frozen=True)
class ScriptNic:
    netdev: str  # the id of its -netdev
    mac: str | None  # as the script gives it; None: qemu picks one


def script_nics(text: str) -> list[ScriptNic]:
    """The NICs of a script qemu_script wrote, in its order: each user-mode -netdev and the
    MAC of the -device that uses it."""
    words: list[str] = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):  # the shell's own lines need not split
            words += shlex.split(line.removesuffix("\\"), comments=True)
    netdevs: list[str] = []
    macs: dict[str, str] = {}
    for option, value in itertools.pairwise(words):
        opts = {}
        for item in value.split(","):
            key, _, val = item.partition("=")
            opts[key] = val
        if option == "-netdev" and value.startswith("user,") and opts.get("id"):
            netdevs.append(opts["id"])
        if option == "-device" and "netdev" in opts and "mac" in opts:
            macs[opts["netdev"]] = opts["mac"].lower()
    return [ScriptNic(n, macs.get(n)) for n in netdevs]


class FilterTaps:
    """Listening sockets for the NICs' filters; qemu_args() says how qemu reaches them."""

    def __init__(self, nics: list[ScriptNic], directory: Path) -> None:
        self.nics = nics
        self._listeners: list[tuple[socket.socket, socket.socket]] = []
        self._paths = [(directory / f"net{i}-from-guest", directory / f"net{i}-to-guest")
                       for i, _ in enumerate(nics)]  # fmt: skip
        self._open: list[socket.socket] = []
        try:
            for tapped, inject in self._paths:
                self._open.append(_listen(tapped))
                self._open.append(_listen(inject))
                self._listeners.append((self._open[-2], self._open[-1]))
        except BaseException:
            self.close()
            raise

    def qemu_args(self) -> list[str]:
        args: list[str] = []
        for i, (nic, (tapped, inject)) in enumerate(zip(self.nics, self._paths, strict=True)):
            args += [
                "-chardev", f"socket,id=vmshift-tap{i},path={qemu_value(tapped)}",
                "-chardev", f"socket,id=vmshift-inject{i},path={qemu_value(inject)}",
                "-object", f"filter-mirror,id=vmshift-mirror{i},netdev={nic.netdev},"
                f"queue=rx,outdev=vmshift-tap{i}",
                "-object", f"filter-redirector,id=vmshift-redirect{i},netdev={nic.netdev},"
                f"queue=tx,indev=vmshift-inject{i}",
            ]  # fmt: skip
        return args

    def accept(self, running: Callable[[], bool], deadline: float) -> list[StreamWire] | None:
        """The NICs' wires once qemu has connected every chardev (it does so as it starts);
        None if qemu ended or the deadline passed first."""
        waiting = {s for pair in self._listeners for s in pair}
        conns: dict[socket.socket, socket.socket] = {}
        while waiting and running() and time.monotonic() < deadline:
            ready, _, _ = select.select(list(waiting), [], [], 0.2)
            for listener in ready:
                conns[listener] = listener.accept()[0]
                waiting.discard(listener)
        if waiting:
            for conn in conns.values():
                conn.close()
            return None
        return [StreamWire(conns[t], conns[i], nic.mac)
                for nic, (t, i) in zip(self.nics, self._listeners, strict=True)]  # fmt: skip

    def close(self) -> None:
        for listener in self._open:
            listener.close()
        for paths in self._paths:
            for path in paths:
                path.unlink(missing_ok=True)


def _listen(path: Path) -> socket.socket:
    if len(str(path).encode()) > _MAX_SOCKET_PATH:
        raise OSError(f"{path}: too long a path for a Unix socket")
    path.unlink(missing_ok=True)  # the work directory is the run's own
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(1)
    except BaseException:
        sock.close()
        raise
    return sock
