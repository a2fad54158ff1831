"""nbdkit serving a source's disks: one read-only NBD export per disk, on a unix socket in the
run's work directory, gone with vmshift (--exit-with-parent) or at close(). A source names its
sockets after the disk (vsphere-0.sock, ssh-sda.sock), so opening it again on the same work
directory serves each disk where a kept overlay's backing name points (a --resume, resume.py).

A plugin's secrets reach it through files (password=+FILE, a cookie file), never its command
line, which is logged at -v. nbdkit's messages go to a log file beside its socket, whose last
message explains a failure. For a disk read from another host, nbdkit's log filter (right
above the plugin, so below the retry filter) records every read: what crossed the network,
and whether the reads ended in failure (blockio/nbdkit_log.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vmshift.blockio.nbdkit_log import read_log
from vmshift.errors import EnvironmentProblem, SourceError
from vmshift.process import stop

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # seconds for the socket to appear
MAX_SOCKET_PATH = 107  # a unix socket's path: sun_path holds 108 bytes with the final NUL


@dataclass(frozen=True)
class _Served:
    label: str
    sock: Path
    proc: subprocess.Popen[bytes]
    reads: Path | None  # the log filter's file, when reads are counted


class NbdkitServers:
    """The nbdkit processes of one source; close() stops them all."""

    def __init__(self) -> None:
        self._served: list[_Served] = []
        self._fetched: dict[str, int] = {}
        self._links: list[Path] = []  # short paths to the work directory (reachable())

    def serve(
        self,
        sock: Path,
        plugin: Sequence[str],
        label: str,
        filters: Sequence[str] = (),
        count_reads: bool = False,
    ) -> str:
        """Serve plugin (its name, then KEY=VALUE arguments, filters' included) read-only on
        sock; return the NBD URI once the socket is there. label names the disk in errors and
        in fetched(); count_reads logs every read the plugin makes (a remote disk)."""
        reads = sock.with_name(sock.name + ".reads") if count_reads else None
        args = list(plugin)
        if reads is not None:
            filters = [*filters, "log"]  # innermost: next to the plugin
            args.append(f"logfile={reads}")
        listen = reachable(sock)
        if listen != sock and listen.parent not in self._links:
            # The link is named after the work directory: one left by a killed run is this
            # directory's (a --resume) or points nowhere.
            if listen.parent.is_symlink():
                listen.parent.unlink()
            listen.parent.symlink_to(sock.parent)
            self._links.append(listen.parent)
        # nbdkit leaves its socket behind when it ends (a --resume serves the disk there
        # again), so readiness is its pid file, written once it accepts connections.
        ready = sock.with_name(sock.name + ".pid")
        ready.unlink(missing_ok=True)
        if listen.is_socket():
            listen.unlink()
        argv = ["nbdkit", "--exit-with-parent", "--foreground", "--readonly", "-P", str(ready)]
        argv += ["-U", str(listen)]
        argv += [f"--filter={name}" for name in filters] + args
        log.info("serving %s: %s", label, shlex.join(argv))
        try:
            with _logfile(sock).open("wb") as err:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
                )
        except FileNotFoundError:
            raise EnvironmentProblem("nbdkit is not installed", hint="install nbdkit") from None
        self._served.append(_Served(label, sock, proc, reads))
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if proc.poll() is not None:
                why = last_message(sock) or f"exit {proc.returncode}"
                if f"cannot open plugin '{plugin[0]}'" in why:
                    raise EnvironmentProblem(
                        f"nbdkit's {plugin[0]} plugin is not installed",
                        hint=f"install nbdkit-plugin-{plugin[0]} (make setup does)",
                    )
                raise SourceError(f"{label}: nbdkit could not serve the disk: {why}")
            if time.monotonic() > deadline:
                raise SourceError(f"{label}: nbdkit did not start within {START_TIMEOUT:.0f} s")
            time.sleep(0.05)
        return f"nbd+unix:///?socket={listen}"

    def fetched(self) -> dict[str, int]:
        """Bytes the plugins read per counted disk: so far, or in all once closed."""
        total = dict(self._fetched)
        for served in self._served:
            if served.reads:
                total[served.label] = total.get(served.label, 0) + read_log(served.reads).fetched
        return total

    def lost(self, where: str, retried: str) -> SourceError | None:
        """RemoteSource.lost(): the first counted disk whose reads ended in failure, after
        every retry (retried says how they were tried), as the error to report."""
        for served in self._served:
            if served.reads is not None and read_log(served.reads).last_failed:
                why = last_message(served.sock) or "no message"
                return SourceError(
                    f"{where}: {served.label} stopped answering: {why}",
                    hint=f"{retried}; run the conversion again once the host is back",
                )
        return None

    def alive(self, sock: Path) -> bool:
        """Whether the nbdkit serving sock still runs (nbdkit 1.32 can abort when a client's
        connection is reset mid-reply: a dropped P2V link)."""
        return any(s.sock == sock and s.proc.poll() is None for s in self._served)

    def retire(self, sock: Path) -> None:
        """Stop serving sock's disk, which something else now provides."""
        for served in [s for s in self._served if s.sock == sock]:
            stop(served.proc)
            if served.reads:  # what it read counts; a new nbdkit starts its log afresh
                got = read_log(served.reads).fetched
                self._fetched[served.label] = self._fetched.get(served.label, 0) + got
            self._served.remove(served)

    def close(self) -> None:
        for served in self._served:
            stop(served.proc)
        # The logs live in the work directory, which goes once the source is closed.
        self._fetched = self.fetched()
        self._served.clear()
        for link in self._links:
            link.unlink(missing_ok=True)
        self._links.clear()


def reachable(sock: Path) -> Path:
    """The path to bind and reach sock by: itself, or, when a deep work directory makes it too
    long for a unix socket, the same name under a short link to its directory in /tmp."""
    if len(os.fsencode(sock)) <= MAX_SOCKET_PATH:
        return sock
    digest = hashlib.sha256(os.fsencode(sock.parent)).hexdigest()[:16]
    return Path("/tmp") / f"vmshift-{digest}" / sock.name


def write_secret(path: Path, text: str) -> None:
    """A secret for nbdkit (a password, a cookie) in a mode-0600 file, replaced atomically:
    never on a command line, never readable by others, never seen half-written."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def export_size(sock: Path, label: str) -> int:
    """The size of the export on sock, which is opened (the plugin connects) to learn it;
    SourceError with nbdkit's own reason when that fails."""
    import nbd

    handle = nbd.NBD()
    try:
        handle.connect_unix(str(reachable(sock)))
        return int(handle.get_size())
    except nbd.Error as exc:
        why = last_message(sock) or exc.string
        raise SourceError(f"{label}: cannot be read: {why}") from None
    finally:
        with contextlib.suppress(nbd.Error):
            handle.shutdown()


def last_message(sock: Path) -> str:
    """The last thing the nbdkit serving sock said ("" if nothing). A python plugin's error
    is a traceback: its last line says what happened."""
    try:
        text = _logfile(sock).read_text(errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    errors = [i for i, line in enumerate(lines) if "error:" in line]
    if errors and lines[errors[-1]].endswith("Traceback (most recent call last):"):
        # https_plugin's own errors (RuntimeError, FinalError) say the whole story in their text.
        last = lines[-1]
        for own in ("RuntimeError: ", "FinalError: "):
            last = last.removeprefix(own)
        return last
    return lines[-1]


def _logfile(sock: Path) -> Path:
    return sock.with_name(sock.name + ".log")
