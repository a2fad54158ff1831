"""What the qemu on this host offers an -o qemu guest: OVMF builds and CPU models.

Firmware is found through qemu's firmware descriptors (docs/interop/firmware.json in qemu),
which say what each build does (secure boot, enrolled keys, SMM) and which machine types it
runs on; distributions without descriptors get a list of well-known paths, but only for a
firmware without secure boot: a file name does not say which keys a build has enrolled.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

from vmshift.errors import EnvironmentProblem
from vmshift.process import CommandFailed, run

QEMU = "qemu-system-x86_64"
FIRMWARE_DESCRIPTORS = (Path("/etc/qemu/firmware"), Path("/usr/share/qemu/firmware"))
# Where distributions put OVMF when they ship no descriptors: (code, vars template).
KNOWN_OVMF = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/qemu/ovmf-x86_64-code.bin", "/usr/share/qemu/ovmf-x86_64-vars.bin"),
)
# Firmware that would refuse to boot what the source booted, or needs SMM wiring.
_UNWANTED_FEATURES = {"secure-boot", "enrolled-keys", "requires-smm"}
# What secure boot needs: enforcing, with Microsoft's keys, its variables guarded by SMM.
_SECURE_FEATURES = {"secure-boot", "enrolled-keys", "requires-smm"}


def find_uefi_firmware(machine: str, secure: bool = False) -> tuple[Path, Path] | None:
    """(code, vars template) of an OVMF for machine (q35 or pc), or None: without secure boot
    by default, or (secure) enforcing it with Microsoft's keys enrolled and SMM."""
    sample = "pc-q35-99.0" if machine == "q35" else "pc-i440fx-99.0"
    files: dict[str, Path] = {}
    for folder in reversed(FIRMWARE_DESCRIPTORS):  # /etc overrides /usr/share by file name
        if folder.is_dir():
            files.update({p.name: p for p in folder.glob("*.json")})
    for fname in sorted(files):
        try:
            desc = json.loads(files[fname].read_text())
            mapping = desc["mapping"]
            if "uefi" not in desc["interface-types"] or mapping.get("device") != "flash":
                continue
            features = set(desc.get("features", []))
            if not (features >= _SECURE_FEATURES if secure else not _UNWANTED_FEATURES & features):
                continue
            if not any(
                t.get("architecture") == "x86_64"
                and any(fnmatch.fnmatch(sample, m) for m in t.get("machines", []))
                for t in desc.get("targets", [])
            ):
                continue
            code = Path(mapping["executable"]["filename"])
            varstore = Path(mapping["nvram-template"]["filename"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a broken descriptor is someone else's problem; try the next
        if code.is_file() and varstore.is_file():
            return code, varstore
    if secure:
        return None  # a file name does not say which keys a build has enrolled
    for code_s, vars_s in KNOWN_OVMF:
        if Path(code_s).is_file() and Path(vars_s).is_file():
            return Path(code_s), Path(vars_s)
    return None


def qemu_cpu_models() -> frozenset[str] | None:
    """The CPU models `qemu-system-x86_64 -cpu help` lists, or None if it cannot say."""
    try:
        out = run([QEMU, "-cpu", "help"], timeout=60).stdout.decode(errors="replace")
    except (CommandFailed, EnvironmentProblem):
        return None
    return parse_cpu_help(out)


def parse_cpu_help(text: str) -> frozenset[str]:
    """Model names from -cpu help: lines 'x86 NAME  description', up to the flag list."""
    models = set()
    for line in text.splitlines():
        if line.startswith("Recognized"):
            break
        words = line.split()
        if len(words) >= 2 and words[0] == "x86":
            models.add(words[1].strip("[]'"))
    return frozenset(models)
