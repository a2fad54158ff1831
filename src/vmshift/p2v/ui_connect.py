"""The first screen of the P2V console UI: where the conversion server is and how to log in.

"Test connection" asks the server (in a worker thread, the UI stays live) for its vmshift
version and its profiles; "Next" is enabled while the fields are the ones that passed the test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from textual import work
from textual.app import ComposeResult
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Static

from vmshift.errors import VmshiftError
from vmshift.p2v.events import ServerInfo
from vmshift.p2v.settings import P2VSettings
from vmshift.p2v.ui_widgets import ButtonRow, Form, button, field

TestConnection = Callable[[P2VSettings], ServerInfo]


def describe_server(settings: P2VSettings, info: ServerInfo) -> str:
    """What a passed test shows: the server's version, who it runs as, its profiles."""
    lines = [
        f"Connected to vmshift {info.version} on {settings.server}, running as {info.user}.",
        f"Host key: {info.host_key}",
    ]
    if not info.profiles:
        lines.append("The server has no profiles: add one to /etc/virt-v2v.conf there.")
    else:
        lines.append(f"Profiles ({len(info.profiles)}):")
        width = max(len(p.name) for p in info.profiles)
        for p in info.profiles:
            target = " ".join(
                part
                for part in (
                    f"-o {p.output}" if p.output else "",
                    f"-os {p.storage}" if p.storage else "",
                )
                if part
            )
            lines.append(f"  {p.name:{width}}  {target}  ({p.origin})")
    return "\n".join(lines)


class ConnectionScreen(Screen[None]):
    """Server, port, user, password, SSH key and host key; Test connection; Next."""

    class Connected(Message):
        """Next was pressed after a passed test: these settings reach this server."""

        def __init__(self, settings: P2VSettings, server: ServerInfo) -> None:
            super().__init__()
            self.settings = settings
            self.server = server

    def __init__(self, settings: P2VSettings, test: TestConnection) -> None:
        super().__init__()
        self._settings = settings
        self._test = test
        self._tested: P2VSettings | None = None  # the fields that passed the test
        self._server: ServerInfo | None = None
        self._testing = False

    def compose(self) -> ComposeResult:
        s = self._settings
        yield Static("vmshift P2V: connect to the conversion server", classes="title")
        with Form():
            yield field("Conversion server:", Input(s.server or "", id="server", compact=True))
            yield field("SSH port:", Input(str(s.port), id="port", type="integer", compact=True))
            yield field("User:", Input(s.user, id="user", compact=True))
            yield field(
                "Password:", Input(s.password or "", id="password", password=True, compact=True)
            )
            yield field(
                "SSH key:",
                Input(
                    s.identity or "",
                    id="identity",
                    placeholder="path or file:// URL of the private key",
                    compact=True,
                ),
            )
            yield field(
                "Host key:",
                Input(
                    s.hostkey or "",
                    id="hostkey",
                    placeholder="SHA256:... (else known_hosts)",
                    compact=True,
                ),
            )
            with ButtonRow():
                yield button("Test connection", "test")
                yield button("Next >", "next", disabled=True)
            yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#server", Input).focus()

    def form(self) -> P2VSettings | str:
        """The settings the fields say, or a one-line reason why they cannot be used."""
        value = {i.id: i.value.strip() for i in self.query(Input) if i.id}
        if not value["server"]:
            return "Enter the conversion server's host name or address."
        try:
            port = int(value["port"])
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            return "The SSH port is a number from 1 to 65535."
        if not value["user"]:
            return "Enter the user to log in as on the conversion server."
        return dataclasses.replace(
            self._settings,
            server=value["server"],
            port=port,
            user=value["user"],
            # Not stripped: a password may begin or end with a space.
            password=self.query_one("#password", Input).value or None,
            identity=value["identity"] or None,
            hostkey=value["hostkey"] or None,
        )

    def _say(self, text: str, kind: str) -> None:
        status = self.query_one("#status", Static)
        status.update(text)
        status.set_classes(kind)

    def on_input_changed(self, event: Input.Changed) -> None:
        passed = self._tested is not None and self.form() == self._tested
        self.query_one("#next", Button).disabled = not passed

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "test":
            settings = self.form()
            if isinstance(settings, str):
                self._say(settings, "error")
                return
            if self._testing:
                return
            # Not disabled while it runs: a disabled button loses the focus, and on a console
            # with no mouse the focus is the only way on.
            self._testing = True
            self._say(f"Connecting to {settings.user}@{settings.server}:{settings.port} ...", "")
            self._run_test(settings)
        elif event.button.id == "next" and self._tested is not None and self._server is not None:
            self.post_message(self.Connected(self._tested, self._server))

    @work(thread=True, exclusive=True, group="test-connection")
    def _run_test(self, settings: P2VSettings) -> None:
        try:
            info = self._test(settings)
        except VmshiftError as e:
            self.app.call_from_thread(self._failed, e.message, e.hint)
        except Exception as e:  # a bug in the client must not take the console down
            self.app.call_from_thread(self._failed, f"{type(e).__name__}: {e}", None)
        else:
            self.app.call_from_thread(self._passed, settings, info)

    def _passed(self, settings: P2VSettings, info: ServerInfo) -> None:
        self._tested, self._server, self._testing = settings, info, False
        self._say(describe_server(settings, info), "ok")
        next_button = self.query_one("#next", Button)
        next_button.disabled = self.form() != settings
        if not next_button.disabled:
            next_button.focus()

    def _failed(self, message: str, hint: str | None) -> None:
        self._tested, self._server, self._testing = None, None, False
        self.query_one("#next", Button).disabled = True
        self._say(f"Error: {message}" + (f"\nHint: {hint}" if hint else ""), "error")
