"""fsops.rename_noreplace: renameat2(RENAME_NOREPLACE), and the link/mkdir fallback used where
the filesystem does not know the flag (NFS answers EINVAL), both never replacing anything."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from vmshift import fsops


def _unsupported(src: str, dst: str) -> None:
    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), src, None, dst)


@pytest.fixture(params=["renameat2", "fallback", "no-renameat2"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the kernel's renameat2, with a filesystem that refuses the flag
    (the fallback), and with a libc that has no renameat2 at all."""
    if request.param == "renameat2":
        assert fsops._renameat2 is not None, "glibc >= 2.28 has renameat2"
    elif request.param == "fallback":
        monkeypatch.setattr(fsops, "_renameat2", _unsupported)
    else:
        monkeypatch.setattr(fsops, "_renameat2", None)
    return str(request.param)


def test_a_file_is_renamed(tmp_path: Path, way: str) -> None:
    src, dst = tmp_path / ".a.tmp", tmp_path / "a"
    src.write_text("new")
    fsops.rename_noreplace(src, dst)
    assert dst.read_text() == "new" and not src.exists()


@pytest.mark.parametrize(
    "existing",
    [
        lambda p: p.write_text("old"),
        lambda p: p.symlink_to("nowhere"),  # a dangling link is a name taken all the same
        lambda p: p.mkdir(),
    ],
    ids=["file", "dangling-link", "empty-directory"],
)
def test_a_taken_name_is_never_replaced(
    tmp_path: Path, way: str, existing: Callable[[Path], None]
) -> None:
    src, dst = tmp_path / ".a.tmp", tmp_path / "a"
    src.write_text("new")
    existing(dst)
    before = os.lstat(dst)
    with pytest.raises(FileExistsError) as raised:
        fsops.rename_noreplace(src, dst)
    assert raised.value.filename == str(dst)
    assert src.read_text() == "new"
    after = os.lstat(dst)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if dst.is_file():
        assert dst.read_text() == "old"


def test_a_directory_is_renamed(tmp_path: Path, way: str) -> None:
    src, dst = tmp_path / ".d.tmp", tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("x")
    fsops.rename_noreplace(src, dst)
    assert (dst / "sub" / "f").read_text() == "x" and not src.exists()


@pytest.mark.parametrize("empty", [True, False])
def test_a_taken_directory_name_is_never_replaced(tmp_path: Path, way: str, empty: bool) -> None:
    src, dst = tmp_path / ".d.tmp", tmp_path / "d"
    src.mkdir()
    (src / "mine").write_text("new")
    dst.mkdir()
    if not empty:
        (dst / "theirs").write_text("old")
    with pytest.raises(FileExistsError):
        fsops.rename_noreplace(src, dst)
    assert (src / "mine").read_text() == "new"
    assert sorted(p.name for p in dst.iterdir()) == ([] if empty else ["theirs"])


def test_fallback_a_directory_filled_in_the_instant_after_mkdir_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process puts a file into the placeholder before the rename: rename(2) does not
    replace a non-empty directory, so that file stays, and src too."""
    monkeypatch.setattr(fsops, "_renameat2", _unsupported)
    src, dst = tmp_path / ".d.tmp", tmp_path / "d"
    src.mkdir()
    real_mkdir = Path.mkdir

    def mkdir_then_someone_writes(self: Path, mode: int = 0o777, *a: bool, **k: bool) -> None:
        real_mkdir(self, mode, *a, **k)
        if self == dst:
            (dst / "theirs").write_text("old")

    monkeypatch.setattr(Path, "mkdir", mkdir_then_someone_writes)
    with pytest.raises(FileExistsError):
        fsops.rename_noreplace(src, dst)
    assert src.is_dir() and (dst / "theirs").read_text() == "old"


def test_fallback_an_nfs_link_answered_eexist_after_it_worked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retransmitted NFS LINK can report EEXIST for the link it made itself."""
    monkeypatch.setattr(fsops, "_renameat2", _unsupported)
    real_link = os.link

    def link_then_eexist(src: Path, dst: Path, *, follow_symlinks: bool = True) -> None:
        real_link(src, dst, follow_symlinks=follow_symlinks)
        raise FileExistsError(errno.EEXIST, "File exists", str(dst))

    monkeypatch.setattr(os, "link", link_then_eexist)
    src, dst = tmp_path / ".a.tmp", tmp_path / "a"
    src.write_text("new")
    fsops.rename_noreplace(src, dst)
    assert dst.read_text() == "new" and not src.exists()


def test_other_errors_are_raised(tmp_path: Path, way: str) -> None:
    with pytest.raises(FileNotFoundError):
        fsops.rename_noreplace(tmp_path / "absent", tmp_path / "a")
    assert not (tmp_path / "a").exists()
