"""Boot a disk under qemu and watch its serial console: did it reach `login:`?

The proof that a conversion worked is that the guest boots on the new devices, so integration
tests call `boot_to_login()` with the bus and NIC the target will use. The disk is always opened
with `-snapshot`: nothing the guest writes reaches the image, so a source can be booted before
and after and still hash the same. Optionally the helper logs in on the serial console and runs
one command (`ip -br addr`, say) to prove what came up.

qemu runs with `-no-reboot` (a guest that reboots counts as a failure rather than looping), dies
with the test process (setpriv --pdeathsig), and is killed when the outcome is known.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vmshift.verify.console import BootOutcome, classify, plain, tail

DISK_BUSES = ("virtio-blk", "virtio-scsi", "pvscsi", "ide", "sata")
DEFAULT_OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
DEFAULT_OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
DEFAULT_MAC = "52:54:00:12:34:56"
# The NIC sits in a fixed PCI slot whatever the disk bus, so systemd names it the same on every
# boot: ens5 on the i440fx machine (the name comes from the slot's ACPI _SUN).
NIC_PCI_SLOT = 5
NIC_GUEST_NAME = "ens5"


# libvirt disk buses and NIC models -> the qemu devices boot_to_login takes.
_XML_BUSES = {"virtio": "virtio-blk", "scsi": "virtio-scsi", "sata": "sata", "ide": "ide"}
_XML_NICS = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139"}


@dataclass(frozen=True)
class XmlDevices:
    """What a converted guest's domain XML asks for: how to boot it the same way."""

    disk_bus: str  # one of DISK_BUSES
    nic_model: str | None  # a qemu NIC device, None without a NIC
    mac: str | None
    firmware: str  # bios or uefi


def devices_from_xml(xml: str) -> XmlDevices:
    """Read the first disk's bus, the first NIC and the firmware from a libvirt domain XML."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    target = root.find("devices/disk[@device='disk']/target")
    bus = target.get("bus") if target is not None else None
    model = root.find("devices/interface/model")
    mac = root.find("devices/interface/mac")
    os_node = root.find("os")
    uefi = os_node is not None and (
        os_node.get("firmware") == "efi" or os_node.find("loader") is not None
    )
    return XmlDevices(
        disk_bus=_XML_BUSES.get(bus or "", "sata"),
        nic_model=None if model is None else _XML_NICS.get(model.get("type", ""), "e1000"),
        mac=None if mac is None else mac.get("address"),
        firmware="uefi" if uefi else "bios",
    )


@dataclass(frozen=True)
class BootResult:
    outcome: BootOutcome
    serial_log: str  # everything the serial console printed, control sequences included
    seconds: float  # from starting qemu to the outcome
    argv: tuple[str, ...]  # the qemu command line, for the failure message
    # Set when a command was asked for: its output (CR and escape sequences removed) and status.
    command_output: str | None = None
    command_status: int | None = None
    # Why the login or the command did not work out, when the boot itself did.
    command_error: str | None = None

    @property
    def reached_login(self) -> bool:
        return self.outcome is BootOutcome.LOGIN

    def tail(self, lines: int = 40) -> str:
        """The end of the console, for assertion messages."""
        return tail(self.serial_log.encode(), lines)


def kvm_usable() -> bool:
    """/dev/kvm is there and the CPU can virtualise; otherwise qemu hangs or aborts with kvm."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return "vmx" in flags or "svm" in flags
    return False


def image_format(disk: Path) -> str:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(disk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)["format"])


