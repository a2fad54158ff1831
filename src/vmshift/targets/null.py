"""-o null: convert and copy, then throw the result away.

For measuring a conversion, or checking that one works, without the disk space it needs for
keeps: the copier writes into a private temporary directory (under TargetOptions.discard_dir)
that finalize removes. The data
is really written (the copy path is the same as for any target), only never kept. The
directory has an owner stamp, like a work directory: check() removes those of killed runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vmshift.errors import TargetError
from vmshift.model.caps import GuestCaps
from vmshift.model.devnames import drive_letters
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM
from vmshift.targets.base import OutputDisk, TargetOptions, TargetResult
from vmshift.targets.local import check_format_options
from vmshift.workdir import make_workdir, sweep_dead_runs

PREFIX = "vmshift-null-"


class NullTarget:
    def __init__(self, opts: TargetOptions) -> None:
        self._opts = opts
        self._dir: Path | None = None
        self.swept: list[str] = []

    def check(self, vm: SourceVM) -> None:
        check_format_options(self._opts)
        for dead in sweep_dead_runs(self._opts.discard_dir, PREFIX):
            self.swept.append(f"removed {dead}: the -o null output of a run that was killed")

    def setup(self, vm: SourceVM, sizes: list[int]) -> list[OutputDisk]:
        try:
            self._dir = make_workdir(self._opts.discard_dir, PREFIX)
        except OSError as exc:
            raise TargetError(f"-o null: cannot create a temporary directory: {exc}") from exc
        return [
            OutputDisk(
                path=self._dir / f"sd{drive_letters(i)}",
                final_path=self._dir / f"sd{drive_letters(i)}",
                format=self._opts.format,
                preallocated=False,
                virtual_size=size,
            )
            for i, size in enumerate(sizes)
        ]

    def finalize(
        self, vm: SourceVM, os: OperatingSystem, caps: GuestCaps, disks: list[OutputDisk]
    ) -> TargetResult:
        self._remove()
        return TargetResult(name=self._opts.name or vm.name, description="discarded (-o null)")

    def abort(self) -> None:
        self._remove()

    def _remove(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
