"""The acceptance matrix: a VMX guest, an OVA and a libvirt XML guest, all made from one phony
guest, each converted by the real CLI to every target (local, libvirt, qemu, null).

Each case checks the verdict, the output disks (format, allocation), the guest description
the target made (a libvirt XML that validates, a guest defined in a private libvirtd, a boot
script that parses, or nothing at all), that the run left no temporary file anywhere, and that
the source files are byte for byte what they were.

A conversion costs ~45 s under TCG, so the module starts the conversions of every selected
case in the background as soon as its first test runs, JOBS at a time (each is one
single-threaded qemu), and each test waits for its own result. Every run has its own TMPDIR,
working directory, --workdir and output directory, so the runs cannot see each other's files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.conftest import sha256
from tests.guests.manifest import BuiltGuest
from tests.integration.libvirt_fixture import PrivateLibvirtd, private_libvirtd
from tests.ovf_samples import SampleDisk, build_ova, manifest, vmware_ovf
from tests.vmx_samples import two_nic_vmx

pytestmark = pytest.mark.slow

MIB = 1 << 20
JOBS = max(1, int(os.environ.get("VMSHIFT_TEST_JOBS", min(2, os.cpu_count() or 1))))
NETWORK_OPTIONS = ("--network", "VM Network:default", "--bridge", "Backup Network:br0")

# ---- the sources: one phony guest, three ways ----------------------------------------------

VMX = two_nic_vmx("mx-vmx", "mx-vmx.vmdk")

DOMAIN = """\
<domain type='kvm'>
  <name>mx-xml</name>
  <memory unit='MiB'>1024</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <cpu><topology sockets='1' dies='1' cores='2' threads='1'/></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='mx-xml.qcow2'/>
      <target dev='sda' bus='sata'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default'/>
      <model type='e1000'/>
    </interface>
  </devices>
