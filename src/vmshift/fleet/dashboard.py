"""`vmshift plan serve`: a read-only web page of a plan's guests, live, over any PlanState.

    GET /                       the page (fleet/dashboard_page.py)
    GET /api/plan               {"plan": {"id", "path"}, "stages", "counts", "guests", "now"}
    GET /api/guests/NAME/log    {"name", "lines": [...]} (?lines=N: the last N, at most 2000)

Anything else is 404, any other method 405: nothing here writes the state. The standard
library's threading HTTP server is enough for the few people who watch a plan; each request
reads the state afresh (the runners write it from other processes or hosts).

Served on a loopback address, it answers only requests whose Host is a loopback name, so a
web page elsewhere cannot read the plan through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from vmshift.errors import EnvironmentProblem, VmshiftError
from vmshift.fleet import dashboard_page
from vmshift.fleet.plan import Plan
from vmshift.fleet.state import STAGES, GuestRecord, PlanState

log = logging.getLogger("vmshift.dashboard")

LOG_LINES = 200  # a guest's log lines the page shows
MAX_LOG_LINES = 2000
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class Dashboard:
    """What the pages show, read from the plan and its state (one lock: the handler threads
    share the state's connection)."""

    def __init__(self, plan: Plan, state: PlanState) -> None:
        self.plan = plan
        self.state = state
        self._lock = threading.Lock()

    def guests(self) -> list[GuestRecord]:
        """The state's guests, then those of the plan no run has registered yet (queued; not
        written: the dashboard only reads)."""
        with self._lock:
            records = self.state.guests()
        known = {g.name for g in records}
        return records + [
            GuestRecord(name=g.name) for g in self.plan.active() if g.name not in known
        ]

    def plan_json(self) -> dict[str, Any]:
        guests = self.guests()
        counts = dict.fromkeys(STAGES, 0)
        for g in guests:
            counts[g.stage] = counts.get(g.stage, 0) + 1
        return {
            "plan": {"id": self.plan.id, "path": str(self.plan.path.resolve())},
            "stages": list(counts),
            "counts": counts,
            "guests": [g.to_json() for g in guests],
            "now": time.time(),
        }

    def log_json(self, name: str, lines: int) -> dict[str, Any] | None:
        """A guest's log tail, or None when neither the plan nor its state has the guest."""
        if name not in {g.name for g in self.guests()}:
            return None
        with self._lock:
            tail = self.state.log_tail(name, lines)
        return {"name": name, "lines": tail}


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "vmshift-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._get(body=True)

    def do_HEAD(self) -> None:
        self._get(body=False)

    def _refuse(self) -> None:
        self.close_connection = True  # its body is not read: the connection cannot go on
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            _json({"error": f"{self.command} is not allowed: the dashboard is read-only"}),
            "application/json",
            extra={"Allow": "GET, HEAD", "Connection": "close"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

    def _get(self, *, body: bool) -> None:
        if not self.server.host_allowed(self.headers.get("Host", "")):
            self._send(HTTPStatus.FORBIDDEN, _json({"error": "unexpected Host"}), body=body)
            return
        url = urlsplit(self.path)
        parts = url.path.split("/")
        dashboard = self.server.dashboard
        try:
            if url.path == "/":
                page = dashboard_page.page().encode()
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8", body=body)
            elif url.path == "/api/plan":
                self._send(HTTPStatus.OK, _json(dashboard.plan_json()), body=body)
            elif len(parts) == 5 and parts[:3] == ["", "api", "guests"] and parts[4] == "log":
                lines = _lines(parse_qs(url.query).get("lines", []))
                data = dashboard.log_json(unquote(parts[3]), lines)
                if data is None:
                    self._send(HTTPStatus.NOT_FOUND, _json({"error": "no such guest"}), body=body)
                else:
                    self._send(HTTPStatus.OK, _json(data), body=body)
            else:
                self._send(HTTPStatus.NOT_FOUND, _json({"error": "not found"}), body=body)
        except VmshiftError as exc:  # the state cannot be read now (a store gone away)
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, _json({"error": exc.message}), body=body)
        except Exception:
            log.exception("the dashboard failed to answer %s", self.path)
            error = {"error": "internal error (see the server's log)"}
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, _json(error), body=body)

    def _send(
        self,
        status: HTTPStatus,
        payload: bytes,
        content_type: str = "application/json",
        *,
        body: bool = True,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(payload)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": dashboard_page.content_security_policy(),
            **(extra or {}),
        }
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


def _lines(values: list[str]) -> int:
    try:
        return max(1, min(MAX_LOG_LINES, int(values[-1]))) if values else LOG_LINES
    except ValueError:
        return LOG_LINES


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], dashboard: Dashboard) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.dashboard = dashboard
        self.loopback = _is_loopback(address[0])
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks its name up in DNS (getfqdn): slow on an offline host.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def host_allowed(self, host: str) -> bool:
        if not self.loopback or not host:
            return True
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        return name in LOOPBACK_NAMES or _is_loopback(name)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_NAMES


def make_server(plan: Plan, state: PlanState, *, bind: str, port: int) -> DashboardServer:
    """The dashboard listening on bind:port (0: any free port); serve_forever() serves it."""
    try:
        return DashboardServer((bind, port), Dashboard(plan, state))
    except OSError as exc:
        raise EnvironmentProblem(
            f"--bind {bind} --port {port}: cannot listen there: {exc.strerror or exc}",
            hint="choose another --port (0: any free port) or --bind address",
        ) from exc
