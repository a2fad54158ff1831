"""Read a guest hive without writing it back.

WindowsGuest.edit_hive uploads the hive when its block ends; the checks and the first-boot step
only read, and a real SOFTWARE hive is tens of megabytes, so they download a private copy.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from vmshift.errors import ConversionError
from vmshift.guest.registry import Hive

if TYPE_CHECKING:
    from vmshift.convert.windows.context import WindowsGuest


@contextmanager
def read_hive(guest: WindowsGuest, which: str) -> Iterator[Hive]:
    guest_path = guest.hive_path(which)
    with tempfile.TemporaryDirectory(prefix="vmshift-hive-") as tmp:
        local = Path(tmp) / which
        try:
            guest.g.download(guest_path, str(local))
        except RuntimeError as exc:
            raise ConversionError(f"cannot read {guest_path}: {exc}") from exc
        yield Hive(local)
