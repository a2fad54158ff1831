"""Full conversion of the real Debian VMware guest: vmshift vs Debian's virt-v2v, in one run.

    .venv/bin/python -m bench.v2v_bench [--workdir DIR] [--no-boot]

Both convert the same VMX to `-o local -of qcow2` on this machine (TCG here when KVM is not
usable: both tools see the same acceleration). Prints each tool's wall time, the ratio, and
whether each result boots to a login prompt on the devices its own XML names. Not a test: the
figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.guests.boot import boot_to_login, devices_from_xml
from tests.guests.debian_real import build_real_debian


@dataclass
class Outcome:
    tool: str
    seconds: float
    ok: bool
    boot: str = "-"
    bus: str = "-"
    nic: str = "-"


def _boot(outdir: Path) -> tuple[str, str, str]:
    xml = next(outdir.glob("*.xml")).read_text()
    disks = [p for p in outdir.iterdir() if p.suffix not in (".xml", ".sh")]
    dev = devices_from_xml(xml)
    result = boot_to_login(
        sorted(disks)[0], disk_bus=dev.disk_bus, nic_model=dev.nic_model, mac=dev.mac
    )
    return str(result.outcome), dev.disk_bus, dev.nic_model or "no NIC"


def run_tool(tool: str, argv: list[str], outdir: Path, boot: bool) -> Outcome:
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        print(f"{tool} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return Outcome(tool, seconds, ok=False)
    out = Outcome(tool, seconds, ok=True)
    if boot:
        out.boot, out.bus, out.nic = _boot(outdir)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--no-boot", action="store_true", help="skip booting the results")
    args = parser.parse_args()
    guest = build_real_debian()
    vmx = guest.extra["vmx"]
    work = Path(tempfile.mkdtemp(prefix="vmshift-bench-", dir=args.workdir))
    tcg = not _kvm_ok()
    try:
        results = []
        ours = work / "vmshift"
        ours.mkdir()
        vmshift = str(Path(sys.executable).parent / "vmshift")
        results.append(run_tool(
            "vmshift",
            [vmshift, "-q", "convert", "-i", "vmx", str(vmx), "-o", "local", "-os", str(ours),
             "-of", "qcow2"],
            ours, not args.no_boot,
        ))  # fmt: skip
        theirs = work / "virt-v2v"
        theirs.mkdir()
        if shutil.which("virt-v2v") is None:
            print("virt-v2v is not installed (apt-get install virt-v2v)", file=sys.stderr)
        else:
            if tcg:
                os.environ["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
            results.append(run_tool(
                "virt-v2v",
                ["virt-v2v", "-i", "vmx", str(vmx), "-o", "local", "-os", str(theirs),
                 "-of", "qcow2"],
                theirs, not args.no_boot,
            ))  # fmt: skip
        print(f"{'tool':10} {'ok':4} {'seconds':>8} {'boots':>8} {'disk bus':>10} {'nic':>15}")
        for r in results:
            print(f"{r.tool:10} {'yes' if r.ok else 'NO':4} {r.seconds:8.1f} {r.boot:>8} "
                  f"{r.bus:>10} {r.nic:>15}")  # fmt: skip
        if len(results) == 2 and all(r.ok for r in results):
            print(
                f"wall-time ratio vmshift/virt-v2v: {results[0].seconds / results[1].seconds:.2f}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _kvm_ok() -> bool:
    from vmshift.guest.accel import detect_accelerator

    return detect_accelerator().is_kvm


if __name__ == "__main__":
    sys.exit(main())
