"""A plan's state in one SQLite file: no server, safe from several processes at once.

The runner's threads, `plan status`, `plan cancel` and the dashboard each open the file; WAL
mode lets the readers read while a conversion writes its progress, and a busy timeout makes a
writer wait for another instead of failing. One connection per SqliteState, guarded by a lock,
so the runner's threads can share one.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from vmshift.errors import ConfigError
from vmshift.fleet.state import QUEUED, GuestRecord

BUSY_TIMEOUT = 60.0  # seconds a writer waits for another one
SCHEMA_VERSION = 1

_FIELDS = tuple(f.name for f in fields(GuestRecord))
_SCHEMA = """
CREATE TABLE IF NOT EXISTS guests (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    stage TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    rate REAL NOT NULL DEFAULT 0,
    error TEXT,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    queued_at REAL,
    started_at REAL,
    finished_at REAL,
    created_at REAL,
    updated_at REAL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    at REAL NOT NULL,
    stage TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_name ON history (name, id);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_name ON logs (name, id);
CREATE TABLE IF NOT EXISTS cancels (
    name TEXT,  -- a guest, or NULL: the whole plan
    at REAL NOT NULL
);
"""


class SqliteState:
    """The PlanState of fleet/state.py in the SQLite file at path (created when missing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._write():
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise ConfigError(
                        f"{path}: a plan state of version {version}, not {SCHEMA_VERSION} "
                        "(written by another vmshift)"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise ConfigError(f"{path}: cannot use it as the plan's state: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that writes: other writers wait for it (BEGIN IMMEDIATE)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ConfigError(f"{self.path}: cannot write the plan's state: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise ConfigError(f"{self.path}: cannot read the plan's state: {exc}") from exc

    def register(self, names: Sequence[str]) -> None:
        now = time.time()
        with self._write() as db:
            for name in names:
                added = db.execute(
                    "INSERT OR IGNORE INTO guests (name, stage, queued_at, updated_at) "
                    "VALUES (?, ?, ?, ?)",
                    (name, QUEUED, now, now),
                ).rowcount
                if added:
                    db.execute(
                        "INSERT INTO history (name, at, stage) VALUES (?, ?, ?)",
                        (name, now, QUEUED),
                    )

    def guests(self) -> list[GuestRecord]:
        rows = self._read(f"SELECT {', '.join(_FIELDS)} FROM guests ORDER BY position")
        return [GuestRecord(*row) for row in rows]

    def guest(self, name: str) -> GuestRecord:
        rows = self._read(f"SELECT {', '.join(_FIELDS)} FROM guests WHERE name = ?", (name,))
        if not rows:
            raise ConfigError(f"{self.path}: no guest {name!r} in the plan's state")
        return GuestRecord(*rows[0])

    def update(self, name: str, **values: Any) -> None:
        unknown = set(values) - (set(_FIELDS) - {"name"})
        if unknown:
            raise ValueError(f"not fields of a guest record: {sorted(unknown)}")
        now = time.time()
        values["updated_at"] = now
        columns = ", ".join(f"{key} = ?" for key in values)
        with self._write() as db:
            row = db.execute("SELECT stage FROM guests WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ConfigError(f"{self.path}: no guest {name!r} in the plan's state")
            db.execute(f"UPDATE guests SET {columns} WHERE name = ?", (*values.values(), name))
            stage = values.get("stage")
            if stage is not None and stage != row[0]:
                db.execute(
                    "INSERT INTO history (name, at, stage) VALUES (?, ?, ?)", (name, now, stage)
                )

    def history(self, name: str) -> list[tuple[float, str]]:
        rows = self._read("SELECT at, stage FROM history WHERE name = ? ORDER BY id", (name,))
        return [(float(at), str(stage)) for at, stage in rows]

    def log(self, name: str, line: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO logs (name, line) VALUES (?, ?)", (name, line))

    def log_tail(self, name: str, lines: int = 200) -> list[str]:
        rows = self._read(
            "SELECT line FROM logs WHERE name = ? ORDER BY id DESC LIMIT ?", (name, lines)
        )
        return [str(row[0]) for row in reversed(rows)]

    def cancel(self, name: str | None = None) -> None:
        with self._write() as db:
            db.execute("INSERT INTO cancels (name, at) VALUES (?, ?)", (name, time.time()))

    def cancel_requested(self, name: str) -> bool:
        rows = self._read("SELECT 1 FROM cancels WHERE name IS NULL OR name = ? LIMIT 1", (name,))
        return bool(rows)

    def clear_cancels(self) -> None:
        with self._write() as db:
            db.execute("DELETE FROM cancels")

    def close(self) -> None:
        with self._lock:
            self._db.close()
