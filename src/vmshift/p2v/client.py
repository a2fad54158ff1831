"""The P2V client's work: export the chosen disks, talk to `vmshift p2v-server`, and keep
going when the link drops.

    test_connection(settings)                  -> ServerInfo (the UI's "Test connection")
    convert(settings, machine, sink, cancel)   -> Finished

convert() serves each chosen disk read-only through nbdkit on a Unix socket here, its free
space marked as holes from the filesystems' own allocation maps (usedmap.py), forwards the
sockets into the server's session directory over the SSH master connection (ssh_link.py) and
runs `p2v-server convert`, relaying what it streams back. When the link drops before the
server's verdict, it reconnects with backoff and asks for the same conversion with --resume:
the server keeps an interrupted copy for that (same session directory, same socket paths), so
the copy continues where it stopped; if the link does not come back in RECONNECT_WINDOW, the
run fails, and the server has left nothing that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vmshift.errors import UsageError
from vmshift.p2v.events import (
    DiskProgress,
    EventSink,
    Finished,
    LogLine,
    ProfileInfo,
    ServerInfo,
    StageChange,
)
from vmshift.p2v.layout import Layout, layouts
from vmshift.p2v.machine import Disk, Machine
from vmshift.p2v.settings import P2VSettings
from vmshift.p2v.ssh_link import LinkError, LinkSpec, SshLink
from vmshift.p2v.usedmap import UsedMap, aligned, subtract, used_map, write_extentlist
from vmshift.sources.nbdkit import NbdkitServers, reachable
from vmshift.sources.p2v import REQUEST_SCHEMA

log = logging.getLogger(__name__)

RECONNECT_WINDOW = 300.0  # seconds to get the link back before the run fails
BACKOFF_MAX = 30.0
PROBE_SESSION = "connection-test"
HELLO_TIMEOUT = 60.0  # the server's first answer: its version and profiles


def link_spec(settings: P2VSettings) -> LinkSpec:
    if settings.server is None:
        raise UsageError("p2v.server: no conversion server given")
    return LinkSpec(
        server=settings.server,
        port=settings.port,
        user=settings.user,
        identity=Path(settings.identity) if settings.identity else None,
        password=settings.password,
        hostkey=settings.hostkey,
        compress=settings.compress,
    )


def _hello(link: SshLink, session: str) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            link.command("hello", session), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=HELLO_TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise LinkError(f"{link.spec.where}: `vmshift p2v-server` did not answer within "
                        f"{HELLO_TIMEOUT:.0f} s") from None  # fmt: skip
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        said = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise LinkError(
            f"{link.spec.where}: `vmshift p2v-server` did not answer: {said}",
            hint="install vmshift on the server and make `vmshift p2v-server` the key's "
            "command (docs/p2v.md)",
        ) from None
    if not isinstance(doc, dict):
        raise LinkError(f"{link.spec.where}: `vmshift p2v-server` answered nonsense")
    return doc


def _server_info(doc: dict[str, Any], host_key: str) -> ServerInfo:
    profiles = tuple(
        ProfileInfo(str(p["name"]), p.get("output"), p.get("storage"), str(p.get("origin", "")))
        for p in doc.get("profiles", ())
    )
    return ServerInfo(str(doc.get("vmshift", "?")), profiles, str(doc.get("user", "?")), host_key)


def test_connection(settings: P2VSettings) -> ServerInfo:
    """Log in, ask the server who it is; LinkError (one line) when that fails."""
    with tempfile.TemporaryDirectory(prefix="vmshift-p2v-") as tmp:
        link = SshLink(link_spec(settings), Path(tmp))
        try:
            link.open()
            return _server_info(_hello(link, PROBE_SESSION), link.host_key)
        finally:
            link.close()


def without(usage: UsedMap, disk: Disk, numbers: Sequence[int]) -> UsedMap:
    """usage less the partitions left out (p2v.partitions): they are not sent."""
    gone = [(p.start, p.start + p.size) for p in disk.partitions if p.number in numbers]
    if not gone:
        return usage
    kept = [piece for off, length in usage.extents for piece in subtract((off, off + length), gone)]
    return dataclasses.replace(usage, extents=aligned(kept, usage.size))


def session_id(machine: Machine, disks: Sequence[Disk]) -> str:
    """The same machine and disks always get the same session on the server (a reconnect
    finds its kept copy there)."""
    ident = [machine.hostname] + [f"{d.name}:{d.size}:{d.serial or ''}" for d in disks]
    ident += [i.mac for i in machine.interfaces]
    return "p2v-" + hashlib.sha256("\n".join(ident).encode()).hexdigest()[:16]


def chosen_disks(settings: P2VSettings, machine: Machine) -> list[Disk]:
    if not settings.disks:
        return list(machine.disks)
    chosen = []
    for name in settings.disks:
        disk = machine.disk(name)
        if disk is None:
            raise UsageError(f"p2v.disks: {name} is not a disk of this machine")
        chosen.append(disk)
    return chosen


@dataclass(frozen=True)
class _Export:
    disk: Disk
    sock: Path
    used: int
    layout: Layout


class _Exports:
    """nbdkit serving each chosen disk read-only, only its used data marked as data."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers = NbdkitServers()
        self.exports: list[_Export] = []

    def serve(self, disks: Sequence[Disk], settings: P2VSettings, sink: EventSink) -> None:
        """Map each disk's used data, check the layout changes settings ask for against it
        (before anything is sent), and serve each disk without what is left out."""
        usages = {d.name: used_map(Path(d.path), d, self.directory) for d in disks}
        used = {p.name: p.used for u in usages.values() for p in u.partitions}
        plans = layouts(disks, settings.partitions, settings.resize, used)
        for disk in disks:
            plan = plans[disk.name]
            usage = without(usages[disk.name], disk, plan.delete)
            numbers = {p.name: p.number for p in disk.partitions}
            for part in usages[disk.name].partitions:
                what = f"{disk.name}: {part.name} {part.fstype or 'unknown'}: "
                if numbers.get(part.name) in plan.delete:
                    sink(LogLine(what + "left out (p2v.partitions)"))
                else:
                    sink(LogLine(what + f"{part.used} bytes used ({part.method})"))
            for number, size in plan.resize:
                sink(LogLine(f"{disk.name}: partition {number} to be resized to {size >> 20} MiB"))
            self._serve(disk, usage, plan)
            sink(LogLine(f"{disk.name}: {usage.used_bytes} of {disk.size} bytes to send"))

    def _serve(self, disk: Disk, usage: UsedMap, layout: Layout) -> None:
        extents = self.directory / f"{disk.name}.extents"
        write_extentlist(usage, extents)
        sock = self.directory / f"{disk.name}.sock"
        self._start(disk, sock)
        self.exports.append(_Export(disk, sock, usage.used_bytes, layout))

    def _start(self, disk: Disk, sock: Path) -> None:
        extents = self.directory / f"{disk.name}.extents"
        plugin = ["file", f"file={disk.path}", f"extentlist={extents}"]
        self.servers.serve(sock, plugin, disk.name, filters=["extentlist"], count_reads=True)

    def revive(self, sink: EventSink) -> None:
        """Serve again any disk whose nbdkit ended: nbdkit 1.32 can abort when the link
        drops in the middle of a reply."""
        for export in self.exports:
            if not self.servers.alive(export.sock):
                sink(LogLine(f"{export.disk.name}: serving the disk again"))
                self.servers.retire(export.sock)
                self._start(export.disk, export.sock)

    def sent(self) -> dict[str, int]:
        return self.servers.fetched()

    def close(self) -> None:
        self.servers.close()


