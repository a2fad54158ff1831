"""One guest's conversion: a `vmshift convert --machine-readable` child, its output read back
into the plan's state.

The embedded runner (fleet/runner.py) and a distributed worker's task both call run_guest().
The child is a process of its own, in a session of its own, so that a Ctrl-C meant for the
runner reaches it only through the runner, which stops it the way a user would (SIGINT): it
cleans up, or keeps its copy under way for a resume. It also gets SIGTERM when the runner
dies (PR_SET_PDEATHSIG), so a killed runner's conversion stops too and keeps its copy; the
next run of the plan gives that guest --resume.

Its output: stage lines move the guest through the plan's stages; progress lines set the
bytes done (written to the state at most twice a second); every other line goes to the
guest's log, and the last `vmshift: error: ...` line becomes the guest's error.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import IO

from vmshift.fleet.plan import GuestSpec, Plan
from vmshift.fleet.state import (
    CANCELLED,
    CHECKING,
    CONVERTING,
    COPYING,
    DONE,
    FAILED,
    FINALIZING,
    INTERRUPTED,
    QUEUED,
    VERIFYING,
    PlanState,
)
from vmshift.progress_lines import event_of

# `vmshift convert` stage names (pipeline.py) -> the plan's stages.
STAGE_OF = {
    "source": CHECKING,
    "appliance": CONVERTING,
    "inspect": CONVERTING,
    "convert": CONVERTING,
    "trim": CONVERTING,
    "copy": COPYING,
    "finalize": FINALIZING,
    "verify": VERIFYING,
}
# The conversion's stage once the guest is complete on the target (its boot check and cleanup
# follow): killed after it, the conversion has still made the guest.
CREATED = "created"
ERROR_PREFIX = "vmshift: error: "
POLL = 1.0  # seconds between looks at the cancel flag and the stop event
PROGRESS_INTERVAL = 0.5  # seconds between progress writes to the state, per guest
RATE_WINDOW = 5.0  # seconds of progress the rate is measured over

# The child's first moments, before it becomes `python -m vmshift.cli.main convert ...`: it
# asks for SIGTERM when the runner's thread that started it ends (PR_SET_PDEATHSIG, kept across
# exec), and ends at once when the runner is already gone. (Not a preexec_fn: unsafe in a
# process with threads.)
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def child_argv(python: str, args: list[str]) -> list[str]:
    """The command line of a conversion child: python running `vmshift` args."""
    command = [python, "-m", "vmshift.cli.main", *args]
    return [python, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]


class _Reader:
    """Reads the child's output and writes it into the guest's state."""

    def __init__(self, state: PlanState, name: str) -> None:
        self.state = state
        self.name = name
        self.error: str | None = None
        self.created = False  # the conversion said the guest is complete on the target
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._key: tuple[str, str] | None = None  # (phase, label) of the progress
        self._samples: list[tuple[float, int]] = []  # (time, done) within RATE_WINDOW

    def read(self, stream: IO[str], name: str) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            if line:
                self.line(line, name)

    def line(self, line: str, stream: str) -> None:
        event = event_of(line, stream)
        if event["event"] == "progress":
            self._progress(event["phase"], event["label"], event["done"], event["total"])
            return
        self.state.log(self.name, line)
        if event["event"] == "stage":
            fields: dict[str, object] = {"message": event["message"]}
            stage = STAGE_OF.get(event["stage"])
            if stage is not None:
                fields["stage"] = stage
            if event["stage"] == CREATED:
                self.created = True
                fields["created_at"] = time.time()
            self.state.update(self.name, **fields)
        elif line.startswith(ERROR_PREFIX):
            self.error = line[len(ERROR_PREFIX) :]

    def _progress(self, phase: str, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            key = (phase, label)
            fresh = key != self._key
            if fresh:
                self._key = key
                self._samples = []
            self._samples = [(t, d) for t, d in self._samples if now - t <= RATE_WINDOW]
            self._samples.append((now, done))
            first_t, first_done = self._samples[0]
            rate = (done - first_done) / (now - first_t) if now > first_t else 0.0
            if not (fresh or done >= total or now - self._last_write >= PROGRESS_INTERVAL):
                return
            self._last_write = now
        fields: dict[str, object] = {"done": done, "total": total, "rate": max(rate, 0.0)}
        if fresh:
            fields["message"] = f"{phase} {label}"
        self.state.update(self.name, **fields)


def run_guest(
    plan: Plan,
    spec: GuestSpec,
    state: PlanState,
    *,
    worker: str,
    python: str,
    environ: Mapping[str, str],
    stop: threading.Event,
) -> str:
    """Run one guest's conversion to its end; its final stage (done, failed, cancelled or
    interrupted). stop set, or a cancel asked for the guest: the child is sent SIGINT."""
    name = spec.name
    if state.cancel_requested(name):
        state.update(name, stage=CANCELLED, finished_at=time.time(), rate=0.0)
        return CANCELLED
    if stop.is_set():
        return INTERRUPTED
    record = state.guest(name)
    if record.created_at is not None and record.finished_at is None:
        # Its last attempt made the guest, then died (its runner or worker killed) before it
        # could say so: converting it again would find its outputs and refuse.
        state.log(name, "--- its last attempt had made the guest on the target before it "
                        "stopped; not converted again")  # fmt: skip
        state.update(name, stage=DONE, finished_at=time.time(), rate=0.0, error=None)
        return DONE
    resume = ["--resume"] if record.attempts > 0 else []
    args = ["convert", "--machine-readable", *resume, *spec.argv()]
    state.update(
        name, stage=QUEUED, attempts=record.attempts + 1, worker=worker, started_at=time.time(),
        finished_at=None, created_at=None, error=None, rate=0.0, message="starting",
    )  # fmt: skip
    state.log(name, f"--- attempt {record.attempts + 1} on {worker}: vmshift {shlex.join(args)}")
    reader = _Reader(state, name)
    try:
        proc = subprocess.Popen(
            child_argv(python, args), cwd=plan.directory, env=dict(environ),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            errors="replace", start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        error = f"cannot start {python}: {exc.strerror}"
        state.log(name, error)
        state.update(name, stage=FAILED, error=error, finished_at=time.time())
        return FAILED
    assert proc.stdout is not None and proc.stderr is not None
    threads = [
        threading.Thread(target=reader.read, args=(proc.stdout, "stdout"), daemon=True),
        threading.Thread(target=reader.read, args=(proc.stderr, "stderr"), daemon=True),
    ]
    for t in threads:
        t.start()
    why: str | None = None  # CANCELLED or INTERRUPTED, once the child was told to stop
    while True:
        try:
            rc = proc.wait(timeout=POLL)
            break
        except subprocess.TimeoutExpired:
            pass
        if why is None:
            if state.cancel_requested(name):
                why = CANCELLED
            elif stop.is_set():
                why = INTERRUPTED
            if why is not None:
                state.log(name, f"--- {'cancelled' if why == CANCELLED else 'stopping'}: SIGINT")
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
    for t in threads:
        t.join()
    return _finish(state, name, rc, why, reader)


def _finish(state: PlanState, name: str, rc: int, why: str | None, reader: _Reader) -> str:
    how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
    state.log(name, f"--- the conversion ended: {how}")
    error = reader.error
    if rc == 0:
        stage, error = DONE, None
    elif reader.created and (why is not None or rc < 0 or rc > 128):
        # Stopped by a signal once the guest was made (in its boot check or cleanup).
        state.log(name, "--- the guest was complete on the target before it stopped")
        stage, error = DONE, None
    elif why is not None:
        stage, error = why, None
    else:
        stage, error = FAILED, error or f"the conversion ended: {how}"
    state.update(name, stage=stage, error=error, rate=0.0, finished_at=time.time())
    return stage
