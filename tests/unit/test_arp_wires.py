"""verify/arp.py: one ARP check over its two frame transports, UDP datagrams (libvirt
domains) and length-framed streams (qemu's net filters, -o qemu), with a stand-in guest
that answers as Linux does."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

from vmshift.verify import arp

GUEST_MAC = bytes.fromhex("0050561a2b3c")


def _answer(request: bytes) -> bytes:
    """The guest's ARP reply to request, addressed to whoever asked."""
    asker_mac, asker_ip, wanted = request[22:28], request[28:32], request[38:42]
    return (
        asker_mac + GUEST_MAC + b"\x08\x06"
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, arp.REPLY)
        + GUEST_MAC + wanted + asker_mac + asker_ip
    )  # fmt: skip


def test_stream_frames_are_a_big_endian_length_then_the_frame() -> None:
    tapped, qemu_out = socket.socketpair()
    inject, qemu_in = socket.socketpair()
    wire = arp.StreamWire(tapped, inject, "00:50:56:1a:2b:3c")
    try:
        wire.send(b"\x01\x02\x03")
        assert qemu_in.recv(100) == b"\x00\x00\x00\x03\x01\x02\x03"
        # Frames arrive however the stream cuts them: only whole ones come out.
        qemu_out.sendall(b"\x00\x00\x00\x02ab\x00\x00")
        assert wire.receive() == [b"ab"]
        qemu_out.sendall(b"\x00\x01c")
        assert wire.receive() == [b"c"]
        assert not wire.ended
        qemu_out.close()
        assert wire.receive() == [] and wire.ended
        qemu_in.close()
        wire.send(b"x")  # qemu is gone: no error, nothing to answer
        assert wire.ended
    finally:
        wire.close()
        qemu_in.close()


def _guest(recv: Callable[[], bytes], send: Callable[[bytes], None], answers: str) -> None:
    """Answer ARP requests for answers (one address), as long as frames come."""
    while frame := recv():
        if frame[12:14] == b"\x08\x06" and frame[38:42] == socket.inet_aton(answers):
            send(_answer(frame))


# The guest has 192.0.2.10; nothing answers for 192.0.2.11.
ANSWERS = {"192.0.2.10": "00:50:56:1a:2b:3c", "192.0.2.11": None}


def _probe(
    wire: arp.Wire, recv: Callable[[], bytes], send: Callable[[bytes], None], *qemu: socket.socket
) -> dict[str, str | None]:
    """Probe the wire for both addresses, the guest on recv/send (qemu's ends of the wire)."""
    guest = threading.Thread(target=_guest, args=(recv, send, "192.0.2.10"), daemon=True)
    guest.start()
    try:
        return arp.probe([wire], list(ANSWERS), time.monotonic() + 2.5)
    finally:
        wire.close()
        guest.join(timeout=5)
        for sock in qemu:
            sock.close()


def test_the_same_probe_over_a_stream_wire() -> None:
    tapped, qemu_out = socket.socketpair()
    inject, qemu_in = socket.socketpair()
    wire = arp.StreamWire(tapped, inject, "00:50:56:1a:2b:3c")

    def recv() -> bytes:
        head = qemu_in.recv(4, socket.MSG_WAITALL)
        if len(head) < 4:
            return b""
        return qemu_in.recv(struct.unpack("!I", head)[0], socket.MSG_WAITALL)

    def send(frame: bytes) -> None:
        qemu_out.sendall(struct.pack("!I", len(frame)) + frame)

    assert _probe(wire, recv, send, qemu_out, qemu_in) == ANSWERS


def test_the_same_probe_over_a_udp_wire() -> None:
    wire = arp.open_wire("00:50:56:1a:2b:3c")
    qemu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    qemu.bind(("127.0.0.1", wire.guest_port))
    qemu.settimeout(1)

    def recv() -> bytes:
        try:
            return qemu.recv(65536)
        except OSError:
            return b""

    def send(frame: bytes) -> None:
        qemu.sendto(frame, wire.sock.getsockname())

    assert _probe(wire, recv, send, qemu) == ANSWERS
