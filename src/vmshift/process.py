"""The one way vmshift runs other programs.

Commands are argument lists, never shell strings, so guest or user data cannot inject anything.
The command line is logged at -v and a failure carries the program's stderr in the error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import EnvironmentProblem, VmshiftError

log = logging.getLogger(__name__)


class CommandFailed(VmshiftError):
    """A program exited non-zero; `stderr` holds what it said."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        last = _last_line(stderr)
        super().__init__(f"{argv[0]} failed (exit {returncode}){': ' + last if last else ''}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    input_bytes: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv (in env, if given), return its result; raise CommandFailed on a non-zero
    exit."""
    if shutil.which(argv[0]) is None:
        raise EnvironmentProblem(
            f"{argv[0]}: program not found", hint="run 'make setup' to install what vmshift needs"
        )
    log.info("running: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout,
            input=input_bytes,
            check=False,
            env=None if env is None else dict(env),
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, -1, f"timed out after {timeout} s") from exc
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """End a helper process started with Popen: SIGTERM, then SIGKILL after grace seconds."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (so [0] is the state, [1] the
    parent's pid, [19] the start time), or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: the fields follow its end.
    return stat.rsplit(")", 1)[1].split()


@dataclass(frozen=True)
class Owner:
    """The process that owns something on disk (a work directory, an output lock), named so
    that a reused process number is not mistaken for it: pid and start time, on which boot of
    which host, in which pid namespace. Written as one line (`stamp()`); read with `parse()`."""

    pid: int
    started: str  # clock ticks since boot (/proc/PID/stat)
    boot: str = ""  # /proc/sys/kernel/random/boot_id; "" in stamps of older vmshift: this boot
    pidns: str = ""  # /proc/self/ns/pid; "" as above: this namespace
    host: str = ""  # for messages, and to tell another host sharing the directory (NFS)

    @classmethod
    def this_process(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, _start_time(pid), _boot_id(), _pid_namespace(), _hostname())

    def stamp(self) -> str:
        fields = (self.pid, self.started, self.boot, self.pidns, self.host)
        return " ".join(str(f) or "-" for f in fields) + "\n"

    @classmethod
    def parse(cls, text: str) -> Owner:
        """An Owner from a stamp (or an older vmshift's "PID START"); ValueError if it is not
        one."""
        fields = text.split()
        if len(fields) not in (2, 5) or not fields[0].isdigit():
            raise ValueError(f"not an owner stamp: {text[:80]!r}")
        return cls(int(fields[0]), *("" if f == "-" else f for f in fields[1:]))

    def state(self) -> str:
        """Whether the owner runs: "alive", "dead", or "unknown" (another host or pid
        namespace: not ours to judge)."""
        if self.host and self.host != _hostname():
            return "unknown"
        if self.boot and self.boot != _boot_id():
            return "dead"  # this host booted since
        if self.pidns and self.pidns != _pid_namespace():
            return "unknown"
        alive = self.started != "" and _start_time(self.pid) == self.started
        return "alive" if alive else "dead"

    def __str__(self) -> str:
        """For messages: "pid N", with the host when it is not this one."""
        elsewhere = self.host and self.host != _hostname()
        return f"pid {self.pid} on host {self.host}" if elsewhere else f"pid {self.pid}"


def _start_time(pid: int) -> str:
    """When process pid started (clock ticks since boot), or "" if there is no such process
    or only its zombie (dead, not yet reaped by its parent)."""
    fields = proc_stat(pid)
    return fields[19] if fields and fields[0] not in ("Z", "X") else ""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        return ""


def _hostname() -> str:
    return "".join(socket.gethostname().split())
