"""Progress events. Library code emits them; the CLI decides how to show them (or not)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CopyProgress:
    disk: str  # short name, e.g. "sda"
    label: str  # what to show: "debian12-sda"
    done: int  # bytes of the virtual disk processed
    total: int
    finished: bool = False  # the last event for this disk
    # "copy", then "verify" while the copy is compared with what it was copied from.
    phase: str = "copy"


@dataclass(frozen=True)
class StageEvent:
    """A pipeline stage started, with a one-line description."""

    stage: str
    message: str


@dataclass(frozen=True)
class WarningEvent:
    """Something the user should know that does not stop the run (a source file read past)."""

    message: str


Event = CopyProgress | StageEvent | WarningEvent
EventSink = Callable[[Event], None]


def discard(_event: Event) -> None:
    """An EventSink for callers that want no progress."""
