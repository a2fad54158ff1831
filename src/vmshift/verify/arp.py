"""Is an IPv4 address up in the guest? Ask it with ARP over one of the NIC's wires.

A wire carries the NIC's Ethernet frames between the check and qemu, and nothing else: the
guest reaches no network through it. Two transports, one ARP:
- UdpWire (libvirt domains): the NIC is a qemu socket netdev on a pair of UDP ports on
  127.0.0.1, one frame per datagram;
- StreamWire (-o qemu's script): the NIC keeps its user-mode netdev; qemu's filter-mirror
  copies the frames the guest sends to one Unix stream socket and filter-redirector delivers
  to the guest what arrives on another. On both, each frame is a 4-byte big-endian length,
  then the frame (net/filter-mirror.c, vnet_hdr_support off).
A guest that brought its static address up answers an ARP request for that address on the
NIC that holds it, which proves more than a login prompt: the network configuration survived
the conversion and the NIC's driver works.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

BROADCAST = b"\xff" * 6
# A locally administered address: no NIC in the world has it.
PROBE_MAC = bytes.fromhex("02005e0a0b0c")
ETH_ARP = 0x0806
REQUEST, REPLY = 1, 2
_LENGTH = struct.Struct("!I")


class Wire(Protocol):
    """One NIC's frames: select on it, then receive what arrived; send frames to the guest."""

    @property
    def mac(self) -> str | None: ...  # the NIC's MAC, as the target wrote it

    @property
    def ended(self) -> bool: ...  # nothing more will arrive

    def fileno(self) -> int: ...

    def send(self, frame: bytes) -> None: ...

    def receive(self) -> list[bytes]: ...  # the frames readable now (select said so)

    def close(self) -> None: ...


@dataclass(frozen=True)
class UdpWire:
    """One NIC's UDP pair: `sock` is bound to the port qemu sends the guest's frames to;
    frames for the guest go to guest_port."""

    sock: socket.socket
    guest_port: int
    mac: str | None

    @property
    def ended(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, frame: bytes) -> None:
        self.sock.sendto(frame, ("127.0.0.1", self.guest_port))

    def receive(self) -> list[bytes]:
        return [self.sock.recv(65536)]

    def close(self) -> None:
        self.sock.close()


@dataclass
class StreamWire:
    """One NIC's pair of length-framed streams: `tapped` carries the guest's frames to the
    check (filter-mirror's outdev), `inject` the check's frames to the guest
    (filter-redirector's indev)."""

    tapped: socket.socket
    inject: socket.socket
    mac: str | None
    _pending: bytearray = field(default_factory=bytearray)
    ended: bool = False  # qemu closed the stream

    def fileno(self) -> int:
        return self.tapped.fileno()

    def send(self, frame: bytes) -> None:
        try:
            self.inject.sendall(_LENGTH.pack(len(frame)) + frame)
        except OSError:  # qemu is gone: nothing will answer
            self.ended = True

    def receive(self) -> list[bytes]:
        chunk = self.tapped.recv(65536)
        self.ended = not chunk
        self._pending += chunk
        return unframe(self._pending)

    def close(self) -> None:
        self.tapped.close()
        self.inject.close()


def unframe(pending: bytearray) -> list[bytes]:
    """Take the complete length-framed frames off the front of pending."""
    frames = []
    while len(pending) >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(pending)
        if len(pending) < _LENGTH.size + size:
            break
        frames.append(bytes(pending[_LENGTH.size : _LENGTH.size + size]))
        del pending[: _LENGTH.size + size]
    return frames


def open_wire(mac: str | None) -> UdpWire:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return UdpWire(sock, free_udp_port(), mac)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def request(address: str) -> bytes:
    """An ARP request for address, from a neighbour in its /24 (Linux answers any sender)."""
    target = ipaddress.IPv4Address(address)
    sender = target + 1 if int(target) & 0xFF < 254 else target - 1
    arp = struct.pack(
        "!HHBBH6s4s6s4s",
        1, 0x0800, 6, 4, REQUEST, PROBE_MAC, sender.packed, b"\0" * 6, target.packed,
    )  # fmt: skip
    return BROADCAST + PROBE_MAC + struct.pack("!H", ETH_ARP) + arp


def reply_from(frame: bytes, address: str) -> str | None:
    """The MAC that answers for address in frame, if frame is that ARP reply."""
    if len(frame) < 42 or struct.unpack("!H", frame[12:14])[0] != ETH_ARP:
        return None
    op = struct.unpack("!H", frame[20:22])[0]
    sender_mac, sender_ip = frame[22:28], frame[28:32]
    if op != REPLY or sender_ip != ipaddress.IPv4Address(address).packed:
        return None
    return _mac_text(sender_mac)


def _frames(wires: Sequence[Wire], wait: float) -> list[bytes]:
    """The frames that arrive on the wires within wait seconds (those that ended aside)."""
    live = [w for w in wires if not w.ended]
    if not live:
        time.sleep(wait)
        return []
    ready, _, _ = select.select(live, [], [], wait)
    return [frame for wire in ready for frame in wire.receive()]


def sender(wires: Sequence[Wire], wait: float) -> str | None:
    """Within wait seconds, the guest MAC that sent a frame on one of the wires, if any: a
    guest whose NIC driver works talks (DHCP, ARP, neighbour discovery) once it is up. The
    frames read are gone: this also keeps the wires drained."""
    macs = {w.mac.lower() for w in wires if w.mac}
    for frame in _frames(wires, wait):
        source = _mac_text(frame[6:12]) if len(frame) >= 14 else ""
        if source in macs:
            return source
    return None


def probe(wires: Sequence[Wire], addresses: list[str], deadline: float) -> dict[str, str | None]:
    """Ask every wire for every address, once a second, until each has answered or the
    deadline; returns address -> the MAC that answered (None: no answer)."""
    answers: dict[str, str | None] = dict.fromkeys(addresses)
    next_ask = 0.0
    while time.monotonic() < deadline and None in answers.values():
        now = time.monotonic()
        if now >= next_ask:
            for address in (a for a, mac in answers.items() if mac is None):
                for wire in wires:
                    wire.send(request(address))
            next_ask = now + 1.0
        for frame in _frames(wires, 0.2):
            for address in answers:
                mac = reply_from(frame, address)
                if mac is not None:
                    answers[address] = mac
    return answers
