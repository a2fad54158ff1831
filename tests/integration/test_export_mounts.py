"""-o rhv mounts an NFS export domain for the run; a run killed with SIGKILL leaves that mount.
The next run that mounts one unmounts and removes it. Stood in for here by a tmpfs (a mount
is a mount): no NFS server is needed to see the sweep work, and what the mount holds is never
deleted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vmshift.process import Owner
from vmshift.targets.export_domain import MOUNT_PREFIX, OWNER_SUFFIX, sweep_dead_mounts


def _dead_owner() -> Owner:
    """A stamp of this boot, host and namespace whose process does not exist (pids stay below
    4194304, the kernel's maximum)."""
    me = Owner.this_process()
    return Owner(4_194_305, "1", me.boot, me.pidns, me.host)


def test_a_killed_runs_mount_is_unmounted_and_removed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    dead = tmp_path / f"{MOUNT_PREFIX}dead"
    alive = tmp_path / f"{MOUNT_PREFIX}alive"
    for mnt, owner in ((dead, _dead_owner()), (alive, Owner.this_process())):
        mnt.mkdir()
        (tmp_path / (mnt.name + OWNER_SUFFIX)).write_text(owner.stamp())
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
        (mnt / "exported.txt").write_text("the export's own data\n")
    try:
        said = sweep_dead_mounts(tmp_path)
        assert said == [f"unmounted and removed {dead}: left by run {_dead_owner().pid} that "
                        "was killed"]  # fmt: skip
        assert not dead.exists() and not (tmp_path / (dead.name + OWNER_SUFFIX)).exists()
        # A live run's mount stays, with what it holds.
        assert os.path.ismount(alive) and (alive / "exported.txt").exists()
    finally:
        for mnt in (dead, alive):
            if os.path.ismount(mnt):
                subprocess.run(["umount", str(mnt)], check=False)
