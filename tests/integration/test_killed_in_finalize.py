"""kill -9 in the middle of finalize(): some outputs are in place under their final names, the
others not, and the run's lock holds its record of what it was putting there (output_lock.py).
The next run for that name removes exactly those, saying so, and converts; a live run's, or
another host's, still refuses. A "run that was killed" is a real child process (CHILD in
test_output_locks.py) that SIGKILLs itself at its Nth rename into place.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sha256, vmshift
from tests.export_domain import FakeDomain, make_export_domain
from tests.guests.manifest import BuiltGuest
from tests.integration.convert_runs import convert_argv
from tests.integration.libvirt_fixture import PrivateLibvirtd, dir_pool, private_libvirtd
from tests.integration.test_output_locks import dead_owner, killed_in_finalize, names
from tests.integration.test_targets import CAPS, MIB, fake_copy, make_vm, validates
from tests.os_samples import LINUX
from vmshift.errors import TargetError
from vmshift.model.vm import SourceVM
from vmshift.process import Owner
from vmshift.targets.base import OutputDisk, TargetOptions
from vmshift.targets.libvirt import LibvirtTarget
from vmshift.targets.local import LocalTarget
from vmshift.targets.qemu import QemuTarget
from vmshift.targets.rhv import RhvTarget

LOCK = ".guest1.vmshift-lock"


def said(path: Path | str, pid: int) -> str:
    """What the next run says of a final output a run killed in finalize had made."""
    return f"{swept(path, pid)} while finishing"


def swept(path: Path | str, pid: int) -> str:
    """What the next run says of a temporary output, or the lock, a killed run left."""
    return f"removed {path}: left by run {pid} that was killed"


def record(lock: Path) -> list[dict[str, Any]]:
    """The entries of the record after the lock's stamp."""
    return [json.loads(line) for line in lock.read_text().splitlines()[1:]]


def copy_and_finalize(target: Any, vm: SourceVM) -> list[OutputDisk]:
    outs: list[OutputDisk] = target.setup(vm, [MIB] * len(vm.disks))
    for out in outs:
        fake_copy(out)
    target.finalize(vm, LINUX, CAPS, outs)
    return outs


def same_disk(path: Path, tmp: Path) -> bool:
    """path holds what fake_copy writes for a raw disk of 1 MiB (qemu-img compare)."""
    reference = OutputDisk(tmp / "reference.raw", tmp / "unused", "raw", False, MIB)
    if not reference.path.exists():
        fake_copy(reference)
    argv = ["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", str(reference.path), str(path)]
    return subprocess.run(argv, check=False).returncode == 0


def image_info(path: Path) -> dict[str, Any]:
    argv = ["qemu-img", "info", "--output=json", str(path)]
    info: dict[str, Any] = json.loads(subprocess.run(argv, capture_output=True, check=True).stdout)
    return info


# ---- -o local and -o qemu: a directory -----------------------------------------------------


def test_local_killed_between_its_disks_is_undone_by_the_next_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pid = killed_in_finalize("local", {"storage": str(out)}, "rename2")
    # guest1-sda is in place; guest1-sdb and the (validated) XML are not.
    xml_temp = next(n for n in names(out) if n.startswith(".guest1.xml."))
    assert names(out) == [".guest1-sdb.tmp", LOCK, xml_temp, "guest1-sda"]
    assert [next(iter(e)) for e in record(out / LOCK)] == ["file", "file", "file", "end"]
    assert record(out / LOCK)[0]["file"] == "guest1-sda"

    target = LocalTarget(TargetOptions(storage=str(out)))
    vm = make_vm()
    target.check(vm)
    assert target.swept == [
        said(out / "guest1-sda", pid),
        *(swept(out / n, pid) for n in (".guest1-sdb.tmp", xml_temp, LOCK)),
    ]
    copy_and_finalize(target, vm)
    assert names(out) == ["guest1-sda", "guest1-sdb", "guest1.xml"]
    assert all(same_disk(out / n, tmp_path) for n in ("guest1-sda", "guest1-sdb"))
    if shutil.which("virt-xml-validate"):
        assert validates(out / "guest1.xml")


def test_qemu_killed_before_its_script_is_undone_by_the_next_run(tmp_path: Path) -> None:
    pid = killed_in_finalize("qemu", {"storage": str(tmp_path)}, "rename3")
    script_temp = next(n for n in names(tmp_path) if n.startswith(".guest1.sh."))
    assert names(tmp_path) == [script_temp, LOCK, "guest1-sda", "guest1-sdb"]

    target = QemuTarget(TargetOptions(storage=str(tmp_path)))
    vm = make_vm()
    target.check(vm)
    assert target.swept == [
        said(tmp_path / "guest1-sdb", pid),
        said(tmp_path / "guest1-sda", pid),
        *(swept(tmp_path / n, pid) for n in (script_temp, LOCK)),
    ]
    copy_and_finalize(target, vm)
    assert names(tmp_path) == ["guest1-sda", "guest1-sdb", "guest1.sh"]


