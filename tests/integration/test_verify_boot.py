"""--verify-boot's machinery on a guest that cannot boot, through a real (private) libvirtd:
the verdict, the saved console, and nothing written to the output or left in libvirt. The
real Debian guest's boot checks (test_linux_conversion.py) show the other side: a guest that
comes up, with its static address answering ARP."""

from __future__ import annotations

import hashlib
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import vmshift
from tests.integration.convert_runs import users_of
from tests.integration.libvirt_fixture import PrivateLibvirtd, private_libvirtd
from tests.integration.test_targets import CAPS, MIB, NETWORKS, fake_copy, make_vm
from tests.os_samples import LINUX
from vmshift.formats.libvirt_xml import domain_xml
from vmshift.model.vm import Firmware, Nic
from vmshift.targets.base import TargetOptions
from vmshift.targets.qemu import QemuTarget, qemu_script
from vmshift.targets.qemu_host import QEMU
from vmshift.verify import arp
from vmshift.verify.boot import BootPlan, BootVerdict, VerifyOptions, verify_boot
from vmshift.verify.console import BootOutcome
from vmshift.verify.domain import NicLink, verification_xml
from vmshift.verify.filter_taps import FilterTaps, ScriptNic, script_nics


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_guest_that_does_not_boot_fails_with_its_console_saved(
    libvirtd: PrivateLibvirtd,
) -> None:
    out = libvirtd.root / "verify-out"  # the daemon's uid must reach the output
    out.mkdir()
    out.chmod(0o755)
    disk = out / "blank-sda"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    before = _digest(disk)
    vm = replace(make_vm("blank", disks=1), memory=256 * MIB, removables=())
    # UEFI: OVMF, finding nothing to boot, falls back to its shell on the serial console
    # (SeaBIOS would say so only on the screen).
    caps = replace(CAPS, firmware=Firmware.UEFI)
    xml = domain_xml(vm, caps, [(disk, "qcow2")], name="blank", networks=NETWORKS,
                     domain_type="kvm", os_type="linux")  # fmt: skip
    workdir = out / "work"
    workdir.mkdir(mode=0o700)
    plan = BootPlan(xml=xml, name="blank", addresses=("192.0.2.99",), save_dir=out)

    verdict = verify_boot(plan, workdir, VerifyOptions(conn=libvirtd.uri, timeout=240))

    assert not verdict.ok
    assert verdict.outcome is BootOutcome.NO_BOOT_DEVICE
    assert verdict.console_log == out / "blank.verify-console.log"
    assert "Shell> " in verdict.console_log.read_text()
    line = verdict.line("blank")
    assert line.startswith("vmshift: blank did not boot: the firmware found nothing to boot")
    assert str(verdict.console_log) in line
    assert _digest(disk) == before  # booted through an overlay: the output is as it was
    conn = libvirtd.connect()
    try:
        assert conn.listAllDomains(0) == []  # the transient domain is gone
    finally:
        conn.close()


def test_the_verification_domain_differs_from_the_target_only_where_it_must(
    tmp_path: Path,
) -> None:
    windows = make_vm("w", disks=1)
    xml = domain_xml(windows, CAPS, [("/out/w-sda", "raw")], name="w", networks=NETWORKS,
                     domain_type="kvm", os_type="windows")  # fmt: skip
    links = [NicLink("00:50:56:aa:00:01", 5001, 5002), NicLink("00:50:56:aa:00:02", 5003, 5004)]
    overlay = tmp_path / "disk0.qcow2"
    for tcg in (False, True):
        text = verification_xml(xml, [overlay], links, name="v", private_dir=tmp_path, tcg=tcg)
        root = etree.fromstring(text.encode())
        assert root.get("type") == ("qemu" if tcg else "kvm")
        assert root.findtext("name") == "v" and root.find("uuid") is None
        assert (root.find("features/hyperv") is None) == tcg
        assert root.xpath("string(cpu/@mode)") == ("maximum" if tcg else "host-model")
        disk = root.find("devices/disk[@device='disk']")
        assert disk is not None
        assert disk.xpath("string(source/@file)") == str(overlay)
        assert disk.xpath("string(driver/@type)") == "qcow2"
        ifaces = root.findall("devices/interface")
        assert [i.get("type") for i in ifaces] == ["udp", "udp"]
        assert [i.xpath("string(mac/@address)") for i in ifaces] == [n.mac for n in links]
        assert ifaces[1].xpath("string(source/local/@port)") == "5004"
        assert ifaces[0].xpath("string(model/@type)") == "virtio"
        assert root.find("devices/graphics") is None
        assert root.xpath("string(devices/channel/source/@path)") == str(tmp_path / "ch0")
    # The target's XML itself is left as it was: it describes the target.
    assert etree.fromstring(xml.encode()).get("type") == "kvm"


