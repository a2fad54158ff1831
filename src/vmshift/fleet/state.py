"""Each guest's stage and progress in a plan run, and the one interface both stores offer.

The store is SQLite here (fleet/state_sqlite.py: one file per plan, no server) and Redis for a
distributed run (fleet/state_redis.py: visible from every conversion host). The runners write
it; `plan status`, `plan cancel` and the dashboard read it (cancel writes a flag the running
conversion checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# A guest's stages, in order. A conversion maps its own stages onto them (guest_run.py).
QUEUED = "queued"
CHECKING = "checking"  # the source opened: metadata read, disks reachable
CONVERTING = "converting"  # the appliance: inspection and conversion
COPYING = "copying"  # the copy to the target (with progress)
FINALIZING = "finalizing"  # the target's metadata written
VERIFYING = "verifying"  # --verify-boot: the result booted
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
INTERRUPTED = "interrupted"  # the run stopped (Ctrl-C, a killed worker): a rerun resumes it
STAGES = (QUEUED, CHECKING, CONVERTING, COPYING, FINALIZING, VERIFYING, DONE, FAILED,
          CANCELLED, INTERRUPTED)  # fmt: skip
# A rerun of the plan leaves these alone.
FINISHED = frozenset({DONE, CANCELLED})
# Stages of a conversion under way (a rerun resumes it: attempts > 0 add --resume).
RUNNING = frozenset({CHECKING, CONVERTING, COPYING, FINALIZING, VERIFYING})


@dataclass(frozen=True)
class GuestRecord:
    name: str
    stage: str = QUEUED
    message: str = ""  # the conversion's last stage line
    done: int = 0  # bytes copied of the disk being copied
    total: int = 0
    rate: float = 0.0  # bytes per second, recent
    error: str | None = None  # why it failed (the conversion's error line)
    worker: str | None = None  # HOST:PID of the conversion's runner
    attempts: int = 0  # conversions started for it
    queued_at: float | None = None
    started_at: float | None = None  # the conversion started (its first line: the history)
    finished_at: float | None = None
    # When the conversion said the guest was complete on the target (its `created` stage: what
    # follows is its boot check and cleanup). Set with finished_at None, its attempt died after
    # that: the guest is made, and is not converted again.
    created_at: float | None = None
    updated_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PlanState(Protocol):
    """A plan's state. Every method is safe from several processes at once."""

    def register(self, names: Sequence[str]) -> None:
        """Add the guests not known yet, queued; known ones keep their state."""

    def guests(self) -> list[GuestRecord]:
        """Every guest, in the order they were registered."""

    def guest(self, name: str) -> GuestRecord:
        """One guest (ConfigError when the plan has no such guest)."""

    def update(self, name: str, **fields: Any) -> None:
        """Set some of a guest's fields (GuestRecord's names); updated_at is set too. A
        change of stage is also added to the guest's history."""

    def history(self, name: str) -> list[tuple[float, str]]:
        """(time, stage) for every change of stage, oldest first."""

    def log(self, name: str, line: str) -> None:
        """Add a line to the guest's log."""

    def log_tail(self, name: str, lines: int = 200) -> list[str]:
        """The last lines of the guest's log."""

    def cancel(self, name: str | None = None) -> None:
        """Ask for a guest (None: every guest) to be cancelled."""

    def cancel_requested(self, name: str) -> bool:
        """Whether cancel() was asked for this guest or for the whole plan."""

    def clear_cancels(self) -> None:
        """Withdraw every cancel request of the plan (`plan run --retry-cancelled`)."""

    def close(self) -> None: ...
