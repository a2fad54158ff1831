"""Drawing a plan's guests on the terminal: the table `plan run` and `plan status` share, and
plain lines where there is no terminal (a log file, a pipe)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from vmshift.cli.render import human_size
from vmshift.fleet.state import (
    CANCELLED,
    CHECKING,
    COPYING,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    STAGES,
    GuestRecord,
)

# A guest has ended (for `status --watch`) in one of these.
ENDED = frozenset({DONE, FAILED, CANCELLED, INTERRUPTED})
STAGE_STYLE = {DONE: "green", FAILED: "bold red", CANCELLED: "yellow", INTERRUPTED: "yellow",
               QUEUED: "dim", COPYING: "cyan"}  # fmt: skip
BAR_WIDTH = 10


def percent(record: GuestRecord) -> int | None:
    """How far the guest's copy (or check, or download) is; None before any progress."""
    if record.stage == DONE:
        return 100
    if not record.total:
        return None
    return min(100, int(record.done * 100 / record.total))


def rate_text(record: GuestRecord) -> str:
    if record.stage not in (CHECKING, COPYING) or record.rate <= 0:
        return ""
    return f"{human_size(int(record.rate))}/s"


def summary(records: Sequence[GuestRecord]) -> str:
    """'3 guests: 1 done, 1 copying, 1 queued', stages in their order."""
    counts = {stage: sum(r.stage == stage for r in records) for stage in STAGES}
    parts = [f"{n} {stage}" for stage, n in counts.items() if n]
    return f"{len(records)} guest{'s' if len(records) != 1 else ''}: {', '.join(parts) or '-'}"


def guest_table(records: Sequence[GuestRecord], *, detail: bool) -> Table:
    """The guests, one row each: stage, progress, rate, error; detail adds attempts and the
    worker (plan status)."""
    table = Table(box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("guest", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    table.add_column("rate", justify="right", no_wrap=True)
    if detail:
        table.add_column("tries", justify="right", min_width=5)
        table.add_column("worker", no_wrap=True)
    table.add_column("note", overflow="fold", min_width=12)
    for r in records:
        pct = percent(r)
        progress: RenderableType = Text("")
        if pct is not None:
            bar = ProgressBar(total=100, completed=pct, width=BAR_WIDTH)
            progress = Table.grid(padding=(0, 1))
            progress.add_row(bar, Text(f"{pct:>3}%"))
        note = Text(r.error, style="red") if r.error else Text("", style="dim")
        if not r.error and r.stage in RUNNING:
            note = Text(r.message, style="dim")
        row: list[RenderableType] = [
            Text(r.name),
            Text(r.stage, style=STAGE_STYLE.get(r.stage, "")),
            progress,
            Text(rate_text(r)),
        ]
        if detail:
            row += [Text(str(r.attempts)), Text(r.worker or "")]
        table.add_row(*row, note)
    return table


def plan_renderable(title: str, records: Sequence[GuestRecord], *, detail: bool) -> Group:
    return Group(
        Text(f"{title}: {summary(records)}", style="bold"), guest_table(records, detail=detail)
    )


class PlainLines:
    """The guests' changes as lines: a stage change, every 10% of a copy, an error."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.seen: dict[str, tuple[str, str, int]] = {}  # name -> (stage, message, tens)

    def show(self, records: Sequence[GuestRecord]) -> None:
        for r in records:
            pct = percent(r) if r.stage == COPYING else None
            tens = -1 if pct is None else pct // 10
            # Only a running guest's steps and a copy's progress are worth lines of their own.
            now = (r.stage, r.message if r.stage in RUNNING else "", tens)
            if self.seen.get(r.name) == now:
                continue
            self.seen[r.name] = now
            stamp = time.strftime("%H:%M:%S")
            line = f"{stamp} {r.name}: {r.stage}"
            if pct is not None:
                line += f" {pct}%"
            if rate := rate_text(r):
                line += f" {rate}"
            if r.error:
                line += f": {r.error}"
            elif r.message and r.stage in RUNNING:
                line += f" ({r.message})"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
