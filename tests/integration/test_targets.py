"""Targets (-o local, qemu, null, libvirt) and the libvirt sources, against real tools.

The libvirt tests run a private, unprivileged libvirtd (libvirt_fixture.py): no system daemon,
no systemd, nothing left behind. A "copy" here is a file of the right format and size written
where setup() said; the copier itself is tested elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.integration.libvirt_fixture import PrivateLibvirtd, dir_pool, private_libvirtd
from tests.os_samples import LINUX
from vmshift.errors import DiskImageError, SourceError, TargetError
from vmshift.formats.libvirt_domain import parse_domain
from vmshift.formats.libvirt_xml import domain_xml
from vmshift.model.caps import GuestCaps
from vmshift.model.vm import (
    Controller,
    CpuTopology,
    DiskEndpoint,
    Firmware,
    Nic,
    Removable,
    SourceDisk,
    SourceVM,
)
from vmshift.sources.base import SourceOptions
from vmshift.sources.libvirt import LibvirtSource
from vmshift.sources.libvirtxml import LibvirtXmlSource
from vmshift.targets.base import NetworkMap, OutputDisk, TargetOptions
from vmshift.targets.libvirt import LibvirtTarget
from vmshift.targets.local import LocalTarget
from vmshift.targets.null import NullTarget
from vmshift.targets.qemu import QemuTarget

NETWORKS = NetworkMap(networks={"VM Network": "default"}, bridges={"DMZ": "br-dmz"})
MIB = 1 << 20


def make_vm(name: str = "guest1", disks: int = 2) -> SourceVM:
    eps = [DiskEndpoint(f"/src/{name}-{i}.vmdk", "vmdk", 16 * MIB) for i in range(disks)]
    return SourceVM(
        name=name,
        memory=128 * MIB,
        vcpus=2,
        topology=CpuTopology(1, 2),
        firmware=Firmware.BIOS,
        disks=tuple(
            SourceDisk(endpoint=ep, controller=Controller.SCSI, unit=i) for i, ep in enumerate(eps)
        ),
        removables=(Removable("cdrom", Controller.IDE),),
        nics=(
            Nic("00:50:56:AA:00:01", "vmxnet3", "VM Network"),
            Nic("00:50:56:aa:00:02", "e1000", "DMZ"),
        ),
        origin="vmware",
    )


CAPS = GuestCaps(
    "virtio-blk",
    "virtio",
    "virtio",
    "q35",
    Firmware.BIOS,
    "x86_64",
    virtio_rng=True,
    virtio_balloon=True,
    virtio_serial=True,
)
UEFI_CAPS = GuestCaps("sata", "e1000", "vga", "q35", Firmware.UEFI, "x86_64")


def fake_copy(out: OutputDisk) -> None:
    """What a copier leaves behind: a file of the asked format and size, with some data."""
    assert not out.path.exists(), "setup must leave creating the disk to the copier"
    if out.format == "qcow2":
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(out.path), str(out.virtual_size)],
            check=True,
        )
        return
    with out.path.open("wb") as f:
        f.truncate(out.virtual_size)
        f.write(b"vmshift test data")


def kvm_works_here() -> bool:
    """Whether this host can run KVM guests: /dev/kvm opens and the CPU can virtualise."""
    cpuinfo = Path("/proc/cpuinfo").read_text().split()
    return os.access("/dev/kvm", os.W_OK) and ("vmx" in cpuinfo or "svm" in cpuinfo)


def validates(path: Path) -> bool:
    proc = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, check=False
    )
    return proc.returncode == 0


# ---- -o local ------------------------------------------------------------------------------


def test_local_writes_disks_and_xml(tmp_path: Path) -> None:
    target = LocalTarget(TargetOptions(storage=str(tmp_path), format="qcow2", networks=NETWORKS))
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [16 * MIB, 32 * MIB])
    assert [o.path.name for o in outs] == [".guest1-sda.tmp", ".guest1-sdb.tmp"]
    assert [o.final_path for o in outs] == [tmp_path / "guest1-sda", tmp_path / "guest1-sdb"]
    for out in outs:
        fake_copy(out)
    result = target.finalize(vm, LINUX, CAPS, outs)

    xml_path = tmp_path / "guest1.xml"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guest1-sda", "guest1-sdb", "guest1.xml"]
    assert set(result.files) == {tmp_path / "guest1-sda", tmp_path / "guest1-sdb", xml_path}
    if shutil.which("virt-xml-validate"):
        assert validates(xml_path)
    dom = parse_domain(xml_path.read_text(), str(xml_path))
    assert dom.name == "guest1"
    assert [(d.path, d.format) for d in dom.disks if d.device == "disk"] == [
        (str(tmp_path / "guest1-sda"), "qcow2"),
        (str(tmp_path / "guest1-sdb"), "qcow2"),
    ]
    assert [(n.mac, n.network, n.network_type) for n in dom.nics] == [
        ("00:50:56:aa:00:01", "default", "network"),
        ("00:50:56:aa:00:02", "br-dmz", "bridge"),
    ]


@pytest.mark.parametrize("when", ["setup", "finalize"])
def test_local_abort_leaves_nothing(tmp_path: Path, when: str) -> None:
    target = LocalTarget(TargetOptions(storage=str(tmp_path)))
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [MIB, MIB])
    fake_copy(outs[0])  # a copy that died half way
    if when == "finalize":
        fake_copy(outs[1])
        target.finalize(vm, LINUX, CAPS, outs)
    target.abort()
    assert list(tmp_path.iterdir()) == []


def test_local_check_errors(tmp_path: Path) -> None:
    vm = make_vm()
    with pytest.raises(TargetError, match="needs -os"):
        LocalTarget(TargetOptions()).check(vm)
    with pytest.raises(TargetError, match="no such directory"):
        LocalTarget(TargetOptions(storage=str(tmp_path / "missing"))).check(vm)
    (tmp_path / "file").write_text("")
    with pytest.raises(TargetError, match="not a directory"):
        LocalTarget(TargetOptions(storage=str(tmp_path / "file"))).check(vm)
    with pytest.raises(TargetError, match="-of vmdk"):
        LocalTarget(TargetOptions(storage=str(tmp_path), format="vmdk")).check(vm)
    for bad in ("../escape", ".hidden", "a/b"):
        with pytest.raises(TargetError, match="file name"):
            LocalTarget(TargetOptions(storage=str(tmp_path), name=bad)).check(vm)


@pytest.mark.parametrize("existing", ["guest1-sdb", "guest1.xml"])
def test_local_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("precious")
    with pytest.raises(TargetError, match="already exists") as info:
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    assert str(tmp_path / existing) in str(info.value)
    assert (tmp_path / existing).read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == [existing]  # no lock left behind


def test_local_refuses_a_leftover_temporary(tmp_path: Path) -> None:
    """A temporary disk with no lock behind it (an older vmshift's) is not ours to remove."""
    (tmp_path / ".guest1-sda.tmp").write_text("")
    with pytest.raises(TargetError, match="a temporary output with no vmshift run behind it"):
        LocalTarget(TargetOptions(storage=str(tmp_path))).check(make_vm())
    assert [p.name for p in tmp_path.iterdir()] == [".guest1-sda.tmp"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_local_read_only_directory_as_root(tmp_path: Path) -> None:
    # Root passes os.access for permissions, but not for a read-only filesystem.
    ro = tmp_path / "ro"
    ro.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
        capture_output=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        with pytest.raises(TargetError, match="ro: directory is not writable"):
            LocalTarget(TargetOptions(storage=str(ro))).check(make_vm())
    finally:
        subprocess.run(["umount", str(ro)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_local_unwritable_directory_for_another_user() -> None:
    # A directory only root may write, checked by uid 65534: the os.access path of check().
    with tempfile_dir() as d:
        code = (
            "import sys\n"
            "from vmshift.targets.local import LocalTarget\n"
            "from vmshift.targets.base import TargetOptions\n"
            "from tests.integration.test_targets import make_vm\n"
            "try:\n"
            f"    LocalTarget(TargetOptions(storage={str(d)!r})).check(make_vm())\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, e); sys.exit(0)\n"
            "sys.exit(1)\n"
        )
        proc = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                sys.executable,
                "-c",
                code,
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parents[2],
            env={**os.environ, "HOME": "/", "PYTHONDONTWRITEBYTECODE": "1"},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.strip() == f"TargetError -os {d}: directory is not writable"


@contextlib.contextmanager
def tempfile_dir() -> Iterator[Path]:
    """A root-owned 0755 directory another uid can see but not write (pytest's tmp is 0700)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="vmshift-ro-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


# ---- -o qemu -------------------------------------------------------------------------------


def fake_qemu(tmp_path: Path) -> dict[str, str]:
    """A PATH whose qemu-system-x86_64 prints its arguments one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "qemu-system-x86_64"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_qemu_script(tmp_path: Path) -> None:
    out = tmp_path / 'out dir, it\'s "odd" $(x)'  # the shell and qemu must both see it intact
    out.mkdir()
    target = QemuTarget(TargetOptions(storage=str(out), name="g 1"))
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [MIB, 2 * MIB])
    for o in outs:
        fake_copy(o)
    result = target.finalize(vm, LINUX, CAPS, outs)
    script = out / "g 1.sh"
    assert script in result.files
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert "    -netdev user,id=net0 \\\n" in text  # one option per line, readable
    env = fake_qemu(tmp_path)
    args = subprocess.run(
        [str(script)], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    disk_arg = str(out / "g 1-sda").replace(",", ",,")
    assert f"file={disk_arg},format=raw,if=none,id=disk0" in args
    assert f"file={disk_arg[:-1]}b,format=raw,if=none,id=disk1" in args
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in args
    assert "virtio-net-pci,netdev=net0,mac=00:50:56:aa:00:01" in args
    # The script picks its accelerator where it runs: KVM only where the CPU can use it.
    kvm = kvm_works_here()
    assert args[args.index("-machine") + 1] == "q35,accel=" + ("kvm" if kvm else "tcg")
    assert args[args.index("-cpu") + 1] == ("host" if kvm else "max")
    assert args[args.index("-serial") + 1] == "stdio"
    assert args[args.index("-name") + 1] == "guest=g 1"

    daemon = subprocess.run(
        [str(script), "--daemonize", "-S"], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert daemon[daemon.index("-pidfile") + 1] == str(out / "g 1.pid")
    assert daemon[-1] == "-S"
    assert daemon[daemon.index("-serial") + 1] == f"file:{out}/g 1.console.log"


def test_qemu_script_uefi_and_abort(tmp_path: Path) -> None:
    from vmshift.targets.qemu_host import find_uefi_firmware

    if find_uefi_firmware("q35") is None:
        pytest.skip("no OVMF installed")
    target = QemuTarget(TargetOptions(storage=str(tmp_path)))
    vm = make_vm(disks=1)
    target.check(vm)
    outs = target.setup(vm, [MIB])
    fake_copy(outs[0])
    target.finalize(vm, LINUX, UEFI_CAPS, outs)
    assert (tmp_path / "guest1-VARS.fd").is_file()
    text = (tmp_path / "guest1.sh").read_text()
    assert "if=pflash" in text and "ide-hd,drive=disk0,bus=sata0.0" in text
    target.abort()
    assert list(tmp_path.iterdir()) == []


def test_qemu_boot_starts_the_guest(tmp_path: Path) -> None:
    target = QemuTarget(TargetOptions(storage=str(tmp_path), qemu_boot=True, name="guest,1"))
    vm = replace(make_vm(disks=1), memory=64 * MIB, nics=())
    target.check(vm)
    outs = target.setup(vm, [MIB])
    fake_copy(outs[0])
    result = target.finalize(vm, LINUX, CAPS, outs)
    pidfile = tmp_path / "guest,1.pid"
    assert "booted in the background" in result.description, result.description
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)  # running
        assert (tmp_path / "guest,1.console.log").exists()
    finally:
        os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)


# ---- -o null -------------------------------------------------------------------------------


@pytest.mark.parametrize("finish", ["finalize", "abort"])
def test_null_discards(finish: str, tmp_path: Path) -> None:
    target = NullTarget(TargetOptions(discard_dir=tmp_path))
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [MIB, MIB])
    folder = outs[0].path.parent
    assert folder.is_dir() and folder.name.startswith("vmshift-null-")
    assert folder.parent == tmp_path
    for o in outs:
        fake_copy(o)
    if finish == "finalize":
        assert "discarded" in target.finalize(vm, LINUX, CAPS, outs).description
    else:
        target.abort()
    assert not folder.exists()


# ---- -i libvirtxml -------------------------------------------------------------------------

SOURCE_XML = """<domain type='kvm'>
  <name>oldguest</name>
  <memory unit='MiB'>512</memory>
  <vcpu>2</vcpu>
  <os><type arch='x86_64'>hvm</type><loader type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt0}'/><source file='{disk0}'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='{disk1}'/><target dev='sda' bus='sata'/>
    </disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
    <interface type='bridge'>
      <mac address='52:54:00:00:00:01'/><source bridge='br0'/><model type='virtio'/>
    </interface>
  </devices>
</domain>
"""


def source_disks(folder: Path) -> tuple[Path, Path]:
    qcow = folder / "os.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "32M"], check=True)
    raw = folder / "data.img"
    with raw.open("wb") as f:
        f.truncate(8 * MIB)
    return qcow, raw


def test_libvirtxml_source(tmp_path: Path) -> None:
    qcow, _raw = source_disks(tmp_path)
    xml = tmp_path / "guest.xml"
    # The second disk is relative: relative to the XML's folder, not the working directory.
    xml.write_text(SOURCE_XML.format(fmt0="qcow2", disk0=qcow, disk1="data.img"))
    vm = LibvirtXmlSource(SourceOptions(args=(str(xml),))).open(tmp_path / "work")
    assert (vm.name, vm.memory, vm.vcpus, vm.firmware) == ("oldguest", 512 * MIB, 2, Firmware.UEFI)
    assert [
        (d.endpoint.uri, d.endpoint.format, d.endpoint.virtual_size, d.controller) for d in vm.disks
    ] == [
        (str(qcow), "qcow2", 32 * MIB, Controller.VIRTIO_BLK),
        (str(tmp_path / "data.img"), "raw", 8 * MIB, Controller.SATA),
    ]
    assert vm.removables == (Removable("cdrom", Controller.IDE, unit=2),)
    assert vm.nics == (Nic("52:54:00:00:00:01", "virtio", "br0", "bridge"),)
    assert vm.origin == "libvirt" and vm.source_file == str(xml)


def test_libvirtxml_source_errors(tmp_path: Path) -> None:
    qcow, raw = source_disks(tmp_path)
    xml = tmp_path / "guest.xml"

    def open_with(text: str) -> SourceVM:
        xml.write_text(text)
        return LibvirtXmlSource(SourceOptions(args=(str(xml),))).open(tmp_path)

    with pytest.raises(DiskImageError, match="says the disk is raw, but it is qcow2"):
        open_with(SOURCE_XML.format(fmt0="raw", disk0=qcow, disk1=raw))
    with pytest.raises(DiskImageError, match="no such file"):
        open_with(SOURCE_XML.format(fmt0="qcow2", disk0=tmp_path / "gone.qcow2", disk1=raw))
    network = SOURCE_XML.replace(
        "<disk type='file' device='disk'>", "<disk type='network' device='disk'>", 1
    )
    with pytest.raises(SourceError, match="'network' disk"):
        open_with(network.format(fmt0="qcow2", disk0=qcow, disk1=raw))
    with pytest.raises(SourceError, match="no such file"):
        LibvirtXmlSource(SourceOptions(args=(str(tmp_path / "none.xml"),))).open(tmp_path)
    with pytest.raises(SourceError, match="exactly one argument"):
        LibvirtXmlSource(SourceOptions(args=()))


# ---- libvirt: a private daemon ---------------------------------------------------------------


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


@pytest.fixture
def pool(libvirtd: PrivateLibvirtd, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Path]]:
    """A defined, started directory pool, unique per test."""
    with dir_pool(libvirtd, f"pool-{request.node.name}") as made:
        yield made


def test_libvirt_target_defines_the_guest(
    libvirtd: PrivateLibvirtd, pool: tuple[Any, Path]
) -> None:
    lv_pool, pool_dir = pool
    opts = TargetOptions(storage=lv_pool.name(), conn=libvirtd.uri, name="conv1", networks=NETWORKS)
    target = LibvirtTarget(opts)
    vm = make_vm()
    target.check(vm)
    outs = target.setup(vm, [16 * MIB, 8 * MIB])
    assert [o.path.parent for o in outs] == [pool_dir, pool_dir]
    for o in outs:
        fake_copy(o)
    result = target.finalize(vm, LINUX, CAPS, outs)
    assert "defined" in result.description

    conn = libvirtd.connect()
    try:
        dom = conn.lookupByName("conv1")
        assert not dom.isActive()
        parsed = parse_domain(dom.XMLDesc(0), "defined")
        # The pool's libvirtd runs here: kvm where KVM works here and that libvirtd offers it.
        offered = "<domain type='kvm'" in conn.getCapabilities()
        assert parsed.domain_type == ("kvm" if kvm_works_here() and offered else "qemu")
        assert [(d.path, d.format, d.bus) for d in parsed.disks if d.device == "disk"] == [
            (str(pool_dir / "conv1-sda"), "raw", "virtio"),
            (str(pool_dir / "conv1-sdb"), "raw", "virtio"),
        ]
        assert [(n.mac, n.network, n.network_type, n.model) for n in parsed.nics] == [
            ("00:50:56:aa:00:01", "default", "network", "virtio"),
            ("00:50:56:aa:00:02", "br-dmz", "bridge", "virtio"),
        ]
        lv_pool.refresh(0)
        assert sorted(lv_pool.listVolumes()) == ["conv1-sda", "conv1-sdb"]
        assert lv_pool.storageVolLookupByName("conv1-sda").info()[1] == 16 * MIB

        # A second conversion to the same name is refused before any work.
        with pytest.raises(TargetError, match="already exists"):
            LibvirtTarget(opts).check(vm)
        dom.undefine()
        with pytest.raises(TargetError, match="conv1-sda: a volume with this name already"):
            LibvirtTarget(opts).check(vm)
    finally:
        conn.close()


def test_libvirt_target_uefi_and_abort(libvirtd: PrivateLibvirtd, pool: tuple[Any, Path]) -> None:
    lv_pool, pool_dir = pool
    target = LibvirtTarget(TargetOptions(storage=lv_pool.name(), conn=libvirtd.uri, format="qcow2"))
    vm = make_vm("uefi1", disks=1)
    target.check(vm)
    outs = target.setup(vm, [4 * MIB])
    fake_copy(outs[0])
    target.finalize(vm, LINUX, UEFI_CAPS, outs)
    conn = libvirtd.connect()
    try:
        parsed = parse_domain(conn.lookupByName("uefi1").XMLDesc(0))
        assert parsed.firmware is Firmware.UEFI
        assert [(d.format, d.bus) for d in parsed.disks if d.device == "disk"] == [
            ("qcow2", "sata")
        ]
        target.abort()  # e.g. a later pipeline step failed: nothing may remain
        assert "uefi1" not in [d.name() for d in conn.listAllDomains(0)]
        lv_pool.refresh(0)
        assert lv_pool.listVolumes() == []
        assert list(pool_dir.iterdir()) == []
    finally:
        conn.close()


def test_libvirt_target_check_errors(libvirtd: PrivateLibvirtd, pool: tuple[Any, Path]) -> None:
    lv_pool, _ = pool
    vm = make_vm()
    with pytest.raises(TargetError, match="no such storage pool"):
        LibvirtTarget(TargetOptions(storage="nope", conn=libvirtd.uri)).check(vm)
    with pytest.raises(TargetError, match="cannot connect"):
        LibvirtTarget(TargetOptions(conn="qemu+unix:///session?socket=/nonexistent")).check(vm)
    lv_pool.destroy()
    with pytest.raises(TargetError, match="not active"):
        LibvirtTarget(TargetOptions(storage=lv_pool.name(), conn=libvirtd.uri)).check(vm)


def define(libvirtd: PrivateLibvirtd, name: str, disk: Path) -> Any:
    """Define a guest from our own emitter's XML (so starting it also tests that XML)."""
    vm = replace(make_vm(name, disks=1), memory=64 * MIB, nics=())
    caps = replace(CAPS, virtio_serial=False)
    xml = domain_xml(vm, caps, [(disk, "qcow2")], name=name, networks=NETWORKS, domain_type="qemu")
    return libvirtd.connect().defineXML(xml)


def test_libvirt_source_reads_a_shut_off_guest(libvirtd: PrivateLibvirtd) -> None:
    disk = libvirtd.root / "off.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    dom = define(libvirtd, "off1", disk)
    source = LibvirtSource(SourceOptions(args=("off1",), conn=libvirtd.uri))
    try:
        vm = source.open(Path("/nonexistent"))
        assert (vm.name, vm.memory, vm.vcpus, vm.topology) == (
            "off1",
            64 * MIB,
            2,
            CpuTopology(1, 2),
        )
        assert [(d.endpoint.uri, d.endpoint.format, d.endpoint.virtual_size) for d in vm.disks] == [
            (str(disk), "qcow2", 16 * MIB)
        ]
        assert vm.origin == "libvirt"
    finally:
        source.close()
        dom.undefine()
    with pytest.raises(SourceError, match="no such guest"):
        LibvirtSource(SourceOptions(args=("off1",), conn=libvirtd.uri)).open(Path("/"))


def test_libvirt_source_refuses_a_running_guest(libvirtd: PrivateLibvirtd) -> None:
    # A real TCG guest started by the daemon: it finds no OS on the blank disk and idles in
    # the firmware, which is running enough.
    disk = libvirtd.root / "running.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    libvirtd.give(disk)
    dom = define(libvirtd, "run1", disk)
    try:
        dom.create()
        assert dom.isActive()
        with pytest.raises(SourceError, match="running; shut it down first") as info:
            LibvirtSource(SourceOptions(args=("run1",), conn=libvirtd.uri)).open(Path("/"))
        assert info.value.hint is not None and "virsh shutdown run1" in info.value.hint
    finally:
        with contextlib.suppress(Exception):
            dom.destroy()
        dom.undefine()


@pytest.mark.parametrize(
    "caps",
    [
        CAPS,
        UEFI_CAPS,
        GuestCaps("virtio-scsi", "e1000e", "qxl", "q35", Firmware.UEFI, "x86_64", virtio_rng=True),
        GuestCaps("ide", "rtl8139", "cirrus", "pc", Firmware.BIOS, "i686", virtio_serial=True),
    ],
    ids=lambda c: f"{c.block_bus}-{c.machine}-{c.firmware}",
)
def test_libvirt_accepts_what_we_emit(libvirtd: PrivateLibvirtd, caps: GuestCaps) -> None:
    # The schema allows more than the qemu driver does; defining checks the driver's rules.
    vm = make_vm("accept1")
    vm = replace(vm, removables=(*vm.removables, Removable("floppy", Controller.UNKNOWN)))
    disks: list[tuple[str | Path, str]] = [("/var/tmp/a.raw", "raw"), ("/dev/vg0/b", "raw")]
    xml = domain_xml(
        vm, caps, disks, name="accept1", networks=NETWORKS, domain_type="qemu", os_type="windows"
    )
    import libvirt

    conn = libvirtd.connect()
    try:
        dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        parsed = parse_domain(dom.XMLDesc(0))
        assert parsed.firmware is caps.firmware
        assert len(parsed.nics) == 2
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()