</domain>
"""


@dataclass(frozen=True)
class Guest:
    """A source made for the matrix, and what every target must show of it."""

    kind: str  # -i vmx | ova | libvirtxml
    file: Path  # what -i is given
    name: str
    files: tuple[Path, ...]  # everything the source is made of
    hashes: tuple[str, ...]  # their sha256, taken when they were made
    # (MAC, type, network or bridge) of each NIC on the target, under NETWORK_OPTIONS.
    nics: tuple[tuple[str, str, str], ...]
    virtual_size: int


def _qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def _guest(kind: str, file: Path, files: list[Path], nics: Any, size: int) -> Guest:
    """The guest is named as its file (mx-vmx.vmx holds mx-vmx): a check on the source too."""
    return Guest(kind, file, file.stem, tuple(files), tuple(sha256(f) for f in files), nics, size)


@pytest.fixture(scope="session")
def matrix_guests(
    linux_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Guest]:
    """One phony guest (the tiny RHEL) as a VMX, an OVA and a libvirt domain XML."""
    disk = linux_guests["rhel"].disks[0]
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(disk)], check=True, capture_output=True
    ).stdout
    size = int(json.loads(info)["virtual-size"])
    root = tmp_path_factory.mktemp("matrix-sources")

    vm = root / "vmx"
    vm.mkdir()
    vmdk = vm / "mx-vmx.vmdk"
    _qemu_img("convert", "-O", "vmdk", "-o", "subformat=monolithicSparse", disk, vmdk)
    vmx = vm / "mx-vmx.vmx"
    vmx.write_text(VMX)
    vmx_nics = (("00:50:56:ab:cd:ef", "network", "default"), ("00:0c:29:12:34:56", "bridge", "br0"))

    stream = root / "mx-ova-disk1.vmdk"
    _qemu_img("convert", "-O", "vmdk", "-o", "subformat=streamOptimized", disk, stream)
    data = stream.read_bytes()
    stream.unlink()
    ovf = vmware_ovf(
        [SampleDisk("mx-ova-disk1.vmdk", f'ovf:size="{len(data)}"', capacity=size)],
        name="mx-ova",
        cores_per_socket=2,
        os_id=80,
        os_type="rhel9_64Guest",
        config={},
    )
    files = {"mx-ova.ovf": ovf, "mx-ova-disk1.vmdk": data}
    ova = build_ova(
        root / "mx-ova.ova",
        {"mx-ova.ovf": ovf, "mx-ova.mf": manifest(files), "mx-ova-disk1.vmdk": data},
    )

    xml_dir = root / "libvirtxml"
    xml_dir.mkdir()
    qcow2 = xml_dir / "mx-xml.qcow2"
    _qemu_img("convert", "-O", "qcow2", disk, qcow2)
    xml = xml_dir / "mx-xml.xml"
    xml.write_text(DOMAIN)

    return {
        "vmx": _guest("vmx", vmx, [vmx, vmdk], vmx_nics, size),
        "ova": _guest("ova", ova, [ova], (("00:50:56:12:34:56", "network", "default"),), size),
        "libvirtxml": _guest(
            "libvirtxml", xml, [xml, qcow2], (("52:54:00:12:34:56", "network", "default"),), size
        ),
    }


# ---- the cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    source: str  # vmx | ova | libvirtxml
    target: str  # local | libvirt | qemu | null
    fmt: str = "raw"  # -of
    preallocated: bool = False  # -oa preallocated
    rename: str | None = None  # -on

    def __str__(self) -> str:
        parts = [self.source, self.target, self.fmt]
        if self.preallocated:
            parts.append("preallocated")
        if self.rename:
            parts.append(f"on-{self.rename}")
        return "-".join(parts)


# Renamed with -on: test_output_name checks what that changes, on this same run.
RENAMED = Case("ova", "libvirt", "qcow2", rename="web01-renamed")
CASES = [
    Case("vmx", "local", "qcow2"),
    Case("vmx", "libvirt", "raw", preallocated=True),
    Case("vmx", "qemu", "raw"),
    Case("vmx", "null", "qcow2"),
    Case("ova", "local", "raw", preallocated=True),
    RENAMED,
    Case("ova", "qemu", "qcow2"),
    Case("ova", "null", "raw"),
    Case("libvirtxml", "local", "raw"),
    Case("libvirtxml", "libvirt", "qcow2"),
    Case("libvirtxml", "qemu", "qcow2", preallocated=True),
    Case("libvirtxml", "null", "raw"),
]


@dataclass(frozen=True)
class Run:
    """One finished `vmshift convert`, and where it was told to work."""

    case: Case
    guest: Guest
    name: str  # the converted guest's name
    proc: subprocess.CompletedProcess[str]
    seconds: float
    out: Path | None  # -os DIR, or the libvirt pool's directory; None for -o null
    scratch: tuple[Path, ...]  # TMPDIR, --workdir and the current directory: empty afterwards
    libvirtd: PrivateLibvirtd | None
    pool: str | None


@dataclass(frozen=True)
class Plan:
    case: Case
    guest: Guest
    base: Path
    libvirtd: PrivateLibvirtd | None
    pool: str | None
    out: Path | None


def _plan(case: Case, guest: Guest, base: Path, libvirtd: PrivateLibvirtd | None) -> Plan:
    """Make the run's directories (and libvirt pool) in the main thread."""
    for sub in ("tmp", "work", "cwd"):
        (base / sub).mkdir()
    if case.target in ("local", "qemu"):
        (base / "out").mkdir()
        return Plan(case, guest, base, None, None, base / "out")
    if case.target == "libvirt":
        assert libvirtd is not None
        pool = f"pool-{case}"
        # Under the daemon's tree: pytest's tmp_path is 0700, closed to the daemon's uid.
        path = libvirtd.root / pool
        path.mkdir()
        libvirtd.give(path)
        conn = libvirtd.connect()
        try:
            xml = f"<pool type='dir'><name>{pool}</name><target><path>{path}</path></target></pool>"
            conn.storagePoolDefineXML(xml, 0).create(0)
        finally:
            conn.close()
        return Plan(case, guest, base, libvirtd, pool, path)
    return Plan(case, guest, base, None, None, None)


