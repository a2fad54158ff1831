"""An in-memory stand-in for the libguestfs calls the Linux conversion steps make.

Unit tests run those steps' file logic against it in milliseconds; the integration tests run the
same steps against a real appliance.
"""

from __future__ import annotations

import fnmatch
import posixpath


class FakeG:
    """Files (bytes) and symlinks in dicts; commands are recorded and fail (no binaries)."""

    def __init__(self, files: dict[str, str], links: dict[str, str] | None = None) -> None:
        self.files = {p: t.encode() for p, t in files.items()}
        self.links = dict(links or {})
        self.dirs: set[str] = set()
        for p in [*self.files, *self.links]:
            self._dirs_of(posixpath.dirname(p))
        self.commands: list[list[str]] = []

    def _dirs_of(self, path: str) -> None:
        while path not in ("/", ""):
            self.dirs.add(path)
            path = posixpath.dirname(path)

    def _data(self, path: str) -> bytes:
        try:
            return self.files[path]
        except KeyError:
            raise RuntimeError(f"{path}: No such file or directory") from None

    def is_file(self, path: str, followsymlinks: bool = False) -> bool:
        return path in self.files

    def is_dir(self, path: str, followsymlinks: bool = False) -> bool:
        return path in self.dirs

    def is_symlink(self, path: str) -> bool:
        return path in self.links

    def readlink(self, path: str) -> str:
        return self.links[path]

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs or path in self.links

    def filesize(self, path: str) -> int:
        return len(self._data(path))

    def statns(self, path: str) -> dict[str, int]:
        """Regular files only, as stat(2) reports them (symlinks followed one level)."""
        data = self._data(self.links.get(path, path))
        return {"st_mode": 0o100644, "st_size": len(data)}

    def pread(self, path: str, count: int, offset: int) -> bytes:
        return self._data(path)[offset : offset + count]

    def read_file(self, path: str) -> bytes:
        return self._data(path)

    def write(self, path: str, data: bytes) -> None:
        self._dirs_of(posixpath.dirname(path))
        self.files[path] = data

    def cp(self, src: str, dst: str) -> None:
        self.write(dst, self._data(src))

    def cp_a(self, src: str, dst: str) -> None:
        self.write(dst, self._data(src))

    def rm_f(self, path: str) -> None:
        self.files.pop(path, None)

    def mkdir_p(self, path: str) -> None:
        self._dirs_of(path)

    def ls(self, path: str) -> list[str]:
        return sorted(p.rsplit("/", 1)[1] for p in self.files if posixpath.dirname(p) == path)

    def glob_expand(self, pattern: str) -> list[str]:
        return sorted(p for p in [*self.files, *self.dirs] if fnmatch.fnmatchcase(p, pattern))

    def command(self, argv: list[str]) -> str:
        self.commands.append(argv)
        raise RuntimeError("phony guest: no binaries")

    def text(self, path: str) -> str:
        return self._data(path).decode()