def test_arp_request_and_reply() -> None:
    frame = arp.request("192.0.2.10")
    assert frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x06"
    assert frame[38:42] == bytes([192, 0, 2, 10])
    guest_mac = bytes.fromhex("0050561a2b3c")
    reply = (
        arp.PROBE_MAC + guest_mac + b"\x08\x06"
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, arp.REPLY)
        + guest_mac + bytes([192, 0, 2, 10]) + arp.PROBE_MAC + frame[28:32]
    )  # fmt: skip
    assert arp.reply_from(reply, "192.0.2.10") == "00:50:56:1a:2b:3c"
    assert arp.reply_from(reply, "192.0.2.11") is None
    assert arp.reply_from(frame, "192.0.2.10") is None  # a request is no answer


def test_a_frame_from_the_guests_nic_is_proof_of_life() -> None:
    """Windows has no serial login: the first frame its NIC sends (DHCP, ARP ...) counts."""
    wire = arp.open_wire("00:50:56:aa:20:22")
    other = arp.open_wire("00:50:56:aa:20:23")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as qemu_side:
        try:
            assert arp.sender([wire, other], 0.1) is None
            stranger = b"\xff" * 6 + bytes.fromhex("0250560000ff") + b"\x08\x00" + b"\0" * 50
            qemu_side.sendto(stranger, wire.sock.getsockname())
            assert arp.sender([wire, other], 1.0) is None  # not the guest's MAC
            dhcp = b"\xff" * 6 + bytes.fromhex("005056aa2022") + b"\x08\x00" + b"\0" * 300
            qemu_side.sendto(dhcp, wire.sock.getsockname())
            assert arp.sender([wire, other], 1.0) == "00:50:56:aa:20:22"
        finally:
            wire.sock.close()
            other.sock.close()
    verdict = BootVerdict(True, BootOutcome.NIC_UP, 61.4, "tcg", nic="00:50:56:aa:20:22")
    assert verdict.line("w") == (
        "vmshift: w booted (its NIC 00:50:56:aa:20:22 came up) in 61 s under TCG (no KVM on "
        "this host)"
    )


