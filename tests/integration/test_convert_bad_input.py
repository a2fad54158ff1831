"""Bad input to `vmshift convert`, through the real command line: every case is refused before
the appliance starts (so in about a second), with one `vmshift: error:` line naming the file or
option at fault, no traceback, no verdict, nothing written to the output directory, and the
source files exactly as they were. Plus `--print-source`, which reads and creates nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift
from tests.ovf_samples import SampleDisk, build_ova, vmware_ovf
from tests.vmx_samples import two_nic_vmx

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

MIB = 1 << 20
# Refusals happen before the appliance launch, which alone takes 15 s or more under TCG.
QUICK = 15.0
UNPRIVILEGED = 65534


def _qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def _hashes(files: Sequence[Path]) -> dict[Path, str]:
    return {f: sha256(f) for f in files}


def refused(
    args: Sequence[str | os.PathLike[str]],
    *,
    sources: Sequence[Path],
    outdir: Path | None,
    names: Sequence[str],
    prefix: Sequence[str] = (),
) -> str:
    """Run `vmshift convert ARGS`, check it was refused cleanly and quickly; return the error.

    names: what the one error line must contain (the file or option at fault)."""
    before = _hashes(sources)
    started = time.monotonic()
    if prefix:
        exe = Path(sys.executable).parent / "vmshift"
        proc = subprocess.run(
            [*prefix, str(exe), "convert", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    else:
        proc = vmshift(["convert", *args], timeout=120)
    seconds = time.monotonic() - started
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1, proc.stderr
    error = errors[0]
    for name in names:
        assert name in error, error
    # No verdict, no description of a result: nothing was converted.
    assert not any(line.startswith("vmshift:") for line in proc.stdout.splitlines()), proc.stdout
    assert "configured" not in proc.stdout
    assert seconds < QUICK, f"took {seconds:.1f} s: did the appliance start?"
    if outdir is not None and outdir.exists():
        assert sorted(outdir.iterdir()) == [], "the output directory was written to"
    assert _hashes(sources) == before, "the source files changed"
    return error


# ---- sources, good and bad -----------------------------------------------------------------


@dataclass(frozen=True)
class Vm:
    vmx: Path
    files: tuple[Path, ...]  # every file of the VM, for the hash check


def make_vm(folder: Path, disk: str = "guest.vmdk", subformat: str = "monolithicSparse") -> Vm:
    """A VMX and its (empty) VMDK: a valid source the target checks can refuse quickly."""
    folder.mkdir(parents=True, exist_ok=True)
    _qemu_img("create", "-f", "vmdk", "-o", f"subformat={subformat}", folder / disk, "16M")
    vmx = folder / "guest.vmx"
    vmx.write_text(two_nic_vmx("bad-input", disk))
    return Vm(vmx, tuple(sorted(p for p in folder.iterdir() if p.is_file())))


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    return make_vm(tmp_path / "vm")


def _vmx_to_local(vm: Vm, outdir: Path, *extra: str | Path) -> list[str | Path]:
    return ["-i", "vmx", vm.vmx, "-o", "local", "-os", outdir, *extra]


# ---- VMX ------------------------------------------------------------------------------------


def test_vmx_naming_a_missing_vmdk(tmp_path: Path, outdir: Path) -> None:
    folder = tmp_path / "vm"
    folder.mkdir()
    vmx = folder / "guest.vmx"
    vmx.write_text(two_nic_vmx("bad-input", "gone.vmdk"))
    error = refused(
        ["-i", "vmx", vmx, "-o", "local", "-os", outdir],
        sources=[vmx],
        outdir=outdir,
        names=[str(vmx), '"gone.vmdk" not found'],
    )
    assert error.startswith(f"vmshift: error: {vmx}: disk scsi0:0"), error


def test_vmdk_descriptor_with_a_bad_extent_line(tmp_path: Path, outdir: Path) -> None:
    vm = make_vm(tmp_path / "vm", subformat="monolithicFlat")
    descriptor = vm.vmx.parent / "guest.vmdk"
    text = descriptor.read_text()
    assert 'RW 32768 FLAT "guest-flat.vmdk" 0' in text, text
    descriptor.write_text(text.replace("RW 32768 FLAT", "RW 32O68 FLAT"))
    refused(
        _vmx_to_local(vm, outdir),
        sources=vm.files,
        outdir=outdir,
        names=[str(descriptor), "bad extent line", "32O68"],
    )


# ---- OVA ------------------------------------------------------------------------------------


# A one-disk VMware export named "bad", without a firmware key (tests/ovf_samples.py).
OVF = vmware_ovf([SampleDisk("bad-disk1.vmdk", capacity=16 * MIB)], name="bad", config={})


@pytest.fixture(scope="module")
def stream_vmdk(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    work = tmp_path_factory.mktemp("vmdk")
    _qemu_img("create", "-f", "raw", work / "disk.raw", "16M")
    _qemu_img(
        "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
        work / "disk.raw", work / "disk.vmdk",
    )  # fmt: skip
    return (work / "disk.vmdk").read_bytes()


def _sha256_line(name: str, data: bytes) -> str:
    return f"SHA256({name})= {hashlib.sha256(data).hexdigest()}\n"


def test_ova_with_a_wrong_manifest_checksum(
    tmp_path: Path, outdir: Path, stream_vmdk: bytes
) -> None:
    ovf = OVF
    wrong = stream_vmdk + b"\0"  # the checksum of something else
    mf = (_sha256_line("bad.ovf", ovf) + _sha256_line("bad-disk1.vmdk", wrong)).encode()
    ova = build_ova(
        tmp_path / "bad.ova", [("bad.ovf", ovf), ("bad.mf", mf), ("bad-disk1.vmdk", stream_vmdk)]
    )
    refused(
        ["-i", "ova", ova, "-o", "local", "-os", outdir],
        sources=[ova],
        outdir=outdir,
        names=[str(ova), "bad-disk1.vmdk", "SHA256 checksum does not match"],
    )


def test_ova_whose_manifest_misses_a_file(tmp_path: Path, outdir: Path, stream_vmdk: bytes) -> None:
    ovf = OVF
    mf = _sha256_line("bad.ovf", ovf).encode()  # the disk's checksum is not there
    ova = build_ova(
        tmp_path / "bad.ova", [("bad.ovf", ovf), ("bad.mf", mf), ("bad-disk1.vmdk", stream_vmdk)]
    )
    refused(
        ["-i", "ova", ova, "-o", "local", "-os", outdir],
        sources=[ova],
        outdir=outdir,
        names=[str(ova), "bad-disk1.vmdk", "not listed in the manifest"],
    )


@pytest.mark.parametrize(
    ("member", "why"),
    [("/tmp/vmshift-evil.vmdk", "has an absolute path"), ("../evil.vmdk", "has a '..' component")],
    ids=["absolute", "dotdot"],
)
def test_ova_member_escaping_the_archive(
    tmp_path: Path, outdir: Path, stream_vmdk: bytes, member: str, why: str
) -> None:
    ovf = OVF
    mf = (_sha256_line("bad.ovf", ovf) + _sha256_line("bad-disk1.vmdk", stream_vmdk)).encode()
    ova = build_ova(
        tmp_path / "bad.ova",
        [("bad.ovf", ovf), ("bad.mf", mf), ("bad-disk1.vmdk", stream_vmdk), (member, b"pwned\n")],
    )
    refused(
        ["-i", "ova", ova, "-o", "local", "-os", outdir],
        sources=[ova],
        outdir=outdir,
        names=[str(ova), "refusing OVA", repr(member), why],
    )
    assert not Path("/tmp/vmshift-evil.vmdk").exists()
    assert not (tmp_path / "evil.vmdk").exists()


# ---- -i disk --------------------------------------------------------------------------------


def test_truncated_qcow2(tmp_path: Path, outdir: Path) -> None:
    raw = tmp_path / "data.raw"
    with raw.open("wb") as f:
        f.truncate(64 * MIB)
        for offset in range(0, 64 * MIB, 4 * MIB):
            f.seek(offset)
            f.write(os.urandom(65536))
    image = tmp_path / "guest.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", raw, image)
    raw.unlink()
    with image.open("r+b") as f:
        f.truncate(image.stat().st_size // 2)
    refused(
        ["-i", "disk", image, "-o", "local", "-os", outdir],
        sources=[image],
        outdir=outdir,
        names=[str(image), "corrupt qcow2 image"],
    )


# ---- options --------------------------------------------------------------------------------


def test_unknown_input(vm: Vm, outdir: Path) -> None:
    error = refused(
        ["-i", "floppy", vm.vmx, "-o", "local", "-os", outdir],
        sources=vm.files,
        outdir=outdir,
        names=["-i floppy", "unknown input"],
    )
    assert "vmx" in error  # the choices are listed


def test_unknown_output(vm: Vm, outdir: Path) -> None:
    error = refused(
        ["-i", "vmx", vm.vmx, "-o", "cloud9", "-os", outdir],
        sources=vm.files,
        outdir=outdir,
        names=["-o cloud9", "unknown output"],
    )
    assert "local" in error


def test_output_directory_missing(vm: Vm, tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"
    refused(
        _vmx_to_local(vm, missing),
        sources=vm.files,
        outdir=None,
        names=[f"-os {missing}", "no such directory"],
    )
    assert not missing.exists()


@dataclass(frozen=True)
class Unwritable:
    path: Path  # the output directory the vmshift run cannot write to
    sources: Path  # a directory for the source files, which the vmshift run can read
    prefix: tuple[str, ...] = ()  # how to run vmshift (as another user)


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Unwritable]:
    """As root: a read-only tmpfs (root ignores permissions, not a read-only mount), or where
    root cannot mount, a root-owned directory seen by uid 65534. Not root: a 0555 directory."""
    path = tmp_path / "ro"
    if os.geteuid() != 0:
        path.mkdir(mode=0o555)
        yield Unwritable(path, tmp_path)
        path.chmod(0o755)
        return
    path.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mount.returncode == 0:
        try:
            yield Unwritable(path, tmp_path)
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    # pytest's tmp_path is 0700: uid 65534 needs a directory it can enter.
    shared = Path(tempfile.mkdtemp(prefix="vmshift-ro-", dir="/tmp"))
    shared.chmod(0o755)
    (shared / "out").mkdir()
    setpriv = ("setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups")
    try:
        yield Unwritable(shared / "out", shared, setpriv)
    finally:
        shutil.rmtree(shared)


def test_output_directory_not_writable(unwritable: Unwritable) -> None:
    vm = make_vm(unwritable.sources / "vm")
    refused(
        _vmx_to_local(vm, unwritable.path),
        sources=vm.files,
        outdir=unwritable.path,
        names=[f"-os {unwritable.path}", "not writable"],
        prefix=unwritable.prefix,
    )


def test_invalid_output_format(vm: Vm, outdir: Path) -> None:
    refused(
        _vmx_to_local(vm, outdir, "-of", "vhd"),
        sources=vm.files,
        outdir=outdir,
        names=["-of", "invalid choice", "vhd"],
    )


def test_malformed_mac_mapping(vm: Vm, outdir: Path) -> None:
    value = "00:50:56:ab:cd:zz:network:default"
    refused(
        _vmx_to_local(vm, outdir, "--mac", value),
        sources=vm.files,
        outdir=outdir,
        names=[f"--mac {value}", "expected MAC:network:NAME"],
    )


def test_qemu_boot_without_qemu_output(vm: Vm, outdir: Path) -> None:
    refused(
        _vmx_to_local(vm, outdir, "--qemu-boot"),
        sources=vm.files,
        outdir=outdir,
        names=["--qemu-boot", "-o qemu"],
    )


# ---- --print-source -------------------------------------------------------------------------


def test_print_source_reads_and_creates_nothing(vm: Vm, outdir: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    scratch = tmp_path / "tmp"
    cwd.mkdir()
    scratch.mkdir()
    before = _hashes(vm.files)
    exe = Path(sys.executable).parent / "vmshift"
    started = time.monotonic()
    proc = subprocess.run(
        [str(exe), "convert", "-i", "vmx", str(vm.vmx), "-o", "local", "-os", str(outdir),
         "--print-source"],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < QUICK
    assert "Traceback" not in proc.stderr
    assert "vmshift: error" not in proc.stderr
    out = proc.stdout
    for expected in (
        "bad-input",  # the name
        "vmware",  # the origin
        "1.0 GiB",  # memory
        "2 (1 sockets x 2 cores x 1)",  # vCPUs and topology
        "sda",  # the disk
        "pvscsi",
        "16.0 MiB",
        "vmxnet3",
        "00:50:56:ab:cd:ef",  # the NICs, with their MACs
        "e1000",
        "00:0c:29:12:34:56",
        "VM Network",
        "Backup Network",
    ):
        assert expected in out, f"{expected!r} not in:\n{out}"
    # Read only: nothing converted, nothing left behind, the source unchanged.
    assert "configured" not in out
    assert sorted(outdir.iterdir()) == []
    assert sorted(cwd.iterdir()) == []
    assert sorted(scratch.iterdir()) == []
    assert _hashes(vm.files) == before


def test_print_source_shows_guest_text_verbatim(tmp_path: Path) -> None:
    # Names come from the guest's files: rich markup or emoji codes in them are just text.
    vm = make_vm(tmp_path / "vm")
    text = vm.vmx.read_text().replace('"bad-input"', '"web [/x] [bold]y :ab:"')
    vm.vmx.write_text(text)
    proc = vmshift(["convert", "-i", "vmx", vm.vmx, "--print-source"], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "web [/x] [bold]y :ab:" in proc.stdout
    assert "00:50:56:ab:cd:ef" in proc.stdout
