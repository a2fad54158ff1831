"""bench/v2v_bench.py's reading of each tool's own account of where its time went.

vmshift: the `stage NAME SECONDS MESSAGE` lines of `convert --machine-readable` (the bench
stamps each line when it arrives, so the first row is the process's start-up), and the
conversion steps' wall times from the --report document's `timings`. virt-v2v: its own
`[  12.3] Message` lines, each lasting until the next one (the last until it exits).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vmshift.progress_lines import STAGE

V2V_LINE = re.compile(r"\[\s*(\d+\.\d)\] (.+?)\s*$")
# Where vmshift's time goes between its stage lines (what each stage line begins).
STAGE_NOTES = {
    "startup": "python start, option parsing",
    "source": "reading the source",
    "appliance": "appliance launch",
    "inspect": "inspection",
    "convert": "conversion, by step",
    "trim": "fstrim, appliance shutdown",
    "copy": "output setup, copy + verify",
    "finalize": "domain XML",
    "created": "work directory removal, exit",
}


@dataclass(frozen=True)
class Span:
    name: str
    seconds: float


def spans(marks: Sequence[tuple[str, float]], end: float) -> list[Span]:
    """Consecutive (name, start) marks as durations, the last lasting until end."""
    out = []
    for (name, start), nxt in zip(marks, [*(m[1] for m in marks[1:]), end], strict=True):
        out.append(Span(name, max(0.0, nxt - start)))
    return out


def vmshift_marks(lines: Iterable[tuple[float, str]]) -> list[tuple[str, float]]:
    """(stage, arrival second) of each stage line, after a `startup` mark at 0."""
    marks = [("startup", 0.0)]
    for at, line in lines:
        if m := STAGE.match(line):
            marks.append((m[1], at))
    return marks


def v2v_marks(text: str) -> list[tuple[str, float]]:
    """(message, virt-v2v's own second) of each of its `[ SECONDS] Message` lines; progress
    bars share lines with them, so every match in the text counts."""
    marks = []
    for chunk in re.split(r"[\r\n]", text):
        if m := V2V_LINE.search(chunk):
            marks.append((_short(m[2]), float(m[1])))
    return marks


def _short(message: str) -> str:
    # "Setting up the source: -i disk /long/path" -> "Setting up the source"
    return message.split(":", 1)[0][:40]


def report_steps(doc: dict[str, Any]) -> list[Span]:
    """The conversion steps' times from a --report document (none before vmshift wrote them)."""
    return [Span(str(t["step"]), float(t["seconds"])) for t in doc.get("timings", [])]


def merged(runs: Sequence[Sequence[Span]]) -> list[tuple[str, list[float]]]:
    """Each name's seconds in every run (0 where a run lacks it), names summed within a run,
    in order of first appearance."""
    names: list[str] = []
    for run in runs:
        for s in run:
            if s.name not in names:
                names.append(s.name)
    table = []
    for name in names:
        table.append((name, [sum(s.seconds for s in run if s.name == name) for run in runs]))
    return table


def breakdown_table(
    title: str,
    runs: Sequence[Sequence[Span]],
    notes: dict[str, str] | None = None,
    indent: str = "",
) -> list[str]:
    """A table of seconds per name: the median over runs, then each run's."""
    if not runs:
        return []
    head = f"{title:44} {'median':>7}" + "".join(
        f" {'p' + str(i + 1):>7}" for i in range(len(runs))
    )
    rows = [head] if title else []
    for name, values in merged(runs):
        label = f"{indent}{name}"
        if notes and name in notes:
            label = f"{label} ({notes[name]})"
        cells = "".join(f" {v:7.1f}" for v in values)
        rows.append(f"{label[:44]:44} {statistics.median(values):7.1f}{cells}")
    return rows


def vmshift_table(stages: Sequence[Sequence[Span]], steps: Sequence[Sequence[Span]]) -> list[str]:
    """vmshift's stages, with the conversion steps (--report timings) under `convert`."""
    rows = breakdown_table("vmshift stage (seconds)", stages, STAGE_NOTES)
    inner = breakdown_table("", steps, indent="    ") if any(steps) else []
    at = next((i for i, r in enumerate(rows) if r.startswith("convert")), len(rows) - 1)
    return [*rows[: at + 1], *inner, *rows[at + 1 :], _total(stages)]


def v2v_table(stages: Sequence[Sequence[Span]]) -> list[str]:
    return [*breakdown_table("virt-v2v stage (its own lines)", stages), _total(stages)]


def _total(runs: Sequence[Sequence[Span]]) -> str:
    totals = [sum(s.seconds for s in run) for run in runs]
    cells = "".join(f" {v:7.1f}" for v in totals)
    return f"{'total':44} {statistics.median(totals):7.1f}{cells}"
