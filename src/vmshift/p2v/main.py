"""`vmshift-p2v`: the client's command, started on the physical machine's console.

With `p2v.server=` on the kernel command line (or in `--cmdline`, or a `--config` file) it
runs unattended at once: it logs to the console, then does `p2v.post` (power off by default
when booted so; `exit` when driven by --cmdline or --config, never a power-off). Otherwise it
starts the console UI (ui.py), pre-filled with what the options say.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from vmshift import __version__
from vmshift.cli.signals import GUARD
from vmshift.errors import VmshiftError
from vmshift.p2v.events import DiskProgress, Finished, LogLine, P2VEvent, StageChange
from vmshift.p2v.settings import P2VSettings

log = logging.getLogger("vmshift")

# What p2v.post runs; `shell` and `exit` are handled here.
POWER = {"poweroff": ["poweroff", "-f"], "reboot": ["reboot", "-f"]}
SYSTEMD_POWER = {"poweroff": ["systemctl", "poweroff"], "reboot": ["systemctl", "reboot"]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vmshift-p2v", description="Convert this physical machine to a KVM guest over SSH."
    )
    p.add_argument("--version", action="version", version=f"vmshift-p2v {__version__}")
    p.add_argument(
        "--cmdline",
        metavar="STRING",
        help="take the p2v.* options from STRING instead of /proc/cmdline",
    )
    p.add_argument("--config", type=Path, metavar="FILE", help="a file of p2v.* options")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


class ConsoleLog:
    """Unattended: the run's events as plain lines on the console."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.shown: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def __call__(self, event: P2VEvent) -> None:
        stamp = f"[{time.monotonic() - self.started:7.1f}]"
        line = None
        if isinstance(event, LogLine):
            line = event.text if event.source == "client" else f"server: {event.text}"
        elif isinstance(event, StageChange):
            line = f"{event.stage}: {event.message}"
        elif isinstance(event, DiskProgress):
            percent = event.done * 100 // event.total if event.total else 100
            key = (event.disk, event.phase)
            if percent // 10 != self.shown.get(key, -1) // 10 or percent == 100:
                if self.shown.get(key) != percent:
                    line = f"{event.disk}: {event.phase} {percent}%"
                self.shown[key] = percent
        elif isinstance(event, Finished):
            verdict = "done" if event.ok else f"failed (exit {event.exit_code})"
            line = f"conversion {verdict}"
        if line is not None:
            with self.lock:
                print(f"{stamp} {line}", flush=True)


def _post(action: str, rc: int) -> int:
    if action in POWER:
        argv = SYSTEMD_POWER[action] if Path("/run/systemd/system").is_dir() else POWER[action]
        print(f"vmshift-p2v: {action}", flush=True)
        subprocess.run(argv, check=False)
    elif action == "shell":
        os.execv("/bin/sh", ["/bin/sh"])
    return rc


def _settings(args: argparse.Namespace) -> tuple[P2VSettings, bool]:
    """The settings, and whether they came from the kernel (a booted P2V medium)."""
    from vmshift.p2v.settings import P2VSettings, parse_cmdline, parse_config_file

    booted = args.cmdline is None and args.config is None
    text = args.cmdline if args.cmdline is not None else ""
    if booted:
        text = Path("/proc/cmdline").read_text()
    # The command line's words over the file's.
    base = parse_config_file(args.config) if args.config is not None else P2VSettings()
    return parse_cmdline(text, base), booted


def unattended(settings: P2VSettings) -> int:
    from vmshift.p2v.client import convert
    from vmshift.p2v.discovery import discover

    show = ConsoleLog()
    machine = discover(explicit=settings.disks)
    show(LogLine(f"vmshift-p2v {__version__} on {machine.hostname}: "
                 f"{machine.cpu.count} CPUs, {machine.memory >> 20} MiB, "
                 f"disks {', '.join(d.name for d in machine.disks) or 'none'}"))  # fmt: skip
    finished = convert(settings, machine, show, threading.Event())
    show(finished)
    for line in finished.summary:
        print(f"vmshift-p2v: {line}", flush=True)
    return 0 if finished.ok else finished.exit_code or 1


def interactive(settings: P2VSettings) -> str:
    from vmshift.p2v import client
    from vmshift.p2v.discovery import discover
    from vmshift.p2v.ui import P2VApp

    machine = discover(explicit=settings.disks)
    choice = P2VApp(machine, settings, client).run()
    return str(choice or "exit")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="vmshift-p2v: %(message)s",
    )
    try:
        settings, booted = _settings(args)
        if settings.unattended:
            # SIGTERM and SIGHUP as Ctrl-C: the exports, the link and the temporary files go
            # (the UI's textual loop has its own handling, so only here).
            GUARD.install()
            rc = unattended(settings)
            post = settings.post or ("poweroff" if booted else "exit")
            return _post(post, rc)
        choice = interactive(settings)
        return _post(settings.post or choice, 0)
    except VmshiftError as exc:
        if args.verbose:
            log.exception("traceback follows")
        print(f"vmshift-p2v: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"vmshift-p2v: hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        signum = GUARD.signum or signal.SIGINT
        GUARD.signum = signum
        print(f"vmshift-p2v: {GUARD.message()}; the server ends its run as interrupted",
              file=sys.stderr)  # fmt: skip
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