def test_verify_boot_is_refused_up_front_where_the_output_cannot_be_booted(
    tmp_path: Path,
) -> None:
    cases: list[tuple[list[str | Path], str]] = [
        (["-o", "null", "--verify-boot"],
         "--verify-boot works with -o local, -o libvirt, -o qemu and -o rhv, not -o null"),
        (["-o", "rhv", "-os", "nfs.example:/export", "--verify-boot"],
         "--verify-boot -o rhv: -os nfs.example:/export is mounted only while vmshift writes "
         "to it; the boot check needs the export domain as a directory"),
        (["-o", "qemu", "-os", tmp_path, "--verify-boot", "--verify-boot-conn", "qemu:///x"],
         "--verify-boot-conn: -o qemu's guest boots from its script, not libvirt"),
        (["-o", "local", "-os", tmp_path, "--verify-boot-timeout", "60"],
         "--verify-boot-conn and --verify-boot-timeout need --verify-boot"),
        (["-o", "local", "-os", tmp_path, "--verify-boot", "--verify-boot-timeout", "0"],
         "--verify-boot-timeout 0: must be more than 0"),
    ]  # fmt: skip
    for argv, said in cases:
        proc = vmshift(["convert", "-i", "disk", tmp_path / "absent.img", *argv])
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.splitlines()[0] == f"vmshift: error: {said}", proc.stderr
        assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_qemu_script_that_does_not_boot(tmp_path: Path) -> None:
    """-o qemu: the script vmshift wrote runs (with -snapshot, in a network namespace of its
    own); a blank disk gets no further than the firmware, so no login prompt in time."""
    out = tmp_path / "out"
    out.mkdir()
    target = QemuTarget(TargetOptions(storage=str(out), name="blank"))
    vm = replace(make_vm("blank", disks=1), memory=128 * MIB, removables=())
    target.check(vm)
    outs = target.setup(vm, [MIB])
    fake_copy(outs[0])
    result = target.finalize(vm, LINUX, replace(CAPS, firmware=Firmware.BIOS), outs)
    assert result.boot_script is not None
    disk = out / "blank-sda"
    before = _digest(disk)
    workdir = tmp_path / "work"
    workdir.mkdir()
    plan = BootPlan(xml=None, name="blank", addresses=("192.0.2.99",), save_dir=out,
                    script=result.boot_script)  # fmt: skip
    verdict = verify_boot(plan, workdir, VerifyOptions(conn="unused", timeout=15))
    assert not verdict.ok and verdict.outcome is BootOutcome.TIMEOUT
    assert verdict.console_log == out / "blank.verify-console.log"
    assert verdict.console_log.exists()
    assert _digest(disk) == before
    assert users_of(result.boot_script) == [], "qemu outlived the check"
    # The NIC's sockets were in the work directory, and are gone.
    assert not [p for p in workdir.iterdir() if p.is_socket()]
    assert verdict.addresses == {}  # no login prompt: nothing asked
    # Nothing new next to the output but the saved console (no guest-agent socket).
    assert sorted(p.name for p in out.iterdir()) == [
        "blank-sda",
        "blank.sh",
        "blank.verify-console.log",
    ]


def test_the_nics_of_the_script_vmshift_wrote(tmp_path: Path) -> None:
    """-o qemu's check taps the NICs the script names: netdev ids and MACs as written."""
    vm = replace(make_vm("two"), nics=(*make_vm().nics, Nic(None, "e1000", "VM Network")))
    text = qemu_script(vm, CAPS, [(tmp_path / "two-sda", "raw")], name="two", accel="auto",
                       directory=tmp_path)  # fmt: skip
    assert script_nics(text) == [
        ScriptNic("net0", "00:50:56:aa:00:01"),
        ScriptNic("net1", "00:50:56:aa:00:02"),
        ScriptNic("net2", None),
    ]


def _turned(arg: str) -> str:
    """An option with its filter's queue turned around (rx <-> tx)."""
    for queue, other in (("queue=rx", "queue=tx"), ("queue=tx", "queue=rx")):
        if queue in arg:
            return arg.replace(queue, other)
    return arg


def test_qemu_filters_frame_a_nics_traffic_as_the_stream_wire_reads_it(tmp_path: Path) -> None:
    """The options FilterTaps gives a real qemu, with the queues turned around so that the
    user-mode network itself (no guest needed) answers: an ARP request for its gateway goes
    in through filter-redirector and slirp's reply comes out through filter-mirror, each a
    length-framed frame on a Unix socket qemu connected to."""
    taps = FilterTaps([ScriptNic("net0", "52:54:00:12:34:56")], tmp_path)
    args = [_turned(a) for a in taps.qemu_args()]
    proc = subprocess.Popen(
        [QEMU, "-nodefaults", "-display", "none", "-machine", "pc,accel=tcg", "-m", "32",
         "-netdev", "user,id=net0", "-device", "e1000,netdev=net0,mac=52:54:00:12:34:56", *args],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wires = taps.accept(lambda: proc.poll() is None, time.monotonic() + 60)
        assert wires is not None, proc.stderr.read() if proc.stderr else ""
        # slirp's gateway answers with its own MAC, 52:55 then its address.
        answers = arp.probe(wires, ["10.0.2.2"], time.monotonic() + 30)
        assert answers == {"10.0.2.2": "52:55:0a:00:02:02"}
        for wire in wires:
            wire.close()
    finally:
        proc.kill()
        proc.communicate(timeout=30)
        taps.close()
    assert list(tmp_path.iterdir()) == []  # the sockets are gone
