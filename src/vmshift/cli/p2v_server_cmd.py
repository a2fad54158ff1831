"""`vmshift p2v-server`: the conversion server's end of a P2V client's SSH session.

Put it in the conversion user's authorized_keys as the key's forced command:

    command="vmshift p2v-server",no-pty,no-agent-forwarding,no-X11-forwarding ssh-ed25519 AAAA...

(port forwarding stays allowed: the client forwards its disks' NBD sockets through it). The
user needs no root and no sudo; `vmshift p2v-server --setup`, run once as root, builds the
libguestfs appliance such a user can start (docs/p2v.md).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from vmshift.cli.signals import HANDLED
from vmshift.errors import EnvironmentProblem
from vmshift.guest.accel import detect_accelerator
from vmshift.p2v import server

HELP = "serve P2V clients over SSH (a forced command); --setup prepares the host once"

# Where --setup puts the appliance, and where the server looks for it.
SYSTEM_APPLIANCE = Path("/var/lib/vmshift/appliance")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="VERB SESSION", help=argparse.SUPPRESS)
    p.add_argument("--conf", type=Path, metavar="FILE", help="the profiles file to offer")
    p.add_argument(
        "--sessions",
        type=Path,
        metavar="DIR",
        help="where session directories go (default: ~/.local/state/vmshift/p2v)",
    )
    p.add_argument(
        "--appliance",
        type=Path,
        metavar="DIR",
        help=f"a fixed libguestfs appliance (default: {SYSTEM_APPLIANCE} if it exists)",
    )
    p.add_argument(
        "--verify-boot-conn",
        metavar="URI",
        help="boot every converted guest on this libvirt to check it (--verify-boot)",
    )
    p.add_argument(
        "--setup",
        action="store_true",
        help="build the fixed appliance into --appliance (as root, once)",
    )


def _sessions(args: argparse.Namespace) -> Path:
    if args.sessions is not None:
        return Path(args.sessions)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "vmshift" / "p2v"


def _appliance(args: argparse.Namespace) -> Path | None:
    if args.appliance is not None:
        return Path(args.appliance)
    return SYSTEM_APPLIANCE if (SYSTEM_APPLIANCE / "kernel").exists() else None


def setup(directory: Path) -> None:
    """A fixed appliance anyone can read: Debian's kernel in /boot is readable by root only,
    so libguestfs cannot build its own appliance as another user."""
    env = dict(os.environ, LIBGUESTFS_BACKEND="direct")
    if not detect_accelerator().is_kvm:
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    tmp = directory.with_name(directory.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    proc = subprocess.run(
        ["libguestfs-make-fixed-appliance", str(tmp)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise EnvironmentProblem(f"libguestfs-make-fixed-appliance {tmp}: {last[0]}")
    for path in [tmp, *tmp.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def run(args: argparse.Namespace) -> int:
    if args.setup:
        directory = args.appliance or SYSTEM_APPLIANCE
        directory.parent.mkdir(parents=True, exist_ok=True)
        setup(directory)
        print(f"vmshift: a fixed appliance for unprivileged conversions is in {directory}")
        return 0
    original = os.environ.get("SSH_ORIGINAL_COMMAND")
    words = shlex.split(original) if original is not None else list(args.words)
    verb, session = server.parse_verb(words)
    environ = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    config = server.ServerConfig(
        sessions=_sessions(args),
        conf=args.conf,
        appliance=_appliance(args),
        environ=environ,
        verify_conn=args.verify_boot_conn,
    )
    if verb == "hello":
        print(json.dumps(server.hello(config, session, getpass.getuser())), flush=True)
        return 0
    return server.convert(
        config, session, (sys.stdin, sys.stdout), lambda line: print(line, file=sys.stderr),
        on_start=_pass_signals,
    )  # fmt: skip


def _pass_signals(conversion: server.Conversion) -> None:
    """A signal to this process (sshd's SIGHUP when the link drops, a SIGTERM) goes to the
    run, which ends as an interrupted `vmshift convert` does; this process relays it to the
    end instead of leaving it to write into a closed pipe."""
    for signum in HANDLED:
        signal.signal(signum, lambda sig, _frame: conversion.interrupt(sig))
