"""The last lines of a run a signal ended, by what was left: nothing, a copy kept for --resume,
or a complete guest whose --verify-boot check was cut short."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vmshift.cli import convert_cmd, main
from vmshift.cli.signals import GUARD
from vmshift.resume import KeptForResume
from vmshift.verify.boot import BootCheckInterrupted


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (KeyboardInterrupt(), "vmshift: nothing was left behind; the source is untouched"),
        (KeptForResume(Path("/tmp/vmshift-x")), "rerun the same command with --resume"),
        (
            BootCheckInterrupted("/out/g.xml (define it with: virsh define /out/g.xml)"),
            "vmshift: the guest is complete on the target (/out/g.xml (define it with: virsh "
            "define /out/g.xml)); only its boot check was cut short; the source is untouched",
        ),
    ],
)
def test_the_last_line_says_what_was_left(
    raised: KeyboardInterrupt,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted(_args: argparse.Namespace) -> int:
        raise raised

    monkeypatch.setattr(convert_cmd, "run", interrupted)
    monkeypatch.setattr(GUARD, "install", lambda: None)  # no handlers in the test process
    monkeypatch.setattr(GUARD, "signum", None)
    monkeypatch.setattr(GUARD, "stage", "booting the converted guest to check it")
    rc = main.main(["convert", "-i", "disk", "x.img", "-o", "null"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 130
    assert err[0] == "vmshift: interrupted by SIGINT while booting the converted guest to check it"
    assert said in err[1], err
