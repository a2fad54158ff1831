"""Shared fixtures: the CLI runner and the guests the suite builds for itself."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.guests.manifest import BuiltGuest

REPO = Path(__file__).resolve().parent.parent

# The modules that take longest, longest first (per-module totals from a CI run's junit XML,
# 2026-12-06). `make test` gives whole modules to its workers in collection order
# (--dist loadfile --no-loadscope-reorder): started last, one of these would leave the other
# worker idle for its last many minutes. Modules not named here follow, in their usual order.
HEAVIEST_FIRST = (
    "test_linux_conversion.py",  # three real guests converted and booted, two at a time
    "test_convert_matrix.py",
    "test_p2v_convert.py",  # two real-guest P2V conversions at once
    "test_p2v_image.py",  # the boot image built, booted under TCG, converting
    "test_plan_embedded.py",  # a plan of four guests, killed in a copy and run again
    "test_inspect_guests.py",  # two appliances (every Linux guest, every Windows guest)
    "test_plan_distributed.py",  # two Celery workers, one killed in a copy
    "test_windows_drivers.py",
    "test_resume.py",
    "test_real_debian_variants.py",
    "test_convert_pipeline.py",
    "test_vsphere_convert.py",
    "test_p2v_resize.py",
    "test_linux_device_steps.py",
    "test_windows_firstboot.py",
    "test_linux_tools_network.py",
    "test_guest_safety.py",
    "test_windows_guests_build.py",
    "test_real_debian.py",
    "test_signals.py",
    "test_root_choice.py",
    "test_linux_guests_build.py",
    "test_linux_boot_steps.py",
    "test_profiles_cli.py",
    "test_rhv_convert.py",
    "test_killed_in_finalize.py",
    "test_vmx_ssh_source.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


# libguestfs and qemu must not try KVM where it cannot work; the product detects this itself,
# but test helpers that call libguestfs directly rely on this setting.
os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")


def vmshift(
    args: Sequence[str | os.PathLike[str]],
    *,
    check: bool = False,
    timeout: float = 900,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the installed `vmshift` command the way a user would (in env, if given; stdin: what
    its standard input holds, else none)."""
    exe = Path(sys.executable).parent / "vmshift"
    return subprocess.run(
        [str(exe), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=None if env is None else dict(env),
    )


def print_source_row(out: str, key: str) -> str:
    """The value of a `vmshift convert --print-source` row (the first line starting with key)."""
    for line in out.splitlines():
        if line.strip().startswith(key + " "):
            return line.strip()[len(key) :].strip()
    raise AssertionError(f"no {key!r} row in:\n{out}")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="session")
def linux_guests() -> dict[str, BuiltGuest]:
    from tests.guests.linux import build_all

    return build_all()


@pytest.fixture(scope="session", autouse=True)
def firstboot_tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in rhsrvany.exe for every Windows conversion the suite runs: Debian packages
    none, and a Windows guest with first-boot work cannot be converted without one."""
    from tests.guests.windows import SUBSYSTEM_CONSOLE, pe_image

    path = tmp_path_factory.mktemp("firstboot") / "rhsrvany.exe"
    path.write_bytes(pe_image("i386", SUBSYSTEM_CONSOLE))
    os.environ.setdefault("VMSHIFT_FIRSTBOOT_TOOL", str(path))
    return path


@pytest.fixture(scope="session")
def windows_guests() -> dict[str, BuiltGuest]:
    from tests.guests.windows import build_all

    return build_all()


@pytest.fixture(scope="session")
def real_debian() -> BuiltGuest:
    from tests.guests.debian_real import build_real_debian

    return build_real_debian()


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    """An empty output directory (-os) for one test."""
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty work directory (--workdir) for one test."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of size (mount's size=, e.g. "16m") on the new directory path, unmounted
    afterwards; the test is skipped where it cannot be mounted (not root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                            str(path)], capture_output=True, text=True, check=False)  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for one test."""
    with mounted_tmpfs(tmp_path / "small", "16m") as path:
        yield path
