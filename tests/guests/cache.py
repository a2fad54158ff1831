"""Where built test guests are kept between runs.

Builders are keyed by a version string: change a builder's output and bump its version, and the
cached image is rebuilt. The cache lives outside the checkout so CI's fresh clones reuse it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("VMSHIFT_TEST_CACHE")
    if env:
        root = Path(env)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        root = base / "vmshift-tests"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cached_dir(name: str, version: str, build: Callable[[Path], None]) -> Path:
    """Return a directory holding `name` at `version`, calling build(tmpdir) when absent.

    build() fills a fresh temporary directory; it is renamed into place only once complete, so
    an interrupted build never leaves a half-made guest that a later run would trust.
    Parallel test workers take a lock per guest, so one builds while the others wait for it.
    """
    final = cache_root() / f"{name}-{version}"
    if (final / ".complete").exists():
        return final
    with (cache_root() / f".{name}-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(final, name, version, build)


def _build_locked(final: Path, name: str, version: str, build: Callable[[Path], None]) -> Path:
    if (final / ".complete").exists():
        return final
    tmp = cache_root() / f".{name}-{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        (tmp / ".complete").touch()
        if (final / ".complete").exists():
            # Another process built it meanwhile and may be using it: keep theirs.
            return final
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def source_version(*files: str | Path) -> str:
    """A short digest of builder source files: editing a builder rebuilds its cached guests."""
    import hashlib

    digest = hashlib.sha256()
    for f in files:
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()[:12]
