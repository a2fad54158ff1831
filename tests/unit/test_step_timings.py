"""Conversion step timings: StepTimer, the --report document's `timings`, and how
bench/v2v_bench.py reads both tools' own accounts of their time (bench/v2v_stages.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.v2v_stages import Span, merged, report_steps, spans, v2v_marks, vmshift_marks

from tests.unit.test_v2v_options import os_at
from vmshift.convert.steptimer import StepTimer
from vmshift.model.caps import GuestCaps, StepTime
from vmshift.model.vm import Firmware, SourceVM


def test_steps_are_recorded_in_order_even_one_that_fails() -> None:
    timer = StepTimer()
    with timer.step("tools_removal"):
        pass
    with pytest.raises(RuntimeError), timer.step("initramfs"):
        raise RuntimeError("dracut failed")
    assert [t.step for t in timer.timings] == ["tools_removal", "initramfs"]
    assert all(t.seconds >= 0 for t in timer.timings)


def test_the_report_lists_the_timings() -> None:
    from vmshift.pipeline import ConversionResult
    from vmshift.report import conversion_report
    from vmshift.targets.base import TargetResult

    caps = GuestCaps(
        "virtio-blk", "virtio", "vga", "q35", Firmware.BIOS, "x86_64",
        timings=(StepTime("kernel", 0.25), StepTime("initramfs", 61.5)),
    )  # fmt: skip
    vm = SourceVM("g", 1 << 30, 1, None, Firmware.BIOS, ())
    target = TargetResult("g-kvm", "written to /out", (Path("/out/g-kvm-sda"),), ())
    doc = conversion_report(
        ConversionResult(vm, os_at("/dev/sda1", "Debian 12"), caps, target), "vmshift: done"
    )
    assert doc["timings"] == [
        {"step": "kernel", "seconds": 0.25},
        {"step": "initramfs", "seconds": 61.5},
    ]
    assert report_steps(doc) == [Span("kernel", 0.25), Span("initramfs", 61.5)]


def test_vmshift_stage_lines_become_spans_from_the_process_start() -> None:
    lines = [
        (0.6, "stage source 0.0 reading the source"),
        (0.7, "stage appliance 0.1 starting the libguestfs appliance"),
        (3.0, "copy debian12-sda 10 20 50%"),
        (20.7, "stage inspect 20.1 inspecting the guest"),
    ]
    got = spans(vmshift_marks(lines), 30.0)
    assert [s.name for s in got] == ["startup", "source", "appliance", "inspect"]
    assert [round(s.seconds, 1) for s in got] == [0.6, 0.1, 20.0, 9.3]


def test_virt_v2v_lines_with_progress_bars_on_them() -> None:
    text = (
        "[   0.0] Setting up the source: -i disk /x/rhel.qcow2\n"
        "[   1.1] Opening the source\n"
        "\u2588 100% [****]\r[  43.8] Creating output metadata\n"
    )
    assert v2v_marks(text) == [
        ("Setting up the source", 0.0),
        ("Opening the source", 1.1),
        ("Creating output metadata", 43.8),
    ]


def test_runs_are_merged_by_name_summing_repeats() -> None:
    runs = [[Span("a", 1.0), Span("b", 2.0), Span("a", 0.5)], [Span("b", 3.0), Span("c", 4.0)]]
    assert merged(runs) == [("a", [1.5, 0.0]), ("b", [2.0, 3.0]), ("c", [0.0, 4.0])]
