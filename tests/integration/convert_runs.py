"""A `vmshift convert -i disk ... -o local` run in the background, for tests that interrupt it
or inject faults at a given stage (--machine-readable prints `stage NAME SECONDS MESSAGE`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def convert_argv(
    disks: Sequence[str | Path], outdir: Path, workdir: Path, *extra: str | Path
) -> list[str | Path]:
    """`vmshift convert` of disks to -o local in outdir, its work directories in workdir."""
    return ["convert", "-i", "disk", *disks, "-o", "local", "-os", outdir,
            "--workdir", workdir, *extra]  # fmt: skip


def start_convert(
    disks: Sequence[str | Path], outdir: Path, workdir: Path, *extra: str
) -> subprocess.Popen[str]:
    exe = Path(sys.executable).parent / "vmshift"
    argv = convert_argv(disks, outdir, workdir, "--machine-readable", *extra)
    return subprocess.Popen(
        [str(exe), *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_stage(proc: subprocess.Popen[str], stage: str) -> None:
    """Read the run's progress lines until stage begins."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(f"stage {stage} "):
            return
    raise AssertionError(f"the run ended before stage {stage}: {proc.wait()}")


def users_of(path: Path) -> list[str]:
    """The command lines of live processes that name path (a leftover appliance, nbdkit ...)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in text:
            found.append(text)
    return found