def test_what_the_record_names_is_removed_only_if_it_is_that_runs(tmp_path: Path) -> None:
    """A name that is not there is fine; one another file took (not the inode recorded), and
    a symlink, are left alone, and then refused as existing by the check; paths that leave the
    directory make the record unreadable."""
    (tmp_path / "guest1-sdb").write_text("someone else's")
    (tmp_path / "guest1.xml").symlink_to(tmp_path / "guest1-sdb")
    other_inode = (tmp_path / "guest1-sdb").stat().st_ino + 1
    entries = [
        {"file": "guest1-sda", "inode": 1},  # not there: its rename never happened
        {"file": "guest1-sdb", "inode": other_inode},
        {"file": "guest1.xml", "inode": (tmp_path / "guest1.xml").lstat().st_ino},
    ]
    lock = tmp_path / LOCK
    dead = dead_owner()
    lines = [json.dumps(e) for e in [*entries, {"end": 3}]]
    lock.write_text(dead.stamp() + "\n".join(lines) + "\n")
    with pytest.raises(TargetError, match=r"guest1-sdb: already exists; refusing to overwrite"):
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    assert names(tmp_path) == ["guest1-sdb", "guest1.xml"]  # the stale lock went, nothing else
    assert (tmp_path / "guest1-sdb").read_text() == "someone else's"

    lock.write_text(dead.stamp() + json.dumps({"file": "../x", "inode": 1}) + '\n{"end": 1}\n')
    with pytest.raises(TargetError, match=r"not a lock vmshift can read"):
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    # Cut short (no "end" line): no rename had started; the record is ignored.
    lock.write_text(dead.stamp() + json.dumps({"file": "guest1-sdb", "inode": other_inode}))
    (tmp_path / "guest1-sdb").unlink()
    (tmp_path / "guest1.xml").unlink()
    target = LocalTarget(TargetOptions(storage=str(tmp_path)))
    target.check(make_vm())
    assert target.swept == [swept(lock, dead.pid)]
    target.abort()


@pytest.mark.parametrize("owner", ["alive", "unknown"])
def test_a_record_of_a_run_not_known_dead_is_refused(tmp_path: Path, owner: str) -> None:
    """A stamp of a live process (flock did not reach it: NFS), or of another host: its
    record's files are not touched."""
    (tmp_path / "guest1-sda").write_text("its disk")
    stamp = Owner.this_process()
    if owner == "unknown":
        stamp = dataclasses.replace(stamp, host="elsewhere.example.com")
    inode = (tmp_path / "guest1-sda").stat().st_ino
    entry = json.dumps({"file": "guest1-sda", "inode": inode})
    (tmp_path / LOCK).write_text(f'{stamp.stamp()}{entry}\n{{"end": 1}}\n')
    with pytest.raises(TargetError, match=r"another vmshift run .* converting to this name"):
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    assert names(tmp_path) == [LOCK, "guest1-sda"]


# ---- -o rhv: an export domain --------------------------------------------------------------


@pytest.fixture
def domain(tmp_path: Path) -> FakeDomain:
    top = tmp_path / "export"
    top.mkdir()
    return make_export_domain(top, owner=(36, 36))


def test_rhv_killed_between_its_images_is_undone_by_the_next_run(domain: FakeDomain) -> None:
    before = domain.everything()
    pid = killed_in_finalize("rhv", {"storage": str(domain.top)}, "rename2")
    (moved,) = domain.image_dirs()  # the first image is in place, the second and the VM not
    assert domain.vm_dirs() == []
    entries = record(domain.root / LOCK)
    assert entries[0] == {"dir": f"images/{moved.name}", "inode": moved.stat().st_ino}
    assert next(iter(entries[2])) == "dir" and entries[2]["dir"].startswith("master/vms/")

    target = RhvTarget(TargetOptions(storage=str(domain.top)))
    vm = make_vm()
    target.check(vm)
    staging = domain.root / ".guest1.vmshift-staging"
    assert target.swept == [
        said(moved, pid),
        swept(staging, pid),
        swept(domain.root / LOCK, pid),
    ]
    assert domain.everything() == sorted([*before, LOCK])
    copy_and_finalize(target, vm)
    assert len(domain.vm_dirs()) == 1 and len(domain.image_dirs()) == 2


