"""What the P2V client reports while it works: for the console log (unattended) and the UI.

The server streams its side as JSON lines (server.py); the client turns them, and its own
steps, into these events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    output: str | None  # -o of the profile: rhv, libvirt, local ...
    storage: str | None  # -os of the profile
    origin: str  # the file it comes from on the server


@dataclass(frozen=True)
class ServerInfo:
    """What `test connection` shows: the server's vmshift version and its profiles."""

    version: str
    profiles: tuple[ProfileInfo, ...]
    user: str  # who the server runs as
    host_key: str  # the server's host key fingerprint, SHA256:...


@dataclass(frozen=True)
class LogLine:
    text: str
    source: str = "client"  # client or server


@dataclass(frozen=True)
class StageChange:
    stage: str  # connect, export, convert, copy, finalize, verify, done
    message: str


@dataclass(frozen=True)
class DiskProgress:
    disk: str  # the client's kernel name: sda
    done: int  # bytes
    total: int  # bytes
    phase: str = "copy"


@dataclass(frozen=True)
class Finished:
    ok: bool
    exit_code: int
    summary: tuple[str, ...] = field(default_factory=tuple)  # the server run's last lines


P2VEvent = LogLine | StageChange | DiskProgress | Finished
EventSink = Callable[[P2VEvent], None]
