"""The P2V client's interactive console UI (textual), as virt-p2v's dialogs.

Three screens: the connection (ui_connect.py), the conversion settings (ui_convert.py), and
the progress and log with Cancel (ui_progress.py). It is made for a text console or a serial
line: no mouse, ANSI colours only, 80x24. The client (client.py) is injected: the App calls
its `test_connection` and `convert` in worker threads and gets the run's events back on the UI
thread as messages. The App's return value is what to do with the machine afterwards
("poweroff", "reboot", "shell" or "exit"); the UI never does it itself.

    choice = P2VApp(machine, settings, vmshift.p2v.client).run()
"""

from __future__ import annotations

import threading
from typing import Protocol

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.message import Message

from vmshift.errors import VmshiftError
from vmshift.p2v.events import DiskProgress, EventSink, Finished, P2VEvent, ServerInfo
from vmshift.p2v.machine import Machine
from vmshift.p2v.settings import P2VSettings
from vmshift.p2v.ui_connect import ConnectionScreen
from vmshift.p2v.ui_convert import ConversionScreen
from vmshift.p2v.ui_progress import ProgressScreen

__all__ = ["ClientApi", "ClientEvent", "P2VApp"]


class ClientApi(Protocol):
    """What the UI needs of the client (the module vmshift.p2v.client, or a fake)."""

    def test_connection(self, settings: P2VSettings) -> ServerInfo: ...

    def convert(
        self, settings: P2VSettings, machine: Machine, sink: EventSink, cancel: threading.Event
    ) -> Finished: ...


class ClientEvent(Message):
    """One of the client's events, carried from the worker thread to the UI thread."""

    def __init__(self, event: P2VEvent) -> None:
        super().__init__()
        self.event = event


CSS = """
Screen { layout: vertical; }
.title { height: 1; text-style: bold; background: $primary; color: $text; padding: 0 1; }
.section { height: 1; margin-top: 1; text-style: bold underline; }
Form { height: 1fr; padding: 0 1; }
.field, .row, .head { height: 1; }
.head { text-style: bold; }
.caption { height: 1; }
Input { width: 1fr; }
Input.-textual-compact { background: $boost; text-style: underline; }
Input.-textual-compact:focus { text-style: reverse; }
Select { width: 1fr; }
Select:focus SelectCurrent { text-style: reverse; }
Checkbox { height: 1; }
Button { margin-right: 2; }
Button.-textual-compact:disabled { border: none !important; text-style: dim; }
Button.-textual-compact:focus { text-style: reverse; }
.buttons { height: 1; margin: 1 1 0 1; }
#status, #message, #verdict { height: auto; padding: 0 1; }
.ok { color: $success; }
.error { color: $error; text-style: bold; }
.convert { width: 16; }
.size { width: 11; }
.model { width: 1fr; }
.progress { width: 18; }
.mac { width: 19; }
.driver { width: 12; }
.link { width: 8; }
.network { width: 1fr; }
#stage { height: 1; padding: 0 1; }
.disk { width: 10; padding-left: 1; }
ProgressScreen DiskBar { width: 21; }
.bytes { width: 1fr; padding-left: 1; }
Log { height: 1fr; border: solid $primary; }
.choice { display: none; }
"""


class P2VApp(App[str]):
    """Connection, conversion and progress screens; returns what to do with the machine."""

    CSS = CSS
    TITLE = "vmshift P2V"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, machine: Machine, settings: P2VSettings, client: ClientApi) -> None:
        super().__init__(ansi_color=True)
        self.machine = machine
        self.settings = settings
        self.client = client
        self.cancel = threading.Event()
        self.running: P2VSettings | None = None  # what convert was given, once started
        self.finished: Finished | None = None
        self._conversion: ConversionScreen | None = None
        self._progress: ProgressScreen | None = None
        # A serial line pays for every redraw: no animations.
        self.animation_level = "none"

    def on_mount(self) -> None:
        self.theme = "ansi-dark"
        self.push_screen(ConnectionScreen(self.settings, self.client.test_connection))

    def on_connection_screen_connected(self, message: ConnectionScreen.Connected) -> None:
        self._conversion = ConversionScreen(self.machine, message.settings, message.server)
        self.push_screen(self._conversion)

    def on_conversion_screen_start(self, message: ConversionScreen.Start) -> None:
        if self.running is not None:
            return
        settings = message.settings
        self.running = settings
        self._progress = ProgressScreen(
            settings.name or self.machine.hostname, settings.disks, self.cancel, settings.post
        )
        self.push_screen(self._progress)
        self._convert(settings)

    @work(thread=True, exclusive=True, group="convert", exit_on_error=False)
    def _convert(self, settings: P2VSettings) -> None:
        try:
            finished = self.client.convert(settings, self.machine, self._sink, self.cancel)
        except VmshiftError as e:
            hint = (f"Hint: {e.hint}",) if e.hint else ()
            finished = Finished(ok=False, exit_code=e.exit_code, summary=(e.message, *hint))
        except Exception as e:  # a bug in the client must still end in a verdict
            finished = Finished(ok=False, exit_code=1, summary=(f"{type(e).__name__}: {e}",))
        self._sink(finished)  # the first Finished counts; the client has usually sent it

    def _sink(self, event: P2VEvent) -> None:
        """The client's EventSink: called on its thread, handled on the UI thread."""
        self.post_message(ClientEvent(event))

    def on_client_event(self, message: ClientEvent) -> None:
        event = message.event
        if isinstance(event, Finished):
            if self.finished is not None:
                return
            self.finished = event
        if isinstance(event, DiskProgress) and self._conversion is not None:
            self._conversion.show_progress(event)
        if self._progress is not None:
            self._progress.apply(event)

    async def action_quit(self) -> None:
        """Ctrl+Q: before a run, leave ("exit"); during one, cancel it cleanly first."""
        if self.running is not None and self.finished is None:
            if self._progress is not None:
                self._progress.cancel()
            return
        self.exit("exit")

    def on_unmount(self) -> None:
        self.cancel.set()  # never leave a run going behind a closed UI
