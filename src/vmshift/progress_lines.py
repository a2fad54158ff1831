"""Reading `vmshift convert --machine-readable` output back: its stage and progress lines.

cli/render.py (ProgressPrinter) writes them; the P2V server (p2v/server.py) and the plan
runners (fleet/guest_run.py) read a conversion child's output with event_of():

    stage NAME SECONDS MESSAGE            a pipeline stage began (source, copy, finalize ...)
    copy|verify|fetch LABEL DONE TOTAL PCT%   bytes done of a disk's copy, check or download
"""

from __future__ import annotations

import re
from typing import Any

PROGRESS = re.compile(r"(copy|verify|fetch) (\S+) (\d+) (\d+) \d+%$")
STAGE = re.compile(r"stage (\S+) [\d.]+ (.*)$")


def event_of(line: str, stream: str) -> dict[str, Any]:
    """One line of a conversion's output (stream: "stdout" or "stderr") as an event:
    {"event": "progress", "phase", "label", "done", "total"}, {"event": "stage", "stage",
    "message"}, or {"event": "log", "line"} for anything else."""
    if stream == "stdout":
        if m := PROGRESS.match(line):
            return {
                "event": "progress",
                "phase": m[1],
                "label": m[2],
                "done": int(m[3]),
                "total": int(m[4]),
            }
        if m := STAGE.match(line):
            return {"event": "stage", "stage": m[1], "message": m[2]}
    return {"event": "log", "line": line}
