"""nbdkit python plugin: one file on an HTTPS server (a vSphere datastore's /folder service) as
a read-only NBD export, read with Range requests over several connections at once.

Why not nbdkit's curl plugin: in nbdkit 1.32 it answers one request at a time per NBD
connection, and qemu opens one connection, so a disk crossed the network over one HTTPS
connection, which an ESXi host throttles. Here the thread model is parallel: the requests
qemu-img keeps in flight are served by up to `connections` HTTPS connections. A pinned
certificate (-io vddk-thumbprint) is checked on every connection this plugin opens, where curl
could only be told not to verify at all.

It runs inside nbdkit's own Python (Debian's python3, package nbdkit-plugin-python), not in
vmshift's: the standard library only, nothing from vmshift. The session cookie comes from a
file that vmshift keeps current (sources/vsphere_session.py); it is read again when a request
is refused as unauthorised. A read that fails (a reset, a timeout, a 5xx or 429) closes the
connection at fault and is tried again on another, after 1, 2, 4 ... seconds (at most 30
between tries), while the other reads in flight go on: nbdkit's retry filter would serialise
them, its retry-request filter cannot back off. A 4xx answer or a certificate that is not the
pinned one fails at once.

Parameters: url=, cookie-file=, connections= (default 4), timeout= (seconds, default 60),
verify=ca|none|sha1:HEX|sha256:HEX, retries= (default 0), retry-delay= (seconds, default 1).
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbdkit  # type: ignore[import-not-found]

API_VERSION = 2
MAX_DELAY = 30.0  # seconds between two tries of a read, at the most


class _Remote:
    """The file and the pool of HTTPS connections to it, shared by every NBD connection."""

    def __init__(self) -> None:
        self.settings: dict[str, str] = {}
        self.idle: list[http.client.HTTPSConnection] = []
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(4)
        self.size: int | None = None


_remote = _Remote()


def config(key: str, value: str) -> None:
    known = ("url", "cookie-file", "connections", "timeout", "verify", "retries", "retry-delay")
    if key not in known:
        raise RuntimeError(f"unknown parameter {key!r}")
    _remote.settings[key] = value


def config_complete() -> None:
    for key in ("url", "cookie-file"):
        if key not in _remote.settings:
            raise RuntimeError(f"the {key}= parameter is required")
    if urllib.parse.urlsplit(_remote.settings["url"]).scheme != "https":
        raise RuntimeError("url= must be an https:// URL")
    _remote.slots = threading.Semaphore(int(_remote.settings.get("connections", "4")))


def thread_model() -> int:
    return int(nbdkit.THREAD_MODEL_PARALLEL)


def open(readonly: bool) -> int:
    return 1  # every NBD connection shares the one pool of HTTPS connections


def can_write(h: int) -> bool:
    return False


def can_multi_conn(h: int) -> bool:
    return True  # read-only: every connection sees the same bytes


def get_size(h: int) -> int:
    if _remote.size is None:
        response = _patiently(lambda: _request("HEAD", {}))
        length = response.getheader("Content-Length")
        if length is None:
            raise RuntimeError("the server did not say the file's size (no Content-Length)")
        _remote.size = int(length)
    return _remote.size


def pread(h: int, buf: bytearray, offset: int, flags: int) -> None:
    _patiently(lambda: _request("GET", {"Range": f"bytes={offset}-{offset + len(buf) - 1}"}, buf))


class FinalError(RuntimeError):
    """An answer that trying again would not change (a 4xx, the wrong certificate)."""


def _patiently(call: Callable[[], Any]) -> Any:
    retries = int(_remote.settings.get("retries", "0"))
    delay = float(_remote.settings.get("retry-delay", "1"))
    for attempt in range(retries + 1):
        try:
            return call()
        except FinalError:
            raise
        except Exception as exc:
            if attempt == retries:
                raise
            nbdkit.debug(f"https_plugin: {exc}; trying again in {delay:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    raise AssertionError("unreachable")


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    if _remote.settings.get("verify", "ca") != "ca":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect() -> http.client.HTTPSConnection:
    parts = urllib.parse.urlsplit(_remote.settings["url"])
    conn = http.client.HTTPSConnection(
        parts.hostname or "",
        parts.port or 443,
        timeout=float(_remote.settings.get("timeout", "60")),
        context=_tls_context(),
    )
    conn.connect()
    verify = _remote.settings.get("verify", "ca")
    if ":" in verify:
        algorithm, wanted = verify.split(":", 1)
        der = conn.sock.getpeercert(binary_form=True) if conn.sock else None
        actual = hashlib.new(algorithm, der or b"").hexdigest()
        if actual != wanted.lower():
            conn.close()
            raise FinalError(f"the server's certificate is not the pinned one ({algorithm})")
    return conn


def _cookie() -> str:
    return Path(_remote.settings["cookie-file"]).read_text(encoding="ascii").strip()


def _request(method: str, headers: dict[str, str], into: bytearray | None = None) -> Any:
    """One request on a pooled connection. A pooled connection the server has closed since is
    replaced at once, and a refused cookie is read again (the session was renewed) once;
    anything else fails this read, for the retry filter above to repeat."""
    parts = urllib.parse.urlsplit(_remote.settings["url"])
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    with _remote.slots:
        with _remote.lock:
            conn = _remote.idle.pop() if _remote.idle else None
        reused, renewed = conn is not None, False
        while True:
            if conn is None:
                conn = _connect()
            try:
                conn.request(method, target, headers={**headers, "Cookie": _cookie()})
                response = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                conn.close()
                conn = None
                if not reused:
                    raise
                reused = False  # the server closed an idle connection: open a new one
                continue
            except BaseException:
                conn.close()
                raise
            try:
                if response.status in (401, 403) and not renewed:
                    response.read()
                    renewed = True
                    continue
                expected = 206 if into is not None else 200
                if response.status != expected:
                    final = 400 <= response.status < 500 and response.status not in (408, 429)
                    raise (FinalError if final else RuntimeError)(
                        f"{method} {target}: HTTP {response.status} {response.reason}"
                    )
                if into is not None:
                    _read_exactly(response, into)
                else:
                    response.read()
            except BaseException:
                conn.close()
                raise
            break
        with _remote.lock:
            _remote.idle.append(conn)
    return response


def _read_exactly(response: http.client.HTTPResponse, into: bytearray) -> None:
    view = memoryview(into)
    got = 0
    while got < len(into):
        n = response.readinto(view[got:])
        if not n:
            raise RuntimeError(f"the server sent {got} bytes of {len(into)}")
        got += n
    if response.read(1):
        raise RuntimeError("the server sent more than the range asked for")
