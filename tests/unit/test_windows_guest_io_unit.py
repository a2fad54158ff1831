"""The Windows conversion's batched guest I/O: hives fetched and written back once, driver files
in one archive. Against an in-memory handle that counts the round trips; the integration tests
(test_windows_drivers.py) run the same code on a real appliance."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from tests.guests import hive
from tests.unit.fake_guestfs import FakeG
from vmshift.convert.windows.guestfiles import Placement, put_files
from vmshift.convert.windows.hives import HiveCache
from vmshift.errors import ConversionError
from vmshift.guest.registry import Hive

SYSTEM = "/Windows/System32/config/SYSTEM"
SOFTWARE = "/Windows/System32/config/SOFTWARE"


class IoG(FakeG):
    """FakeG with the transfer calls, each one recorded."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__({})
        for path, data in files.items():
            self.write(path, data)
        self.calls: list[tuple[str, str]] = []
        self.host_files: list[Path] = []  # the host side of each transfer

    def download(self, path: str, local: str) -> None:
        self.calls.append(("download", path))
        self.host_files.append(Path(local))
        Path(local).write_bytes(self._data(path))

    def upload(self, local: str, path: str) -> None:
        self.calls.append(("upload", path))
        if not self.is_dir(path.rsplit("/", 1)[0]):
            raise RuntimeError(f"{path}: No such file or directory")
        self.write(path, Path(local).read_bytes())

    def tar_in(self, archive: str, directory: str) -> None:
        self.calls.append(("tar_in", directory))
        self.host_files.append(Path(archive))
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                assert member.isfile(), member.name
                data = tar.extractfile(member)
                assert data is not None
                self.write(f"{directory.rstrip('/')}/{member.name}", data.read())

    def ls(self, path: str) -> list[str]:
        self.calls.append(("ls", path))
        return super().ls(path)


def _hive_bytes(tmp_path: Path, name: str, tree: dict[str, dict[str, hive.RegValue]]) -> bytes:
    path = tmp_path / f"src-{name}"
    hive.build_hive(path, tree)
    return path.read_bytes()


@pytest.fixture
def hive_g(tmp_path: Path) -> IoG:
    return IoG(
        {
            SYSTEM: _hive_bytes(tmp_path, "SYSTEM", {r"ControlSet001\Services\a": {"Start": 1}}),
            SOFTWARE: _hive_bytes(tmp_path, "SOFTWARE", {r"Microsoft\Windows": {"X": "y"}}),
        }
    )


def _cache(g: IoG) -> HiveCache:
    return HiveCache(g, {"SYSTEM": SYSTEM, "SOFTWARE": SOFTWARE}.__getitem__)


def test_each_hive_is_downloaded_once_and_edits_reach_later_reads(hive_g: IoG) -> None:
    cache = _cache(hive_g)
    with cache.read("SYSTEM") as h:
        assert h.get_int(r"ControlSet001\Services\a", "Start") == 1
    with cache.edit("SYSTEM") as e:
        e.set_value(r"ControlSet001\Services\a", "Start", 4)
    with cache.read("SYSTEM") as h:
        assert h.get_int(r"ControlSet001\Services\a", "Start") == 4
    with cache.edit("SYSTEM") as e:
        e.set_value(r"ControlSet001\Services\b", "Start", 3)
    with cache.read("SOFTWARE") as h:
        assert h.get_str(r"Microsoft\Windows", "X") == "y"
    assert hive_g.calls == [("download", SYSTEM), ("download", SOFTWARE)]
    cache.save()
    # Only the edited hive goes back, once, with both edits.
    assert hive_g.calls[2:] == [("upload", SYSTEM)]
    cache.save()  # nothing edited since
    assert hive_g.calls[3:] == []
    cache.close()


def test_saved_hive_holds_every_edit(hive_g: IoG, tmp_path: Path) -> None:
    cache = _cache(hive_g)
    with cache.edit("SYSTEM") as e:
        e.set_value(r"ControlSet001\Services\a", "Start", 4)
    with cache.edit("SYSTEM") as e:
        e.set_value(r"ControlSet001\Services\b", "Start", 3)
    cache.save()
    cache.close()
    out = tmp_path / "uploaded"
    out.write_bytes(hive_g.files[SYSTEM])
    h = Hive(out)
    assert h.get_int(r"ControlSet001\Services\a", "Start") == 4
    assert h.get_int(r"ControlSet001\Services\b", "Start") == 3


