"""SIGINT, SIGTERM and SIGHUP end a run alike: cleanly, in one line that names the signal and
the stage it came in.

Ctrl-C in a terminal reaches the whole process group, so the appliance, nbdkit and qemu-img die
with vmshift. `kill PID` (SIGTERM) or a closed terminal (SIGHUP) reaches vmshift alone, whose
main thread may be blocked for a minute in a libguestfs call that a Python signal handler
cannot interrupt. So a watcher thread, woken through the signal wakeup fd the moment the signal
arrives, stops vmshift's child processes: the blocked call returns with an error, the handler's
exception unwinds the run through the cleanup every stage already has (work directory, overlay,
partial outputs, nbdkit), and main() prints the one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from vmshift.blockio.progress import Event, StageEvent
from vmshift.process import proc_stat

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by a handled signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """Installed once by main(); knows the first signal that came and the stage it came in."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stage: str | None = None
        self._wakeup: int | None = None

    def install(self) -> None:
        if self._wakeup is not None:
            return
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._wakeup = read_end
        for signum in HANDLED:
            signal.signal(signum, self._handle)
        threading.Thread(target=self._watch, name="signal-watcher", daemon=True).start()

    def note(self, event: Event) -> None:
        """An event sink: remembers the stage the run is in."""
        if isinstance(event, StageEvent):
            self.stage = event.message

    def message(self) -> str:
        assert self.signum is not None
        name = signal.Signals(self.signum).name
        where = f" while {self.stage}" if self.stage else ""
        return f"interrupted by {name}{where}"

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # the first signal is already unwinding the run
        self.signum = signum
        raise Interrupted(signum)

    def _watch(self) -> None:
        assert self._wakeup is not None
        while True:
            data = os.read(self._wakeup, 64)
            if any(byte in (int(s) for s in HANDLED) for byte in data):
                stop_children()


GUARD = SignalGuard()  # the process's one guard: main() installs it, sinks note stages in it


def stop_children() -> None:
    """SIGTERM to every process whose parent is this one (the appliance, nbdkit, qemu-img)."""
    me = str(os.getpid())
    for entry in Path("/proc").glob("[0-9]*"):
        fields = proc_stat(entry.name)
        if fields is not None and fields[1] == me:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGTERM)
