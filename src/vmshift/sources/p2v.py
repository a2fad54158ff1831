"""-i p2v: a physical machine whose disks the P2V client forwards over SSH (issue 13).

`vmshift p2v-server` writes the client's request (the machine's description and, per chosen
disk, the Unix socket its NBD export was forwarded to) into its session directory and runs
`vmshift convert -i p2v SESSION/request.json` with the profile's options. Everything after the
source sees ordinary nbd+unix disks, read remotely: fetched once through copy-on-read
overlays, the copy resumable when the link drops (the client forwards the same sockets again).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmshift.errors import SourceError
from vmshift.model.vm import (
    Controller,
    CpuTopology,
    DiskEndpoint,
    Firmware,
    Nic,
    Removable,
    SourceDisk,
    SourceVM,
)
from vmshift.p2v.layout import Layout
from vmshift.p2v.machine import Machine
from vmshift.sources.base import SourceOptions
from vmshift.sources.p2v_reshape import reshape

REQUEST_SCHEMA = "vmshift-p2v-request/1"
MAX_REQUEST = 1 << 20  # a machine's description is a few kB

# The bus a physical disk's kernel name says it hangs off: what the guest's drivers knew.
_BUSES = (
    ("nvme", Controller.NVME),
    ("sd", Controller.SATA),
    ("hd", Controller.IDE),
    ("vd", Controller.VIRTIO_BLK),
)
# NIC drivers whose model libvirt and the converters know by another name.
_NIC_MODELS = {"virtio_net": "virtio", "8139cp": "rtl8139", "8139too": "rtl8139"}


@dataclass(frozen=True)
class ForwardedDisk:
    name: str  # the client's kernel name: sda
    socket: str  # the Unix socket here its export is read through (a stable name)
    size: int  # bytes
    used: int | None = None  # bytes the client marks as data (the rest reads as holes)
    delete: tuple[int, ...] = ()  # p2v.partitions: partition numbers left out
    resize: tuple[tuple[int, int], ...] = ()  # p2v.resize: (partition number, new size)
    # The socket this connection's forward made; the server links socket to it.
    forwarded: str | None = None

    @property
    def layout(self) -> Layout:
        return Layout(tuple(self.delete), tuple((int(n), int(s)) for n, s in self.resize))


@dataclass(frozen=True)
class P2VRequest:
    """What the client asked the server to convert (request.json in the session directory)."""

    machine: Machine
    disks: tuple[ForwardedDisk, ...]
    interfaces: tuple[str, ...]  # NICs to give the guest, in order
    session: str  # the session id: the same machine's reconnects get the same one
    removables: tuple[str, ...] = ()  # removable media to give the guest a drive for

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REQUEST_SCHEMA,
            "session": self.session,
            "machine": self.machine.to_json(),
            "disks": [
                {**d.__dict__, "delete": list(d.delete), "resize": [list(r) for r in d.resize]}
                for d in self.disks
            ],
            "interfaces": list(self.interfaces),
            "removables": list(self.removables),
        }

    @classmethod
    def from_json(cls, doc: Any, where: str) -> P2VRequest:
        if not isinstance(doc, dict) or doc.get("schema") != REQUEST_SCHEMA:
            raise SourceError(f"{where}: not a P2V request ({REQUEST_SCHEMA})")
        try:
            return cls(
                machine=Machine.from_json(doc["machine"]),
                disks=tuple(_forwarded(d) for d in doc["disks"]),
                interfaces=tuple(str(i) for i in doc.get("interfaces", ())),
                session=str(doc["session"]),
                removables=tuple(str(r) for r in doc.get("removables", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"{where}: a malformed P2V request ({exc})") from exc


def _forwarded(doc: dict[str, Any]) -> ForwardedDisk:
    resize = tuple((int(n), int(size)) for n, size in doc.get("resize", ()))
    delete = tuple(int(n) for n in doc.get("delete", ()))
    return ForwardedDisk(**{**doc, "resize": resize, "delete": delete})


def read_request(path: Path) -> P2VRequest:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_REQUEST + 1)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the P2V request: {exc.strerror}") from exc
    if len(data) > MAX_REQUEST:
        raise SourceError(f"{path}: far too large for a P2V request")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise SourceError(f"{path}: not JSON ({exc})") from exc
    return P2VRequest.from_json(doc, str(path))


def _controller(name: str) -> Controller:
    return next((bus for prefix, bus in _BUSES if name.startswith(prefix)), Controller.UNKNOWN)


def answers(path: str) -> bool:
    """Whether the forwarded export still accepts a connection (the SSH link is up)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class P2VSource:
    def __init__(self, opts: SourceOptions) -> None:
        if len(opts.args) != 1:
            raise SourceError("-i p2v: give one argument, the P2V request file")
        self.path = Path(opts.args[0])
        self.opts = opts
        self.request: P2VRequest | None = None
        self.reshaped: set[str] = set()  # disks staged into the work directory, new layout

    def open(self, workdir: Path) -> SourceVM:
        request = self.request = read_request(self.path)
        m = request.machine
        disks = []
        for index, d in enumerate(request.disks):
            if not answers(d.socket):
                raise SourceError(
                    f"{self.path}: disk {d.name}: nothing answers on {d.socket}",
                    hint="the P2V client forwards each disk over its SSH connection; "
                    "is it still connected?",
                )
            endpoint = DiskEndpoint(f"nbd+unix:///?socket={d.socket}", "raw", d.size)
            described = m.disk(d.name)
            if d.layout.changed:
                if described is None:
                    raise SourceError(f"{self.path}: disk {d.name} is to be reshaped but is "
                                      "not in the description")  # fmt: skip
                path, size = reshape(endpoint.uri, described, d.layout, workdir)
                endpoint = DiskEndpoint(str(path), "qcow2", size)
                self.reshaped.add(d.name)
            disks.append(SourceDisk(endpoint, _controller(d.name), bus=0, unit=index, name=d.name))
        nics = []
        for name in request.interfaces:
            iface = next((i for i in m.interfaces if i.name == name), None)
            if iface is None:
                raise SourceError(f"{self.path}: interface {name} is not in the description")
            driver = iface.driver or "unknown"
            nics.append(Nic(iface.mac, _NIC_MODELS.get(driver, driver), iface.name))
        removables, warnings = self._removables(request)
        cpu = m.cpu
        return SourceVM(
            name=self.opts.name or m.hostname,
            memory=self.opts.memory or m.memory,
            vcpus=self.opts.vcpus or cpu.count,
            topology=CpuTopology(cpu.sockets, cpu.cores, cpu.threads),
            firmware=Firmware.UEFI if m.firmware == "uefi" else Firmware.BIOS,
            disks=tuple(disks),
            nics=tuple(nics),
            removables=removables,
            warnings=warnings,
            origin="physical",
            source_file=str(self.path),
        )

    def _removables(self, request: P2VRequest) -> tuple[tuple[Removable, ...], tuple[str, ...]]:
        """An empty drive of the same kind for each chosen CD/DVD or floppy drive (what was in
        it is not copied); a removable USB disk has no such drive: it is named in a warning."""
        found = {r.name: r for r in request.machine.removables}
        drives: list[Removable] = []
        warnings: list[str] = []
        for name in request.removables:
            device = found.get(name)
            if device is None:
                raise SourceError(f"{self.path}: removable {name} is not in the description")
            if device.kind in ("cdrom", "floppy"):
                bus = Controller.SATA if device.kind == "cdrom" else Controller.UNKNOWN
                unit = sum(1 for d in drives if d.kind == device.kind)
                drives.append(Removable(device.kind, bus, unit=unit))
            else:
                why = "a removable disk gets no drive in the guest"
                warnings.append(f"{name} ({device.kind}): {why}; convert it as a disk "
                                f"(p2v.disks={name}) to keep it")  # fmt: skip
        return tuple(drives), tuple(warnings)

    # RemoteSource: the disks cross the client's SSH link.
    def fetched(self) -> dict[str, int]:
        """Counted by the client, which serves the exports, and shown there."""
        return {}

    def lost(self) -> SourceError | None:
        if self.request is None:
            return None
        remote = [d for d in self.request.disks if d.name not in self.reshaped]
        gone = [d.name for d in remote if not answers(d.socket)]
        if not gone:
            return None
        return SourceError(
            f"the link to the physical machine was lost (disk {', '.join(gone)} no longer answers)",
            hint="the P2V client reconnects and the copy resumes; otherwise run it again",
        )

    # ReopenableSource: a reconnecting client forwards the same disks to the same sockets.
    def identity(self) -> tuple[str, ...] | None:
        if self.request is None or self.reshaped:
            return None  # a reshaped disk is made again from the client's export
        m = self.request.machine
        parts = [m.hostname, self.request.session]
        for d in self.request.disks:
            disk = m.disk(d.name)
            parts += [d.name, str(d.size), (disk.serial if disk else None) or ""]
        return tuple(parts)

    def close(self) -> None:
        """Nothing to stop: the exports are the client's."""