def test_a_failed_edit_is_not_kept_and_nothing_unsaved_reaches_the_guest(hive_g: IoG) -> None:
    before = hive_g.files[SYSTEM]
    cache = _cache(hive_g)
    with pytest.raises(KeyError), cache.edit("SYSTEM") as e:
        e.set_value(r"ControlSet001\Services\a", "Start", 4)
        raise KeyError("step failed")
    with cache.read("SYSTEM") as h:
        assert h.get_int(r"ControlSet001\Services\a", "Start") == 1
    cache.save()  # the failed block edited nothing
    assert ("upload", SYSTEM) not in hive_g.calls
    with cache.edit("SYSTEM") as e:
        e.set_value(r"ControlSet001\Services\a", "Start", 4)
    cache.close()  # a conversion that failed later: never saved
    assert hive_g.files[SYSTEM] == before


def test_two_editors_on_one_hive_are_refused(hive_g: IoG) -> None:
    cache = _cache(hive_g)
    with cache.edit("SYSTEM"), pytest.raises(ConversionError), cache.edit("SYSTEM"):
        pass
    cache.close()


def test_new_files_go_in_one_archive_and_existing_ones_keep_their_name(tmp_path: Path) -> None:
    g = IoG({"/Win/Drivers/VirtIO/VIOSTOR.INF": b"old inf", "/Win/sys/drivers/x.sys": b"x"})
    local = {}
    for name in ("viostor.sys", "viostor.inf", "netkvm.sys", "netkvm2.sys"):
        local[name] = tmp_path / name
        local[name].write_bytes(f"new {name}".encode())
    vdir, ddir = "/Win/Drivers/VirtIO", "/Win/sys/drivers"
    targets = put_files(
        g,
        [
            Placement(vdir, "viostor.sys", local["viostor.sys"]),
            Placement(vdir, "viostor.inf", local["viostor.inf"]),
            Placement(vdir, "netkvm.sys", local["netkvm.sys"]),
            Placement(vdir, "NETKVM.sys", local["netkvm2.sys"]),  # the same file: last wins
            Placement(ddir, "viostor.sys", local["viostor.sys"]),
        ],
    )
    assert targets == [
        f"{vdir}/viostor.sys",
        f"{vdir}/VIOSTOR.INF",
        f"{vdir}/netkvm.sys",
        f"{vdir}/netkvm.sys",
        f"{ddir}/viostor.sys",
    ]
    assert g.files[f"{vdir}/VIOSTOR.INF"] == b"new viostor.inf"
    assert f"{vdir}/viostor.inf" not in g.files
    assert g.files[f"{vdir}/netkvm.sys"] == b"new netkvm2.sys"
    assert f"{vdir}/NETKVM.sys" not in g.files
    assert g.files[f"{vdir}/viostor.sys"] == g.files[f"{ddir}/viostor.sys"] == b"new viostor.sys"
    kinds = [c for c, _ in g.calls]
    assert kinds == ["ls", "ls", "upload", "tar_in"]


def test_a_failed_archive_is_a_conversion_error(tmp_path: Path) -> None:
    class NoTar(IoG):
        def tar_in(self, archive: str, directory: str) -> None:
            raise RuntimeError("tar: write error")

    f = tmp_path / "a.sys"
    f.write_bytes(b"a")
    g = NoTar({"/W/D/keep": b""})
    with pytest.raises(ConversionError, match="/W/D"):
        put_files(g, [Placement("/W/D", "a.sys", f)])


def test_host_copies_are_made_in_the_run_s_work_directory(hive_g: IoG, tmp_path: Path) -> None:
    """The hive copies and the archive of new files go under the session's scratch directory
    (the run's work directory), where a sweep of dead runs finds them, not in $TMPDIR."""
    work = tmp_path / "work"
    work.mkdir()
    cache = HiveCache(hive_g, {"SYSTEM": SYSTEM, "SOFTWARE": SOFTWARE}.__getitem__, work)
    with cache.edit("SYSTEM") as e:
        e.set_value(r"ControlSet001\Services\a", "Start", 3)
    cache.save()
    driver = tmp_path / "viostor.sys"
    driver.write_bytes(b"driver")
    hive_g.mkdir_p("/W/D")
    put_files(hive_g, [Placement("/W/D", "viostor.sys", driver)], work)
    assert [c for c, _ in hive_g.calls if c != "ls"] == ["download", "upload", "tar_in"]
    assert all(p.is_relative_to(work) and p.parent != work for p in hive_g.host_files)
    cache.close()
    assert not list(work.iterdir())
