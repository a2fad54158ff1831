"""--verify-boot: start the converted guest from the XML the target wrote and watch it.

The guest runs as a transient libvirt domain (verify/domain.py says how it differs from the
target's XML: overlays over the output disks, NICs on private UDP wires), started paused so
the console is read from the first byte. Proof of life is the login prompt on the serial
console; for a guest whose static IPv4 configuration was kept, also an ARP answer for each
static address (verify/arp.py). -o qemu's script runs instead of a domain, its NICs tapped
by qemu's net filters (verify/filter_taps.py), and the same checks apply. On a host without
KVM the guest runs under TCG, and the verdict says so. Whatever happens, the domain is
destroyed and its overlays removed; the console is saved next to the output when the guest
did not come up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshift.errors import BootCheckError
from vmshift.guest.accel import detect_accelerator
from vmshift.libvirt_binding import import_libvirt
from vmshift.model.inspection import OperatingSystem
from vmshift.process import CommandFailed, run
from vmshift.verify import arp
from vmshift.verify.console import ALIVE, DESCRIPTIONS, BootOutcome, classify, tail
from vmshift.verify.domain import NicLink, disk_images, nic_macs, verification_xml
from vmshift.verify.filter_taps import FilterTaps, script_nics

log = logging.getLogger(__name__)

# After the login prompt, how long a static address may take to answer.
ADDRESS_WAIT = 90.0


@dataclass(frozen=True)
class VerifyOptions:
    conn: str  # the libvirt URI to boot on
    timeout: float  # seconds from start to the login prompt


@dataclass(frozen=True)
class BootPlan:
    """What to boot: the target's domain XML and what to expect of it."""

    # The target's libvirt domain XML (-o local, -o libvirt; -o rhv: made from its OVF)
    xml: str | None
    name: str  # the guest's name on the target
    addresses: tuple[str, ...]  # static IPv4 addresses that should come up
    save_dir: Path  # where the console goes when the guest does not come up
    # No login prompt to wait for on the serial console (Windows): a frame from the guest's
    # NIC is the proof of life instead.
    network_proof: bool = False
    # -o qemu: the script that boots the guest, run instead of a libvirt domain.
    script: Path | None = None


@dataclass(frozen=True)
class BootVerdict:
    ok: bool
    outcome: BootOutcome
    seconds: float  # from start to the outcome
    accelerator: str  # kvm or tcg: how the check ran, not what the target uses
    addresses: dict[str, str | None] = field(default_factory=dict)  # static IP -> MAC answering
    console_log: Path | None = None  # saved when the guest did not come up
    console_tail: str = ""
    nic: str | None = None  # NIC_UP: the MAC that spoke

    def line(self, name: str) -> str:
        """The final line about the boot check."""
        how = " under TCG (no KVM on this host)" if self.accelerator == "tcg" else ""
        if self.outcome not in ALIVE:
            saved = f"; console in {self.console_log}" if self.console_log else ""
            return (
                f"vmshift: {name} did not boot: {DESCRIPTIONS[self.outcome]} after "
                f"{self.seconds:.0f} s{how}{saved}"
            )
        up = [f"{ip} up ({mac})" for ip, mac in self.addresses.items() if mac]
        down = [ip for ip, mac in self.addresses.items() if not mac]
        proof = "to its login prompt"
        if self.outcome is BootOutcome.NIC_UP:
            proof = f"(its NIC {self.nic} came up)"
        text = f"vmshift: {name} booted {proof} in {self.seconds:.0f} s{how}"
        if up:
            text += "; " + ", ".join(up)
        if down:
            text += "; static address not up: " + ", ".join(down)
            if self.console_log:
                text += f"; console in {self.console_log}"
        return text


class BootCheckInterrupted(KeyboardInterrupt):
    """A signal cut the boot check short: the guest is complete on the target all the same."""

    def __init__(self, where: str) -> None:
        super().__init__(where)
        self.where = where  # the target's description of the guest


def static_addresses(guest: OperatingSystem) -> list[str]:
    """The static IPv4 addresses the guest's kept network configuration brings up."""
    found: dict[str, None] = {}
    for config in guest.linux.network_configs if guest.linux else ():
        found.update(dict.fromkeys(config.static_ipv4))
    return list(found)