def qemu_argv(
    disk: Path,
    *,
    disk_bus: str,
    nic_model: str | None,
    fmt: str,
    mac: str,
    firmware: str,
    ovmf_code: Path,
    ovmf_vars: Path | None,
    memory_mb: int = 1024,
    cpus: int = 1,
    machine: str = "pc",
) -> list[str]:
    """The qemu-system-x86_64 command line boot_to_login() runs (serial on stdio)."""
    if kvm_usable():
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        # thread=multi lets each vCPU use a host core; -cpu max gives the guest modern features
        # (x86-64-v2 and later) that today's distribution kernels may expect.
        accel = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    argv = [
        "qemu-system-x86_64",
        "-machine",
        machine,
        *accel,
        "-m",
        str(memory_mb),
        "-smp",
        str(cpus),
        "-nodefaults",
        "-display",
        "none",
        # Keep a graphics card, as every real VM has: without one, grub on SeaBIOS never gets
        # as far as loading the kernel (measured: no serial output at all in 500 s).
        "-vga",
        "std",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-snapshot",
        "-drive",
        f"file={disk},format={fmt},if=none,id=disk0,snapshot=on,cache=unsafe",
        *_disk_device(disk_bus),
    ]
    if firmware == "uefi":
        argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf_code}"]
        if ovmf_vars is not None:
            argv += ["-drive", f"if=pflash,format=raw,unit=1,file={ovmf_vars}"]
    elif firmware != "bios":
        raise ValueError(f"firmware must be bios or uefi, not {firmware!r}")
    if nic_model is None:
        argv += ["-nic", "none"]
    else:
        # restrict=on: the guest gets a NIC but no route to anything outside qemu.
        argv += [
            "-netdev",
            "user,id=net0,restrict=on",
            "-device",
            f"{nic_model},netdev=net0,mac={mac},addr={NIC_PCI_SLOT:#x}",
        ]
    return argv


def _disk_device(bus: str) -> list[str]:
    hd = "drive=disk0,bootindex=0"
    if bus == "virtio-blk":
        return ["-device", f"virtio-blk-pci,{hd}"]
    if bus == "virtio-scsi":
        return ["-device", "virtio-scsi-pci,id=scsi0", "-device", f"scsi-hd,bus=scsi0.0,{hd}"]
    if bus == "pvscsi":
        return ["-device", "pvscsi,id=scsi0", "-device", f"scsi-hd,bus=scsi0.0,{hd}"]
    if bus == "ide":
        return ["-device", f"ide-hd,bus=ide.0,{hd}"]
    if bus == "sata":
        return ["-device", "ich9-ahci,id=ahci0", "-device", f"ide-hd,bus=ahci0.0,{hd}"]
    raise ValueError(f"disk_bus must be one of {', '.join(DISK_BUSES)}, not {bus!r}")


