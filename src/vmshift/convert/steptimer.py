"""Wall time of each conversion step, for the --report document's `timings` (bench/ reads it).

timer = StepTimer()
with timer.step("initramfs"):
    initramfs.rebuild(guest)
GuestCaps(..., timings=timer.timings)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from vmshift.model.caps import StepTime


class StepTimer:
    def __init__(self) -> None:
        self._times: list[StepTime] = []

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step `name`; a step that raises is recorded too."""
        started = time.monotonic()
        try:
            yield
        finally:
            self._times.append(StepTime(name, round(time.monotonic() - started, 3)))

    @property
    def timings(self) -> tuple[StepTime, ...]:
        return tuple(self._times)
