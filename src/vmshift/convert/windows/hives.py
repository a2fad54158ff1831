"""The guest's SYSTEM and SOFTWARE hives, each downloaded once and uploaded once per conversion.

Nearly every step reads or edits a hive, a real SOFTWARE hive is tens of megabytes, and each
download or upload is a round trip through the appliance (slow without KVM). So the first use of
a hive downloads it to a private local copy; later reads and edits work on that copy, and save()
uploads the hives that were edited, after the last step.

An edit reaches the local copy only when its block ends without an exception (hivex commits it
then), so a step that fails leaves the hive as it was. A conversion whose step fails does not
call save(): nothing reaches the guest's hives (its overlay is thrown away anyway).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vmshift.errors import ConversionError
from vmshift.guest.registry import Hive, HiveEditor


class HiveCache:
    def __init__(self, g: Any, locate: Callable[[str], str], scratch: Path | None = None) -> None:
        self._g = g
        self._locate = locate  # "SYSTEM" -> its path in the guest
        self._scratch = scratch  # where the copies' directory is made ($TMPDIR if None)
        self._dir: Path | None = None
        self._copies: dict[str, tuple[str, Path]] = {}  # which -> (guest path, local copy)
        self._edited: list[str] = []  # in the order first edited
        self._editing: set[str] = set()

    def _copy(self, which: str) -> Path:
        if which in self._copies:
            return self._copies[which][1]
        guest_path = self._locate(which)
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="vmshift-hives-", dir=self._scratch))
        local = self._dir / which
        try:
            self._g.download(guest_path, str(local))
        except RuntimeError as exc:
            raise ConversionError(f"cannot read {guest_path}: {exc}") from exc
        self._copies[which] = (guest_path, local)
        return local

    @contextmanager
    def read(self, which: str) -> Iterator[Hive]:
        """The hive as the steps so far left it (edits still open are not in it)."""
        yield Hive(self._copy(which))

    @contextmanager
    def edit(self, which: str) -> Iterator[HiveEditor]:
        """The hive for editing; its changes are kept when the block succeeds."""
        if which in self._editing:
            # Two editors on one hive: whichever commits last would silently drop the other's
            # changes.
            raise ConversionError(f"internal error: the {which} hive is already being edited")
        self._editing.add(which)
        try:
            editor = HiveEditor(self._copy(which))
            yield editor
            editor.commit()
            if which not in self._edited:
                self._edited.append(which)
        finally:
            self._editing.discard(which)

    def save(self) -> None:
        """Upload every edited hive back to where it came from."""
        for which in self._edited:
            guest_path, local = self._copies[which]
            try:
                self._g.upload(str(local), guest_path)
            except RuntimeError as exc:
                raise ConversionError(f"cannot write {guest_path}: {exc}") from exc
        self._edited.clear()

    def close(self) -> None:
        """Drop the local copies (unsaved edits are lost)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None
        self._copies.clear()
        self._edited.clear()