def _convert(plan: Plan) -> Run:
    case, guest, base = plan.case, plan.guest, plan.base
    args: list[str | Path] = ["convert", "-i", case.source, guest.file, "-o", case.target]
    args += ["-of", case.fmt, *NETWORK_OPTIONS, "--workdir", base / "work"]
    if case.preallocated:
        args += ["-oa", "preallocated"]
    if case.rename:
        args += ["-on", case.rename]
    if plan.libvirtd is not None and plan.pool is not None:
        args += ["-oc", plan.libvirtd.uri, "-os", plan.pool]
    elif plan.out is not None:
        args += ["-os", plan.out]
    env = {
        **os.environ,
        "TMPDIR": str(base / "tmp"),
        # libguestfs keeps its appliance under $TMPDIR unless told otherwise: keep the shared one.
        "LIBGUESTFS_CACHEDIR": os.environ.get("LIBGUESTFS_CACHEDIR")
        or os.environ.get("TMPDIR")
        or "/var/tmp",
    }
    exe = Path(sys.executable).parent / "vmshift"
    started = time.monotonic()
    proc = subprocess.run(
        [str(exe), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=base / "cwd",
        env=env,
    )
    return Run(
        case=case,
        guest=guest,
        name=case.rename or guest.name,
        proc=proc,
        seconds=time.monotonic() - started,
        out=plan.out,
        scratch=(base / "tmp", base / "work", base / "cwd"),
        libvirtd=plan.libvirtd,
        pool=plan.pool,
    )


def _selected(session: pytest.Session) -> list[Case]:
    """The cases of this module that this session will run, in the order it runs them."""
    here = Path(__file__).resolve()
    cases: list[Case] = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if item.path.resolve() == here and callspec is not None:
            case = callspec.params.get("case")
            if isinstance(case, Case) and case not in cases:
                cases.append(case)
    return cases


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


@pytest.fixture(scope="module")
def conversions(
    request: pytest.FixtureRequest,
    matrix_guests: dict[str, Guest],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[Case, Future[Run]]]:
    """The selected cases' conversions, started in the background (JOBS at a time)."""
    cases = _selected(request.session)
    daemon: PrivateLibvirtd | None = None
    if any(c.target == "libvirt" for c in cases):
        try:
            daemon = request.getfixturevalue("libvirtd")
        except pytest.skip.Exception:  # no libvirtd here: the other targets still run
            cases = [c for c in cases if c.target != "libvirt"]
    plans = [
        _plan(c, matrix_guests[c.source], tmp_path_factory.mktemp(str(c)), daemon) for c in cases
    ]
    executor = ThreadPoolExecutor(max_workers=JOBS, thread_name_prefix="convert")
    try:
        yield {p.case: executor.submit(_convert, p) for p in plans}
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# ---- checks --------------------------------------------------------------------------------


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def _image_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True
    ).stdout
    info: dict[str, Any] = json.loads(out)
    return info


@dataclass(frozen=True)
class Described:
    """What a libvirt domain XML says about the things a conversion must carry over."""

    name: str
    memory_kib: int
    vcpus: int
    topology: tuple[str, str, str] | None  # sockets, cores, threads
    efi: bool
    disks: tuple[tuple[str, str, str], ...]  # (source file, driver type, target bus)
    nics: tuple[tuple[str, str, str, str], ...]  # (MAC, type, source, model)


def describe(xml: str) -> Described:
    root = etree.fromstring(xml.encode())
    memory = root.find("memory")
    assert memory is not None and memory.get("unit", "KiB") == "KiB"
    topo = root.find("cpu/topology")
    disks = []
    for disk in root.iterfind("devices/disk[@device='disk']"):
        disks.append((
            disk.find("source").get("file", ""),  # type: ignore[union-attr]
            disk.find("driver").get("type", ""),  # type: ignore[union-attr]
            disk.find("target").get("bus", ""),  # type: ignore[union-attr]
        ))  # fmt: skip
    nics = []
    for iface in root.iterfind("devices/interface"):
        kind = iface.get("type", "")
        nics.append((
            iface.find("mac").get("address", ""),  # type: ignore[union-attr]
            kind,
            iface.find("source").get(kind, ""),  # type: ignore[union-attr]
            iface.find("model").get("type", ""),  # type: ignore[union-attr]
        ))  # fmt: skip
    return Described(
        name=root.findtext("name") or "",
        memory_kib=int(memory.text or "0"),
        vcpus=int(root.findtext("vcpu") or "0"),
        topology=None
        if topo is None
        else (topo.get("sockets", ""), topo.get("cores", ""), topo.get("threads", "")),
        efi=root.find("os").get("firmware") == "efi",  # type: ignore[union-attr]
        disks=tuple(disks),
        nics=tuple(nics),
    )


def check_description(run: Run, xml: str, disk: Path) -> None:
    got = describe(xml)
    assert got.name == run.name
    assert got.memory_kib == 1024 * 1024
    assert got.vcpus == 2
    assert got.topology == ("1", "2", "1")
    assert not got.efi, "a BIOS guest was given UEFI"
    assert got.disks == ((str(disk), run.case.fmt, "virtio"),)
    # The source's MACs, on the networks NETWORK_OPTIONS map them to, as virtio NICs.
    assert got.nics == tuple((mac, kind, net, "virtio") for mac, kind, net in run.guest.nics)


def check_disk(run: Run) -> Path:
    assert run.out is not None
    disk = run.out / f"{run.name}-sda"
    info = _image_info(disk)
    assert info["format"] == run.case.fmt
    assert info["virtual-size"] == run.guest.virtual_size
    if run.case.preallocated:
        assert _allocated(disk) >= run.guest.virtual_size
    else:  # sparse: a few MiB of guest data, not the 512 MiB disk
        assert _allocated(disk) < run.guest.virtual_size // 4
    return disk.absolute()