def verify_boot(plan: BootPlan, workdir: Path, opts: VerifyOptions) -> BootVerdict:
    """Boot the guest plan describes (never writing its disks) and return the verdict."""
    if plan.script is not None:
        verdict = _boot_script(plan.script, plan, workdir, opts)
    else:
        verdict = _boot_domain(plan, workdir, opts)
    if not verdict.ok:
        saved = _save_console(plan.save_dir / f"{plan.name}.verify-console.log",
                              verdict.console_tail)  # fmt: skip
        verdict = dataclasses.replace(verdict, console_log=saved)
    return verdict


def _boot_domain(plan: BootPlan, workdir: Path, opts: VerifyOptions) -> BootVerdict:
    xml, name = plan.xml, plan.name
    if xml is None:
        raise BootCheckError("--verify-boot: the output describes no guest to boot")
    lv = import_libvirt(BootCheckError, "--verify-boot")
    tcg = not detect_accelerator().is_kvm
    vdir = _private_dir(workdir)
    overlays = [_overlay(img.path, img.format, vdir / f"disk{i}.qcow2")
                for i, img in enumerate(disk_images(xml))]  # fmt: skip
    wires = [arp.open_wire(mac) for mac in nic_macs(xml)]
    links = [NicLink(w.mac, w.sock.getsockname()[1], w.guest_port) for w in wires]
    domain_xml = verification_xml(
        xml, overlays, links, name=f"vmshift-verify-{name}-{os.getpid()}",
        private_dir=vdir, tcg=tcg,
    )  # fmt: skip
    try:
        conn = lv.open(opts.conn)
    except lv.libvirtError as exc:
        raise BootCheckError(
            f"--verify-boot: cannot connect to libvirt at {opts.conn}: {exc.get_error_message()}"
        ) from None
    try:
        verdict = _boot(lv, conn, domain_xml, plan, wires=wires, opts=opts, tcg=tcg)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
        for wire in wires:
            wire.close()
    return verdict


def _private_dir(workdir: Path) -> Path:
    """A directory the hypervisor's user can use: libvirt's qemu may run as another user
    (qemu:///system's, or a session daemon's), so the work directory becomes traversable
    (its entries stay unlisted) and this one writable, for the NVRAM libvirt creates."""
    vdir = workdir / "verify"
    vdir.mkdir()
    workdir.chmod(0o711)
    vdir.chmod(0o777)
    return vdir


def _overlay(backing: str, fmt: str, path: Path) -> Path:
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", fmt, str(path)]
    try:
        run(argv, timeout=120)
    except CommandFailed as exc:
        raise BootCheckError(f"--verify-boot: cannot put an overlay on {backing}: {exc}") from exc
    path.chmod(0o666)
    return path


