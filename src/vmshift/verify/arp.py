"""Is an IPv4 address up in the guest? Ask it with ARP over the NIC's UDP wire.

The boot check wires each NIC to a pair of UDP ports on 127.0.0.1 (qemu's socket netdev: one
Ethernet frame per datagram). A guest that brought its static address up answers an ARP
request for that address on the NIC that holds it, which proves more than a login prompt: the
network configuration survived the conversion and the NIC's driver works. Nothing leaves
127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from dataclasses import dataclass

BROADCAST = b"\xff" * 6
# A locally administered address: no NIC in the world has it.
PROBE_MAC = bytes.fromhex("02005e0a0b0c")
ETH_ARP = 0x0806
REQUEST, REPLY = 1, 2


@dataclass(frozen=True)
class Wire:
    """One NIC's UDP pair: `sock` is bound to the port qemu sends the guest's frames to;
    frames for the guest go to guest_port."""

    sock: socket.socket
    guest_port: int
    mac: str | None


def open_wire(mac: str | None) -> Wire:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return Wire(sock, free_udp_port(), mac)


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


def sender(wires: list[Wire], wait: float) -> str | None:
    """Within wait seconds, the guest MAC that sent a frame on one of the wires, if any: a
    guest whose NIC driver works talks (DHCP, ARP, neighbour discovery) once it is up."""
    ready, _, _ = select.select([w.sock for w in wires], [], [], wait)
    macs = {w.mac.lower() for w in wires if w.mac}
    for sock in ready:
        frame = sock.recv(65536)
        source = _mac_text(frame[6:12]) if len(frame) >= 14 else ""
        if source in macs:
            return source
    return None


def probe(wires: list[Wire], addresses: list[str], deadline: float) -> dict[str, str | None]:
    """Ask every wire for every address, once a second, until each has answered or the
    deadline; returns address -> the MAC that answered (None: no answer)."""
    answers: dict[str, str | None] = dict.fromkeys(addresses)
    next_ask = 0.0
    while time.monotonic() < deadline and None in answers.values():
        now = time.monotonic()
        if now >= next_ask:
            for address in (a for a, mac in answers.items() if mac is None):
                for wire in wires:
                    wire.sock.sendto(request(address), ("127.0.0.1", wire.guest_port))
            next_ask = now + 1.0
        ready, _, _ = select.select([w.sock for w in wires], [], [], 0.2)
        for sock in ready:
            frame = sock.recv(65536)
            for address in answers:
                mac = reply_from(frame, address)
                if mac is not None:
                    answers[address] = mac
    return answers
