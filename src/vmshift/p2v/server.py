"""The conversion server's side of P2V: `vmshift p2v-server`, run by the client over SSH.

It is meant as the forced command of the conversion user's authorized_keys line
(`command="vmshift p2v-server"`), so the key can do nothing else; the client's own command
line arrives as SSH_ORIGINAL_COMMAND and names a verb:

    hello SESSION   prints one JSON document: vmshift's version, who the server runs as, the
                    profiles, and the session directory (created 0700) the client forwards
                    its disks' NBD sockets into; the same machine gets the same session, so
                    a reconnect finds its kept copy there
    convert SESSION reads one JSON line (the P2VRequest and the conversion options), runs
                    `vmshift convert -i p2v` on it and streams the run back as JSON lines
                    (log, stage, progress), then {"event": "done", "rc": N, "summary": [...]};
                    a line "cancel" on its input, or the end of it (the link dropped),
                    interrupts the run, which keeps a copy under way for --resume

Library code: the CLI (cli/p2v_server_cmd.py) reads the environment and passes what it found.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vmshift import __version__
from vmshift.errors import UsageError
from vmshift.profiles import load_catalogue
from vmshift.progress_lines import event_of
from vmshift.sources.p2v import P2VRequest, answers

SESSION_ID = re.compile(r"[a-z0-9][a-z0-9-]{3,63}")
SUMMARY_LINES = 6  # the run's last lines, sent with its verdict


@dataclass(frozen=True)
class ServerConfig:
    sessions: Path  # where session directories are made
    conf: Path | None = None  # --conf: the profile file (else the standard search path)
    appliance: Path | None = None  # a fixed libguestfs appliance for a user without root
    environ: dict[str, str] = field(default_factory=dict)  # the conversion's environment
    python: str = sys.executable
    # --verify-boot-conn: boot every result there (`vmshift convert --verify-boot`).
    verify_conn: str | None = None


@dataclass(frozen=True)
class ConvertOptions:
    """What the client chose, as `vmshift convert` options (validated here: they come from
    another machine)."""

    profile: str
    name: str | None = None
    vcpus: int | None = None
    memory: int | None = None  # bytes
    network: tuple[tuple[str, str], ...] = ()
    resume: bool = False
    verify_boot: bool = False

    @classmethod
    def from_json(cls, doc: Any) -> ConvertOptions:
        if not isinstance(doc, dict) or not isinstance(doc.get("profile"), str):
            raise UsageError("p2v-server: the request names no profile")
        pairs = tuple((str(a), str(b)) for a, b in doc.get("network", ()))
        return cls(
            profile=doc["profile"],
            name=_opt_str(doc.get("name")),
            vcpus=_opt_int(doc.get("vcpus")),
            memory=_opt_int(doc.get("memory")),
            network=pairs,
            resume=bool(doc.get("resume", False)),
            verify_boot=bool(doc.get("verify_boot", False)),
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or value <= 0:
        raise UsageError(f"p2v-server: {value!r} is not a positive number")
    return value


def parse_verb(words: Sequence[str]) -> tuple[str, str]:
    """(verb, session) from the client's command line, which may start with the program's
    own name(s): `vmshift p2v-server hello abc123` under a forced command."""
    rest = list(words)
    while rest and rest[0] not in ("hello", "convert"):
        rest.pop(0)
    if len(rest) != 2:
        raise UsageError(
            f"p2v-server: expected 'hello SESSION' or 'convert SESSION', got {' '.join(words)!r}"
        )
    verb, session = rest
    if not SESSION_ID.fullmatch(session):
        raise UsageError(f"p2v-server: {session!r} is not a session id")
    return verb, session


def session_dir(config: ServerConfig, session: str) -> Path:
    path = config.sessions / session
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or path.stat().st_uid != os.getuid():
        raise UsageError(f"{path}: not a session directory of this user")
    return path


def hello(config: ServerConfig, session: str, user: str) -> dict[str, Any]:
    catalogue = load_catalogue(config.conf)
    profiles = [
        {"name": p.name, "output": p.output, "storage": p.storage, "origin": str(p.origin)}
        for p in catalogue.visible()
    ]
    return {
        "vmshift": __version__,
        "user": user,
        "profiles": profiles,
        "session": str(_fresh_session(config, session)),
    }


def _fresh_session(config: ServerConfig, session: str) -> Path:
    """The session directory, without the sockets a dropped connection left: sshd cannot
    bind a forwarded socket over an existing file."""
    directory = session_dir(config, session)
    for sock in directory.glob("*.sock"):
        if not sock.is_symlink() and sock.is_socket() and not answers(str(sock)):
            sock.unlink()
    return directory


def convert_argv(
    config: ServerConfig, request_file: Path, workdir: Path, opts: ConvertOptions
) -> list[str]:
    argv = [config.python, "-m", "vmshift.cli.main", "convert", "--machine-readable"]
    argv += ["-i", "p2v", "--profile", opts.profile, "--workdir", str(workdir)]
    if config.conf is not None:
        argv += ["--conf", str(config.conf)]
    if opts.name:
        argv += ["-on", opts.name]
    if opts.vcpus:
        argv += ["--vcpus", str(opts.vcpus)]
    if opts.memory:
        argv += ["-m", f"{opts.memory // (1 << 20)}M"]
    for iface, network in opts.network:
        argv += ["--network", f"{iface}:{network}"]
    if opts.resume:
        argv.append("--resume")
    if opts.verify_boot or config.verify_conn:
        argv.append("--verify-boot")
    if config.verify_conn:
        argv += ["--verify-boot-conn", config.verify_conn]
    return [*argv, str(request_file)]


class Conversion:
    """One `vmshift convert -i p2v` child, its output relayed as events to out."""

    def __init__(
        self,
        argv: list[str],
        environ: dict[str, str],
        out: IO[str],
        keep: Sequence[int] = (),
        log: IO[str] | None = None,
    ) -> None:
        """keep: file descriptors the run inherits (the session's lock, so that it stays held
        until the run has ended even if this process is killed first); log: where the run's
        output is also written, on the server's side (SESSION/run.log: `tail -f` shows each
        disk's progress there too)."""
        self.out = out
        self.log = log
        self.lock = threading.Lock()
        self.tail: list[str] = []
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=environ, start_new_session=True, pass_fds=tuple(keep),
        )  # fmt: skip

    def send(self, event: dict[str, Any]) -> None:
        """To the client; a link that is gone is not an error here: the run still ends
        properly (it keeps its copy for a resume when it notices the disks are gone)."""
        with self.lock:
            try:
                self.out.write(json.dumps(event) + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass

    def _relay(self, stream: IO[str], name: str) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            if not line:
                continue
            event = event_of(line, name)
            if self.log is not None:
                with self.lock:
                    self.log.write(line + "\n")
                    self.log.flush()
            if event["event"] == "log":
                with self.lock:
                    self.tail = [*self.tail, line][-SUMMARY_LINES:]
            self.send(event)

    def interrupt(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self) -> int:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threads = [
            threading.Thread(target=self._relay, args=(self.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._relay, args=(self.proc.stderr, "stderr"), daemon=True),
        ]
        for t in threads:
            t.start()
        rc = self.proc.wait()
        for t in threads:
            t.join()
        if self.log is not None:
            how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
            self.log.write(f"--- the run ended: {how}\n")
            self.log.flush()
        self.send({"event": "done", "rc": rc, "summary": self.tail})
        return rc


def watch_input(lines: Iterable[str], conversion: Conversion) -> None:
    """The client's input after the request: "cancel" interrupts the run (SIGINT, as Ctrl-C);
    the end of the input (the client or the link gone) too (SIGHUP, as a lost terminal)."""
    for line in lines:
        if line.strip() == "cancel":
            conversion.interrupt(signal.SIGINT)
            return
    conversion.interrupt(signal.SIGHUP)


def convert(
    config: ServerConfig,
    session: str,
    streams: tuple[IO[str], IO[str]],
    log: Callable[[str], None],
    on_start: Callable[[Conversion], None] = lambda _c: None,
) -> int:
    """Serve one `convert` verb: the request from streams[0], the events to streams[1].

    on_start is given the running conversion (the CLI passes on its signals to it: this
    process must outlive the run it relays, whose output would otherwise go nowhere)."""
    stdin, stdout = streams
    first = stdin.readline()
    try:
        doc = json.loads(first)
    except ValueError as exc:
        raise UsageError(f"p2v-server: the request is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise UsageError("p2v-server: the request is not a JSON object")
    directory = session_dir(config, session)
    request = P2VRequest.from_json(doc.get("request"), "p2v-server request")
    if request.session != session:
        raise UsageError(f"p2v-server: the request is for session {request.session}, not {session}")
    for disk in request.disks:
        for path in (disk.socket, disk.forwarded or disk.socket):
            if Path(path).parent != directory:
                raise UsageError(f"p2v-server: {path} is not in the session directory")
    opts = ConvertOptions.from_json(doc.get("options"))
    environ = dict(config.environ)
    if config.appliance is not None:
        environ["LIBGUESTFS_PATH"] = str(config.appliance)
    request_file = directory / "request.json"
    argv = convert_argv(config, request_file, directory, opts)
    with (directory / "lock").open("w") as lock:
        # A client back after a dropped link may find its previous run still ending (keeping
        # its copy for the resume): one run per session at a time.
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for the previous run of this session to end")
            fcntl.flock(lock, fcntl.LOCK_EX)
        _point_sockets(request)
        tmp = directory / "request.json.tmp"
        tmp.write_text(json.dumps(request.to_json(), indent=2) + "\n")
        tmp.replace(request_file)
        log("running " + shlex.join(argv[2:]))
        with (directory / "run.log").open("a") as run_log:
            run_log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv[2:])}\n")
            conversion = Conversion(argv, environ, stdout, keep=(lock.fileno(),), log=run_log)
            on_start(conversion)
            threading.Thread(target=watch_input, args=(stdin, conversion), daemon=True).start()
            return conversion.wait()


def _point_sockets(request: P2VRequest) -> None:
    """Each disk's stable socket name (the one a kept overlay's backing file names) made a
    link to this connection's forwarded socket: sshd binds a new name per connection, since
    a dropped connection's socket may linger."""
    for disk in request.disks:
        if disk.forwarded is None:
            continue
        stable, tmp = Path(disk.socket), Path(disk.socket + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(disk.forwarded).name)
        tmp.replace(stable)