class _Console:
    """The guest's serial port as qemu's stdin/stdout, read without blocking."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path | None) -> None:
        assert proc.stdout is not None and proc.stdin is not None
        self.proc = proc
        self.buf = bytearray()
        self._out = proc.stdout
        self._in = proc.stdin
        os.set_blocking(self._out.fileno(), False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._out, selectors.EVENT_READ)
        self._log = log_path.open("wb") if log_path is not None else None
        self.eof = False

    def close(self) -> None:
        self._sel.close()
        if self._log is not None:
            self._log.close()

    def pump(self, wait: float) -> None:
        """Read whatever arrives within `wait` seconds."""
        if self.eof:
            time.sleep(min(wait, 0.1))
            return
        for _key, _ev in self._sel.select(timeout=wait):
            try:
                chunk = os.read(self._out.fileno(), 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self.eof = True
                return
            self.buf += chunk
            if self._log is not None:
                self._log.write(chunk)
                self._log.flush()

    def send(self, text: str) -> None:
        self._in.write(text.encode())
        self._in.flush()

    def wait_for(self, pattern: re.Pattern[bytes], start: int, deadline: float) -> re.Match[bytes]:
        while True:
            m = pattern.search(self.buf, start)
            if m is not None:
                return m
            if self.eof or time.monotonic() >= deadline:
                raise TimeoutError(pattern.pattern.decode(errors="replace"))
            self.pump(min(1.0, max(0.0, deadline - time.monotonic())))


def boot_to_login(
    disk: Path,
    *,
    disk_bus: str,
    nic_model: str | None,
    fmt: str | None = None,
    mac: str | None = None,
    firmware: str = "bios",
    ovmf_code: Path | None = None,
    ovmf_vars: Path | None = None,
    timeout: float = 600.0,
    command: str | None = None,
    user: str = "root",
    password: str | None = None,
    command_timeout: float = 120.0,
    log_path: Path | None = None,
    memory_mb: int = 1024,
    cpus: int = 1,
    machine: str = "pc",
) -> BootResult:
    """Boot `disk` (never written) and report whether the serial console reaches `login:`.

    disk_bus: one of DISK_BUSES. nic_model: a qemu NIC device ("virtio-net-pci", "vmxnet3",
    "e1000" ...) on restricted user networking, or None for no NIC. With `command` (one shell
    line) and `password`, log in as `user` once the prompt shows and run it. UEFI boots get a
    private copy of `ovmf_vars` (default the stock OVMF 4M pair). `log_path` receives the console
    as it is printed, so a hung boot can be followed with `tail -f`.
    """
    if command is not None and "\n" in command:
        raise ValueError("command must be one line")
    with tempfile.TemporaryDirectory(prefix="vmshift-boot-") as tmp:
        vars_copy: Path | None = None
        if firmware == "uefi":
            # OVMF writes its variable store: give it a private copy, so the stock file stays
            # pristine without relying on how -snapshot treats pflash.
            vars_copy = Path(tmp) / "OVMF_VARS.fd"
            shutil.copyfile(ovmf_vars or DEFAULT_OVMF_VARS, vars_copy)
        argv = qemu_argv(
            disk,
            disk_bus=disk_bus,
            nic_model=nic_model,
            fmt=fmt or image_format(disk),
            mac=mac or DEFAULT_MAC,
            firmware=firmware,
            ovmf_code=ovmf_code or DEFAULT_OVMF_CODE,
            ovmf_vars=vars_copy,
            memory_mb=memory_mb,
            cpus=cpus,
            machine=machine,
        )
        return _run_boot(
            argv,
            timeout=timeout,
            command=command,
            user=user,
            password=password,
            command_timeout=command_timeout,
            log_path=log_path,
        )


def _run_boot(
    argv: list[str],
    *,
    timeout: float,
    command: str | None,
    user: str,
    password: str | None,
    command_timeout: float,
    log_path: Path | None,
) -> BootResult:
    started = time.monotonic()
    deadline = started + timeout
    # setpriv sets PR_SET_PDEATHSIG and execs qemu: a killed test process takes qemu with it.
    proc = subprocess.Popen(
        ["setpriv", "--pdeathsig", "KILL", "--", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    console = _Console(proc, log_path)
    outcome = BootOutcome.TIMEOUT
    elapsed = 0.0
    cmd_out: str | None = None
    cmd_status: int | None = None
    cmd_error: str | None = None
    try:
        while time.monotonic() < deadline:
            console.pump(min(1.0, max(0.0, deadline - time.monotonic())))
            found = classify(console.buf)
            if found is not None:
                outcome = found
                break
            if console.eof or proc.poll() is not None:
                outcome = BootOutcome.QEMU_EXIT
                break
        elapsed = time.monotonic() - started
        if outcome is BootOutcome.LOGIN and command is not None:
            if password is None:
                cmd_error = "a command needs a password to log in with"
            else:
                try:
                    cmd_out, cmd_status = _login_and_run(
                        console, user, password, command, time.monotonic() + command_timeout
                    )
                except TimeoutError as exc:
                    cmd_error = f"timed out waiting for {exc}"
    finally:
        proc.kill()
        _, stderr = proc.communicate(timeout=30)
        console.close()
    log = console.buf.decode(errors="replace")
    if outcome is BootOutcome.QEMU_EXIT and stderr:
        log += "\n[qemu stderr]\n" + stderr.decode(errors="replace")
    return BootResult(
        outcome=outcome,
        serial_log=log,
        seconds=elapsed,
        argv=tuple(argv),
        command_output=cmd_out,
        command_status=cmd_status,
        command_error=cmd_error,
    )


def _login_and_run(
    console: _Console, user: str, password: str, command: str, deadline: float
) -> tuple[str, int]:
    # Markers are typed with a quote inside, so the echoed command line never matches them.
    begin, end = "__VMSHIFT_BEGIN__", "__VMSHIFT_END__"
    start = len(console.buf)
    console.send(f"{user}\r")
    m = console.wait_for(re.compile(rb"[Pp]assword: ?"), start, deadline)
    console.send(f"{password}\r")
    m = console.wait_for(re.compile(rb"[#$] |Login incorrect"), m.end(), deadline)
    if m.group(0) == b"Login incorrect":
        raise TimeoutError("a shell prompt (the login was refused)")
    console.send(f"echo {begin[:5]}''{begin[5:]}; {command}; echo {end[:5]}''{end[5:]} $?\r")
    m = console.wait_for(re.compile(re.escape(end.encode()) + rb" (\d+)"), m.end(), deadline)
    status = int(m.group(1))
    text = console.buf[: m.start()].decode(errors="replace")
    body = text[text.rindex(begin) + len(begin) :]
    body = plain(body)
    return body.strip("\n") + "\n", status
