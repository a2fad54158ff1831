"""The last screen of the P2V console UI: the run's progress and log, Cancel, then the verdict.

Once the run has finished it offers what to do with the machine (power off, reboot, a shell,
exit); the choice ends the App and is its return value, the caller acts on it.
"""

from __future__ import annotations

import threading
import time

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Label, Log, Static

from vmshift.p2v.events import DiskProgress, Finished, LogLine, P2VEvent, StageChange
from vmshift.p2v.ui_widgets import ButtonRow, DiskBar, button, progress_text

# What the machine may do once the run is over: (return value, button).
CHOICES = (("poweroff", "Power off"), ("reboot", "Reboot"), ("shell", "Shell"), ("exit", "Exit"))


class ProgressScreen(Screen[None]):
    """Per-disk bars, the current stage, a scrolling log and Cancel; then the verdict."""

    def __init__(
        self, name: str, disks: tuple[str, ...], cancel: threading.Event, post: str | None
    ) -> None:
        super().__init__()
        self._guest = name
        self._disks = disks
        self._cancel = cancel
        self._post = post
        self._rows: dict[str, tuple[DiskBar, Label]] = {}
        self._first: dict[str, tuple[float, int]] = {}  # a disk's first event: when, how far
        self.finished: Finished | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"vmshift P2V: converting {self._guest}", classes="title", markup=False)
        yield Static("Stage: starting", id="stage", markup=False)
        for disk in self._disks:
            yield self._row(disk)
        yield Log(id="log", max_lines=10000)
        verdict = Static("", id="verdict", markup=False)
        verdict.display = False
        yield verdict
        with ButtonRow():
            yield button("Cancel conversion", "cancel")
            for choice, label in CHOICES:
                yield button(label, choice, classes="choice")
        yield Footer()

    def _row(self, disk: str) -> Horizontal:
        bar, text = DiskBar(), Label("waiting", classes="bytes")
        self._rows[disk] = (bar, text)
        return Horizontal(Label(disk, classes="disk", markup=False), bar, text, classes="row")

    def on_mount(self) -> None:
        self.query_one("#log", Log).focus()

    def bar(self, disk: str) -> DiskBar:
        return self._rows[disk][0]

    def apply(self, event: P2VEvent) -> None:
        """Show one of the client's events (on the UI thread)."""
        log = self.query_one("#log", Log)
        if isinstance(event, LogLine):
            log.write_line(event.text if event.source == "client" else f"server: {event.text}")
        elif isinstance(event, StageChange):
            self.query_one("#stage", Static).update(f"Stage {event.stage}: {event.message}")
            log.write_line(f"== {event.message}")
        elif isinstance(event, DiskProgress):
            if event.disk not in self._rows:  # a disk the screen was not told of: add it
                self.mount(self._row(event.disk), before=log)
            bar, text = self._rows[event.disk]
            bar.update(event.done, event.total)
            text.update(
                progress_text(event.done, event.total, rate=self._rate(event), phase=event.phase)
            )
        else:
            self.finish(event)

    def _rate(self, event: DiskProgress) -> float | None:
        """Bytes a second since the disk's first event (after a second of it)."""
        now = time.monotonic()
        since, done = self._first.setdefault(event.disk, (now, event.done))
        return (event.done - done) / (now - since) if now - since >= 1 else None

    def finish(self, event: Finished) -> None:
        if self.finished is not None:
            return
        self.finished = event
        if event.ok:
            head = f"Conversion finished: {self._guest} is on the conversion server."
        elif self._cancel.is_set():
            head = f"Conversion cancelled (exit code {event.exit_code})."
        else:
            head = f"Conversion failed (exit code {event.exit_code})."
        verdict = self.query_one("#verdict", Static)
        verdict.update("\n".join((head, *event.summary)))
        verdict.set_classes("ok" if event.ok else "error")
        verdict.display = True
        if not event.ok:  # not "Cancelling ..." or a stage that never ended
            self.query_one("#stage", Static).update("Stopped.")
        self.query_one("#cancel", Button).display = False
        for choice in self.query(".choice"):
            choice.display = True
        post = self._post if self._post in dict(CHOICES) else "exit"
        self.query_one(f"#{post}", Button).focus()

    def cancel(self) -> None:
        """Ask the run to stop; the verdict comes with its Finished event."""
        if self.finished is not None or self._cancel.is_set():
            return
        self._cancel.set()
        button = self.query_one("#cancel", Button)
        button.label = "Cancelling..."  # not disabled: that would take the focus away
        self.query_one("#stage", Static).update("Cancelling: waiting for the run to stop cleanly")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.cancel()
        elif event.button.id in dict(CHOICES) and self.finished is not None:
            self.app.exit(event.button.id)
