"""A source whose open() does slow work (vSphere's export-lease downloads) reports its progress
through the run's own event sink: the pipeline hands the sink over before open()."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmshift.blockio.progress import CopyProgress, Event, EventSink, discard
from vmshift.errors import TargetError
from vmshift.model.vm import Firmware, SourceVM
from vmshift.pipeline import RunOptions, run_conversion
from vmshift.sources.base import ReportingSource


class _DownloadingSource:
    def __init__(self) -> None:
        self.sink: EventSink = discard

    def report_to(self, sink: EventSink) -> None:
        self.sink = sink

    def open(self, workdir: Path) -> SourceVM:
        self.sink(CopyProgress("sda-export", "g-sda-export", 1 << 20, 1 << 20, finished=True))
        return SourceVM("g", 1 << 30, 1, None, Firmware.BIOS, ())

    def close(self) -> None:
        pass


class _RefusingTarget:
    def check(self, vm: SourceVM) -> None:
        raise TargetError("-os /nowhere: no such directory")


def test_the_source_reports_through_the_runs_sink(tmp_path: Path) -> None:
    source = _DownloadingSource()
    assert isinstance(source, ReportingSource)
    events: list[Event] = []
    with pytest.raises(TargetError):
        run_conversion(
            source,
            _RefusingTarget(),  # type: ignore[arg-type]
            RunOptions(workdir_parent=tmp_path),
            events.append,
        )
    assert CopyProgress("sda-export", "g-sda-export", 1 << 20, 1 << 20, True) in events
