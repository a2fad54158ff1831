"""targets/writable.py: the probe file that tells whether a target's directory takes files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import mounted_tmpfs
from vmshift.errors import TargetError
from vmshift.targets.writable import PREFIX, check_writable, probe_file


def test_a_probe_is_made_there_and_removed(tmp_path: Path) -> None:
    with probe_file(tmp_path, "-os here") as probe:
        assert probe.parent == tmp_path
        assert probe.name.startswith(PREFIX)
        assert probe.is_file()
    assert list(tmp_path.iterdir()) == []


def test_a_probe_is_removed_when_its_user_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError), probe_file(tmp_path, "-os here"):
        raise ValueError("the caller's own error")
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_filesystem_is_refused_naming_it(tmp_path: Path) -> None:
    # The probe by itself (the local target asks os.access first, which knows this one).
    with mounted_tmpfs(tmp_path / "ro", "1m") as ro:
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        with pytest.raises(TargetError) as raised:
            check_writable(ro, f"-os {ro}")
        assert str(raised.value) == f"-os {ro}: cannot create files there: Read-only file system"