class _ConsoleReader(threading.Thread):
    """Reads the guest's serial console into buf until it ends; read is a libvirt stream's
    recv or a pipe's."""

    def __init__(self, read: Callable[[int], Any]) -> None:
        super().__init__(daemon=True, name="verify-console")
        self.read = read
        self.buf = bytearray()
        self.lock = threading.Lock()

    def run(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                chunk = self.read(65536)
                if not isinstance(chunk, bytes) or not chunk:
                    return
                with self.lock:
                    self.buf += chunk

    def snapshot(self) -> bytes:
        with self.lock:
            return bytes(self.buf)


def _boot(
    lv: Any,
    conn: Any,
    xml: str,
    plan: BootPlan,
    *,
    wires: Sequence[arp.Wire],
    opts: VerifyOptions,
    tcg: bool,
) -> BootVerdict:
    accel = "tcg" if tcg else "kvm"
    try:
        dom = conn.createXML(xml, lv.VIR_DOMAIN_START_PAUSED)
    except lv.libvirtError as exc:
        raise BootCheckError(
            f"--verify-boot: libvirt at {opts.conn} cannot start the guest: "
            f"{exc.get_error_message()}"
        ) from None
    reader: _ConsoleReader | None = None
    try:
        stream = conn.newStream(0)
        dom.openConsole(None, stream, 0)
        reader = _ConsoleReader(stream.recv)
        reader.start()
        started = time.monotonic()
        dom.resume()
        outcome, nic = _watch(reader, dom.isActive, started + opts.timeout, wires,
                             plan.network_proof)  # fmt: skip
        seconds = time.monotonic() - started
        answers = _answers(outcome, wires, plan)
        log.info("boot check: %s after %.0f s; addresses %s", outcome, seconds, answers)
        return BootVerdict(
            outcome in ALIVE and None not in answers.values(),
            outcome, seconds, accel, answers, None, tail(reader.snapshot(), 200), nic,
        )  # fmt: skip
    finally:
        with contextlib.suppress(lv.libvirtError):
            dom.destroy()
        if reader is not None:
            reader.join(timeout=10)
        with contextlib.suppress(Exception):
            stream.abort()


def _answers(
    outcome: BootOutcome, wires: Sequence[arp.Wire], plan: BootPlan
) -> dict[str, str | None]:
    """Once the guest is alive: each static address and the MAC that answered for it (None:
    no answer within ADDRESS_WAIT)."""
    if outcome not in ALIVE or not plan.addresses:
        return {}
    return arp.probe(wires, list(plan.addresses), time.monotonic() + ADDRESS_WAIT)


def _watch(
    reader: _ConsoleReader,
    running: Callable[[], Any],
    deadline: float,
    wires: Sequence[arp.Wire],
    network_proof: bool,
) -> tuple[BootOutcome, str | None]:
    """Wait for what the console (or, for network_proof, the guest's NIC) shows of the boot.
    The wires are drained meanwhile: a stream qemu writes to must not fill up."""
    while time.monotonic() < deadline:
        found = classify(reader.snapshot())
        nic = arp.sender(wires, 0.0) if wires else None
        if nic is not None and found is None and network_proof:
            return BootOutcome.NIC_UP, nic
        if found is not None:
            return found, None
        if not running():
            return BootOutcome.QEMU_EXIT, None
        time.sleep(0.5)
    return BootOutcome.TIMEOUT, None


def _boot_script(script: Path, plan: BootPlan, workdir: Path, opts: VerifyOptions) -> BootVerdict:
    """-o qemu: run the script as the user would, with -snapshot (its disks are never
    written) in a network namespace of its own (user-mode networking reaches nothing), its
    serial console on the pipe, and its NICs tapped (verify/filter_taps.py) for the ARP
    check. The script picks KVM or TCG itself."""
    try:
        taps = FilterTaps(script_nics(script.read_text()), workdir)
    except OSError as exc:
        raise BootCheckError(f"--verify-boot: cannot listen for the guest's NICs: {exc}") from exc
    netns = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net"]
    argv = [*netns, "--", str(script), "-snapshot", "-no-reboot", *taps.qemu_args()]
    log.info("boot check: %s", " ".join(argv))
    before = set(script.parent.iterdir())
    # qemu's messages go to a file: a pipe nobody reads until the end could fill and stall it.
    stderr_path = workdir / "verify-qemu.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    out_fd = proc.stdout.fileno()
    reader = _ConsoleReader(lambda n: os.read(out_fd, n))
    reader.start()
    started = time.monotonic()
    wires: list[arp.StreamWire] = []

    def running() -> bool:
        return proc.poll() is None

    try:
        wires = taps.accept(running, started + min(opts.timeout, 60.0)) or []
        outcome, nic = _watch(reader, running, started + opts.timeout, wires, plan.network_proof)
        seconds = time.monotonic() - started
        answers = _answers(outcome, wires, plan)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        reader.join(timeout=10)  # it reads to the end of the console
        proc.stdin.close()
        proc.stdout.close()
        for wire in wires:
            wire.close()
        taps.close()
        _remove_new_sockets(script.parent, before)
    log.info("boot check: %s after %.0f s; addresses %s", outcome, seconds, answers)
    console = tail(reader.snapshot(), 200)
    err = stderr_path.read_text(errors="replace").strip()
    if outcome is BootOutcome.QEMU_EXIT and err:
        console += "\n[qemu stderr]\n" + err
    accel = "kvm" if detect_accelerator().is_kvm else "tcg"
    ok = outcome in ALIVE and None not in answers.values()
    return BootVerdict(ok, outcome, seconds, accel, answers, None, console, nic)


def _remove_new_sockets(directory: Path, before: set[Path]) -> None:
    """The script's qemu binds its guest-agent socket next to the disks: the check leaves no
    such trace in the output directory."""
    for path in set(directory.iterdir()) - before:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()


def _save_console(path: Path, text: str) -> Path | None:
    try:
        path.write_text(text + "\n")
    except OSError as exc:
        log.warning("cannot save the console to %s: %s", path, exc.strerror)
        return None
    return path