def check_local(run: Run) -> None:
    assert run.out is not None
    disk = check_disk(run)
    xml = run.out / f"{run.name}.xml"
    assert sorted(p.name for p in run.out.iterdir()) == [f"{run.name}-sda", f"{run.name}.xml"]
    assert run.proc.stdout.splitlines()[-2].startswith(f"{xml} ")
    subprocess.run(["virt-xml-validate", str(xml), "domain"], check=True, capture_output=True)
    check_description(run, xml.read_text(), disk)


def check_libvirt(run: Run) -> None:
    assert run.out is not None and run.libvirtd is not None
    disk = check_disk(run)
    assert sorted(p.name for p in run.out.iterdir()) == [f"{run.name}-sda"]
    conn = run.libvirtd.connect()
    try:
        dom = conn.lookupByName(run.name)
        assert not dom.isActive(), "the guest was started"
        check_description(run, dom.XMLDesc(0), disk)
        pool = conn.storagePoolLookupByName(run.pool)
        pool.refresh(0)
        assert pool.listVolumes() == [f"{run.name}-sda"]
        volume = pool.storageVolLookupByName(f"{run.name}-sda")
        assert volume.path() == str(disk)
    finally:
        conn.close()


def check_qemu(run: Run) -> None:
    assert run.out is not None
    disk = check_disk(run)
    script = run.out / f"{run.name}.sh"
    assert sorted(p.name for p in run.out.iterdir()) == [f"{run.name}-sda", f"{run.name}.sh"]
    assert script.stat().st_mode & 0o111 == 0o111, "the script is not executable"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True, capture_output=True)
    text = script.read_text()
    assert f"file={disk},format={run.case.fmt}" in text
    assert "-m 1024" in text
    assert "-smp 2,sockets=1,cores=2,threads=1" in text
    for mac, _kind, _net in run.guest.nics:
        assert f"mac={mac}" in text


def check_null(run: Run) -> None:
    assert run.out is None
    assert run.proc.stdout.splitlines()[-2] == "discarded (-o null)"
    # Where -o null writes ($TMPDIR) is among the run's scratch directories, checked empty.


CHECKS = {"local": check_local, "libvirt": check_libvirt, "qemu": check_qemu, "null": check_null}


def check_run(run: Run) -> None:
    proc = run.proc
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "vmshift: error" not in proc.stderr
    # The phony RHEL's kernels have virtio modules in the initramfs: a converter may list
    # the drivers it made available, "(virtio_blk, ...)".
    verdict = rf"vmshift: {re.escape(run.name)} configured with virtio drivers( \([^)]*\))?\."
    assert re.fullmatch(verdict, proc.stdout.splitlines()[-1]), proc.stdout
    CHECKS[run.case.target](run)
    for scratch in run.scratch:
        assert sorted(scratch.iterdir()) == [], f"{scratch} was left with files"
    assert tuple(sha256(f) for f in run.guest.files) == run.guest.hashes, "the source changed"


# ---- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=str)
def test_convert(case: Case, conversions: dict[Case, Future[Run]]) -> None:
    if case not in conversions:
        pytest.skip("libvirtd is not available")
    run = conversions[case].result()
    print(f"{case}: {run.seconds:.0f} s: {run.proc.stdout.strip().splitlines()[-1:]}")
    check_run(run)


@pytest.mark.parametrize("case", [RENAMED], ids=str)
def test_output_name(case: Case, conversions: dict[Case, Future[Run]]) -> None:
    """-on NAME renames the guest: its volume, its domain, and the verdict; nothing keeps the
    source's name. (The run is one of the matrix's: test_convert checks the rest of it.)"""
    if case not in conversions:
        pytest.skip("libvirtd is not available")
    run = conversions[case].result()
    assert run.proc.returncode == 0, run.proc.stderr
    assert run.name == "web01-renamed" != run.guest.name
    assert run.proc.stdout.splitlines()[-1].startswith("vmshift: web01-renamed configured ")
    assert run.out is not None and run.libvirtd is not None
    assert sorted(p.name for p in run.out.iterdir()) == ["web01-renamed-sda"]
    conn = run.libvirtd.connect()
    try:
        names = [dom.name() for dom in conn.listAllDomains(0)]
        assert "web01-renamed" in names
        assert run.guest.name not in names
        xml = conn.lookupByName("web01-renamed").XMLDesc(0)
        assert describe(xml).name == "web01-renamed"
    finally:
        conn.close()
