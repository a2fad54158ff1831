"""Decide whether guests and the libguestfs appliance can use KVM or must fall back to TCG.

/dev/kvm existing is not enough: in nested or emulated environments the device is there but
the CPU has no vmx/svm, and qemu then aborts ("failed to set MSR 0x10a") or hangs. So KVM is
used only when the device opens, the CPU advertises virtualisation, and a short qemu probe
starts and quits cleanly.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 20.0
# The variable that names the accelerator instead of probing. Read by the CLI (cli/main.py),
# which hands its value to force(): the library takes it as a setting, not from os.environ.
FORCE_VARIABLE = "VMSHIFT_ACCEL"
CHOICES = ("kvm", "tcg")


@dataclass(frozen=True)
class Accelerator:
    name: str  # "kvm" or "tcg"
    reason: str

    @property
    def is_kvm(self) -> bool:
        return self.name == "kvm"


def cpu_has_virtualisation(cpuinfo: str) -> bool:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            if "vmx" in flags or "svm" in flags:
                return True
    return False


def _probe_qemu_kvm() -> str | None:
    """Start qemu with KVM and quit at once; return None on success, else what went wrong."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return "qemu-system-x86_64 not installed"
    argv = [
        qemu, "-accel", "kvm", "-machine", "q35", "-cpu", "host", "-m", "64",
        "-nodefaults", "-display", "none", "-no-reboot", "-S", "-qmp", "stdio",
    ]  # fmt: skip
    commands = b'{"execute":"qmp_capabilities"}\n{"execute":"cont"}\n{"execute":"quit"}\n'
    try:
        proc = subprocess.run(
            argv, input=commands, capture_output=True, timeout=PROBE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return f"qemu with KVM did not answer within {PROBE_TIMEOUT:.0f} s"
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        return f"qemu with KVM failed: {err[-1] if err else 'exit ' + str(proc.returncode)}"
    return None


def _detect() -> Accelerator:
    if _forced:
        return _forced[0]
    dev = Path("/dev/kvm")
    if not dev.exists():
        return Accelerator("tcg", "/dev/kvm does not exist")
    if not os.access(dev, os.R_OK | os.W_OK):
        return Accelerator("tcg", "/dev/kvm is not readable and writable by this user")
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    if not cpu_has_virtualisation(cpuinfo):
        return Accelerator("tcg", "the CPU does not advertise vmx or svm")
    problem = _probe_qemu_kvm()
    if problem is not None:
        return Accelerator("tcg", problem)
    return Accelerator("kvm", "KVM probe succeeded")


_forced: list[Accelerator] = []  # at most one: the accelerator force() was given


def force(value: str | None) -> None:
    """Use the accelerator value names (kvm or tcg, any case) instead of probing; None or ""
    probes again. ValueError for any other value."""
    name = (value or "").strip().lower()
    if name and name not in CHOICES:
        raise ValueError(f"{FORCE_VARIABLE}={value}: expected one of {', '.join(CHOICES)}")
    _forced[:] = [Accelerator(name, f"set by {FORCE_VARIABLE}")] if name else []
    detect_accelerator.cache_clear()


@functools.cache
def detect_accelerator() -> Accelerator:
    """The accelerator to use for this process's appliances and VMs: the one force() was
    given, else probed once per process (a conversion is one process, fleet workers included:
    they run `vmshift convert`)."""
    accel = _detect()
    log.info("using %s acceleration (%s)", accel.name.upper(), accel.reason)
    return accel
