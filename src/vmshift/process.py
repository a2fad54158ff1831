"""The one way vmshift runs other programs.

Commands are argument lists, never shell strings, so guest or user data cannot inject anything.
The command line is logged at -v and a failure carries the program's stderr in the error.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import subprocess
from collections.abc import Sequence
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
) -> subprocess.CompletedProcess[bytes]:
    """Run argv, return its result; raise CommandFailed on a non-zero exit."""
    if shutil.which(argv[0]) is None:
        raise EnvironmentProblem(
            f"{argv[0]}: program not found", hint="run 'make setup' to install what vmshift needs"
        )
    log.info("running: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, timeout=timeout, input=input_bytes, check=False
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