class _Run:
    """One `p2v-server convert` over one link: its events to sink, its verdict if it came."""

    def __init__(self, link: SshLink, sink: EventSink, exports: Sequence[_Export]) -> None:
        self.link = link
        self.sink = sink
        self.names = {e.disk.name for e in exports}
        self.done: Finished | None = None

    def _disk_of(self, label: str) -> str:
        return next((n for n in self.names if label == n or label.endswith("-" + n)), label)

    def _events(self, stream: IO[str]) -> None:
        for raw in stream:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            kind = ev.get("event")
            if kind == "progress":
                self.sink(DiskProgress(self._disk_of(str(ev["label"])), int(ev["done"]),
                                       int(ev["total"]), str(ev["phase"])))  # fmt: skip
            elif kind == "stage":
                self.sink(StageChange(str(ev["stage"]), str(ev["message"])))
            elif kind == "log":
                self.sink(LogLine(str(ev["line"]), "server"))
            elif kind == "done":
                rc = int(ev["rc"])
                self.done = Finished(rc == 0, rc, tuple(str(s) for s in ev.get("summary", ())))

    def _stderr(self, stream: IO[str]) -> None:
        for raw in stream:
            if raw.strip():
                self.sink(LogLine(raw.rstrip("\n"), "server"))

    def run(self, session: str, doc: dict[str, Any], cancel: threading.Event) -> Finished | None:
        proc = subprocess.Popen(
            self.link.command("convert", session), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=self.link.env,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        readers = [
            threading.Thread(target=self._events, args=(proc.stdout,), daemon=True),
            threading.Thread(target=self._stderr, args=(proc.stderr,), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            proc.stdin.write(json.dumps(doc) + "\n")
            proc.stdin.flush()
            while proc.poll() is None:
                if cancel.wait(0.5):
                    proc.stdin.write("cancel\n")
                    proc.stdin.flush()
                    break
        except (BrokenPipeError, OSError):
            pass  # the link went: the verdict did not come
        proc.wait()
        for t in readers:
            t.join()
        return self.done


def convert(
    settings: P2VSettings, machine: Machine, sink: EventSink, cancel: threading.Event
) -> Finished:
    """Convert the machine on the server settings name; blocks until the server's verdict,
    a cancel, or a link that did not come back."""
    if not settings.profile:
        raise UsageError("p2v.profile: name the server's conversion profile")
    disks = chosen_disks(settings, machine)
    if not disks:
        raise UsageError("p2v.disks: no disk to convert")
    with tempfile.TemporaryDirectory(prefix="vmshift-p2v-") as tmp:
        directory = Path(tmp)
        exports = _Exports(directory)
        try:
            names = ", ".join(d.name for d in disks)
            sink(StageChange("export", f"finding the used data of {names}"))
            exports.serve(disks, settings, sink)
            conversation = _Conversation(
                link_spec(settings), directory, settings, machine, session_id(machine, disks),
                exports, sink, cancel,
            )  # fmt: skip
            finished = conversation.run()
        finally:
            exports.close()
        for name, sent in exports.sent().items():
            sink(LogLine(f"{name}: {sent} bytes read from the disk and sent"))
        return finished


@dataclass(frozen=True)
class _Conversation:
    spec: LinkSpec
    directory: Path
    settings: P2VSettings
    machine: Machine
    session: str
    served: _Exports
    sink: EventSink
    cancel: threading.Event

    @property
    def exports(self) -> Sequence[_Export]:
        return self.served.exports

    def request(self, remote: str, token: str, resume: bool) -> dict[str, Any]:
        """The JSON line `p2v-server convert` reads: the P2VRequest and the options."""
        settings, machine = self.settings, self.machine
        interfaces = list(settings.interfaces) or [i.name for i in machine.interfaces]
        # The removable media drives: the ones named, else every CD/DVD and floppy drive.
        drives = [r.name for r in machine.removables if r.kind in ("cdrom", "floppy")]
        removables = list(settings.removable) or drives
        disks = [
            {"name": e.disk.name, "socket": f"{remote}/{e.disk.name}.sock", "size": e.disk.size,
             "forwarded": f"{remote}/{e.disk.name}.{token}.sock",
             "used": e.used, "delete": list(e.layout.delete),
             "resize": [list(r) for r in e.layout.resize]}
            for e in self.exports
        ]  # fmt: skip
        request = {
            "schema": REQUEST_SCHEMA,
            "session": self.session,
            "machine": machine.to_json(),
            "disks": disks,
            "interfaces": interfaces,
            "removables": removables,
        }
        options = {
            "profile": settings.profile,
            "name": settings.name or machine.hostname,
            "vcpus": settings.vcpus,
            "memory": settings.memory,
            "network": [list(pair) for pair in settings.network],
            "resume": resume,
        }
        return {"request": request, "options": options}

    def attempt(self, resume: bool) -> Finished | None:
        """One connection: the verdict, or None when the link dropped before it came."""
        link = SshLink(self.spec, self.directory)
        try:
            self.sink(StageChange("connect", f"connecting to {self.spec.where}"))
            link.open()
            hello = _hello(link, self.session)
            remote = str(hello["session"])
            self.served.revive(self.sink)
            token = secrets.token_hex(4)  # this connection's own socket names
            for export in self.exports:
                # The path nbdkit listens on: a deep run directory's is a short link's.
                local = reachable(export.sock)
                link.forward(f"{remote}/{export.disk.name}.{token}.sock", local)
            where = f"{self.spec.server} (vmshift {hello.get('vmshift')})"
            self.sink(StageChange("convert", f"converting on {where}"))
            run = _Run(link, self.sink, self.exports)
            return run.run(self.session, self.request(remote, token, resume), self.cancel)
        finally:
            link.close()

    def run(self) -> Finished:
        where = self.spec.where
        resume = False
        lost_at: float | None = None
        backoff = 1.0
        while True:
            try:
                finished = self.attempt(resume)
            except LinkError as exc:
                if lost_at is None:  # never got as far as a run: say why at once
                    raise
                self.sink(LogLine(f"reconnecting: {exc.message}"))
                finished = None
            if finished is not None:
                return finished
            if self.cancel.is_set():
                return Finished(False, 130, ("cancelled",))
            now = time.monotonic()
            lost_at = lost_at if lost_at is not None else now
            if now - lost_at > RECONNECT_WINDOW:
                why = f"the link to {where} was lost and did not come back"
                return Finished(False, 1, (f"{why} within {RECONNECT_WINDOW:.0f} s",))
            self.sink(LogLine(f"the link to {where} dropped; reconnecting in {backoff:.0f} s"))
            if self.cancel.wait(backoff):
                return Finished(False, 130, ("cancelled",))
            backoff = min(backoff * 2, BACKOFF_MAX)
            resume = True