# ---- -o libvirt, a directory pool ----------------------------------------------------------


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


def test_libvirt_killed_after_defining_is_undone_by_the_next_run(libvirtd: PrivateLibvirtd) -> None:
    """Killed at the very end (the guest defined, its lock not yet dropped): the run never
    finished, so the next one undefines the guest and removes its volumes, then converts."""
    with dir_pool(libvirtd, "pool-killed") as (lv_pool, pool_dir):
        opts = {"storage": lv_pool.name(), "conn": libvirtd.uri, "name": "conv3"}
        pid = killed_in_finalize("libvirt", opts, "release")
        conn = libvirtd.connect()
        try:
            conn.lookupByName("conv3")
            assert names(pool_dir) == [".conv3.vmshift-lock", "conv3-sda", "conv3-sdb"]
            target = LibvirtTarget(TargetOptions(**opts))
            vm = make_vm()
            target.check(vm)
            assert target.swept == [
                f"removed guest conv3 from {libvirtd.uri}: left by run {pid} that was killed "
                "while finishing",
                said(pool_dir / "conv3-sdb", pid),
                said(pool_dir / "conv3-sda", pid),
                swept(pool_dir / ".conv3.vmshift-lock", pid),
            ]
            copy_and_finalize(target, vm)
            dom = conn.lookupByName("conv3")
            assert names(pool_dir) == ["conv3-sda", "conv3-sdb"]
            lv_pool.refresh(0)
            assert sorted(lv_pool.listVolumes()) == ["conv3-sda", "conv3-sdb"]
            dom.undefine()
            for vol in ("conv3-sda", "conv3-sdb"):
                lv_pool.storageVolLookupByName(vol).delete(0)
        finally:
            conn.close()


def test_libvirt_another_guest_of_that_name_is_not_undefined(libvirtd: PrivateLibvirtd) -> None:
    """Only the guest with the record's UUID, shut off, is undefined: another guest of that
    name is left, and check() refuses the name."""
    with dir_pool(libvirtd, "pool-other") as (lv_pool, pool_dir):
        conn = libvirtd.connect()
        xml = ("<domain type='qemu'><name>conv4</name><memory>65536</memory><os>"
               "<type arch='x86_64'>hvm</type></os></domain>")  # fmt: skip
        dom = conn.defineXML(xml)
        try:
            uuid = "00000000-0000-4000-8000-000000000000"
            entry = {"domain": "conv4", "uuid": uuid, "uri": libvirtd.uri}
            lines = f"{json.dumps(entry)}\n" + '{"end": 1}\n'
            (pool_dir / ".conv4.vmshift-lock").write_text(dead_owner().stamp() + lines)
            opts = TargetOptions(storage=lv_pool.name(), conn=libvirtd.uri, name="conv4")
            with pytest.raises(TargetError, match="a guest with this name already exists"):
                LibvirtTarget(opts).check(make_vm())
            assert conn.lookupByName("conv4").UUIDString() == dom.UUIDString()
        finally:
            dom.undefine()
            conn.close()


# ---- the command, end to end ---------------------------------------------------------------


@pytest.mark.slow
def test_the_command_reruns_a_conversion_killed_while_finishing(
    linux_guests: dict[str, BuiltGuest], outdir: Path, workdir: Path
) -> None:
    """`vmshift convert` to the name of a run killed in finalize (its disk in place, its XML
    not): it says what it removed, converts, and leaves a complete guest; the source is
    untouched."""
    guest = linux_guests["rhel"]
    disks = [Path(d) for d in guest.disks]
    before = [sha256(d) for d in disks]
    options = {"storage": str(outdir), "name": "rerun"}
    pid = killed_in_finalize("local", options, f"rename{len(disks) + 1}", len(disks))
    finals = [f"rerun-sd{chr(ord('a') + i)}" for i in range(len(disks))]
    assert [n for n in names(outdir) if not n.startswith(".")] == finals

    run = vmshift(convert_argv(disks, outdir, workdir, "-on", "rerun"), timeout=900)
    assert run.returncode == 0, run.stderr
    for name in finals:
        assert said(outdir / name, pid) in run.stderr, run.stderr
    assert names(outdir) == [*finals, "rerun.xml"]
    if shutil.which("virt-xml-validate"):
        assert validates(outdir / "rerun.xml")
    for name, disk in zip(finals, disks, strict=True):
        out = image_info(outdir / name)
        assert out["format"] == "raw" and out["virtual-size"] == image_info(disk)["virtual-size"]
    assert list(workdir.iterdir()) == []
    assert [sha256(d) for d in disks] == before
