"""A private redis-server for the tests: on 127.0.0.1 and a free port, in a directory of its
own, with no persistence (`--save '' --appendonly no`); killed when the test is done.

    with private_redis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)

or the `redis_server` fixture (one server per test module).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vmshift.process import stop

REDIS_SERVER = "redis-server"
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class RedisServer:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[RedisServer]:
    """redis-server in directory (created); the test is skipped where it is not installed."""
    exe = shutil.which(REDIS_SERVER)
    if exe is None:
        pytest.skip("needs redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
            "no", "--dir", str(directory), "--logfile", str(directory / "redis.log"),
            "--protected-mode", "yes"]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    server = RedisServer(port, directory, proc)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(port):
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {proc.returncode}: {server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on {port}: {server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server
