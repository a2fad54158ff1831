"""Full conversions, vmshift against Debian's virt-v2v on the same guest, in pairs (issue 15).

    .venv/bin/python -m bench.v2v_bench [--pairs 3] [--guest debian|rhel|windows|all]
                                        [--workdir DIR] [--no-boot]

Each pair converts the guest once with each tool, back to back, to `-o local -of qcow2`; the
order alternates from pair to pair (vmshift first, then virt-v2v first) so that a drift in the
machine's load does not favour one tool. Printed: each pair's wall times and ratio, the medians,
and where each tool's time went (median and every pair): vmshift's stage lines
(--machine-readable) with its conversion steps (--report's timings), virt-v2v's own stage lines.
Both see the same acceleration (TCG here when KVM is not usable).

Guests:
    debian   the real Debian 12 VMware guest (-i vmx), tests/guests/debian_real.py
    rhel     the phony RHEL 9 guest (-i disk), tests/guests/linux.py (its stub rpm answers
             the `rpm -ql` of kernel packages virt-v2v asks, and it has /etc/modprobe.d)
    windows  the phony Windows Server 2022 guest (-i disk), tests/guests/windows.py, with the
             stand-in virtio-win tree and rhsrvany.exe given to both tools

Only the real Debian guest boots: with boot on, the first pair's results are booted to a login
prompt on the devices each tool's XML names (not timed). Not a test: the figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.guests.boot import boot_to_login, devices_from_xml

from bench.v2v_stages import (
    Span,
    report_steps,
    spans,
    v2v_marks,
    v2v_table,
    vmshift_marks,
    vmshift_table,
)

GUESTS = ("debian", "rhel", "windows")


@dataclass(frozen=True)
class BenchGuest:
    name: str
    what: str
    source: list[str]  # the input options, the same for both tools
    vmshift_args: list[str] = field(default_factory=list)
    vmshift_env: dict[str, str] = field(default_factory=dict)
    v2v_env: dict[str, str] = field(default_factory=dict)
    boots: bool = False  # a real guest: its results can be booted


@dataclass
class Run:
    tool: str
    seconds: float
    ok: bool
    stages: list[Span] = field(default_factory=list)
    steps: list[Span] = field(default_factory=list)  # vmshift's conversion steps
    error: str = ""
    boot: str = "-"


def make_guest(name: str, aux: Path) -> BenchGuest:
    """The guest's inputs; aux holds what a phony guest needs beside it (virtio-win, rhsrvany)."""
    if name == "debian":
        from tests.guests.debian_real import build_real_debian

        vmx = build_real_debian().extra["vmx"]
        return BenchGuest(name, "real Debian 12 VMware guest", ["-i", "vmx", str(vmx)], boots=True)
    if name == "rhel":
        from tests.guests.linux import build_all

        disks = build_all()["rhel"].disks
        return BenchGuest(name, "phony RHEL 9 guest", ["-i", "disk", *map(str, disks)])
    from tests.guests.virtio_win import build_tree
    from tests.guests.windows import SUBSYSTEM_CONSOLE, pe_image
    from tests.guests.windows import build_all as build_windows

    disks = build_windows()["win2022"].disks
    tree = build_tree(aux / "virtio-win")
    tools = aux / "virt-tools"  # virt-v2v looks for rhsrvany.exe here ($VIRT_TOOLS_DATA_DIR)
    tools.mkdir()
    srvany = tools / "rhsrvany.exe"
    srvany.write_bytes(pe_image("i386", SUBSYSTEM_CONSOLE))
    return BenchGuest(
        name,
        "phony Windows Server 2022 guest, stand-in virtio-win",
        ["-i", "disk", *map(str, disks)],
        vmshift_args=["--virtio-win", str(tree)],
        vmshift_env={"VMSHIFT_FIRSTBOOT_TOOL": str(srvany)},
        v2v_env={"VIRTIO_WIN": str(tree), "VIRT_TOOLS_DATA_DIR": str(tools)},
    )


def _timed(
    argv: list[str], env: dict[str, str], log: Path
) -> tuple[float, int, list[tuple[float, str]]]:
    """Run argv; its stdout lines with the second each arrived, stderr to log."""
    lines: list[tuple[float, str]] = []
    with log.open("w") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - started, line.rstrip("\n")))
        rc = proc.wait()
        return time.monotonic() - started, rc, lines


def _failure(log: Path) -> str:
    """The tool's error lines, else its last lines."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return " | ".join(errors[-2:] or lines[-3:])[-300:]


def run_vmshift(guest: BenchGuest, out: Path, env: dict[str, str]) -> Run:
    exe = str(Path(sys.executable).parent / "vmshift")
    report = out.parent / f"{out.name}-report.json"
    argv = [exe, "convert", "--machine-readable", "--report", str(report), *guest.source,
            *guest.vmshift_args, "-o", "local", "-os", str(out), "-of", "qcow2"]  # fmt: skip
    seconds, rc, lines = _timed(argv, {**env, **guest.vmshift_env}, out.parent / "vmshift.log")
    if rc != 0:
        return Run("vmshift", seconds, False, error=_failure(out.parent / "vmshift.log"))
    steps = report_steps(json.loads(report.read_text()))
    return Run("vmshift", seconds, True, spans(vmshift_marks(lines), seconds), steps)


def run_v2v(guest: BenchGuest, out: Path, env: dict[str, str]) -> Run:
    argv = ["virt-v2v", *guest.source, "-o", "local", "-os", str(out), "-of", "qcow2"]
    full = {**env, **guest.v2v_env}
    if not _kvm_ok():
        full["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"  # vmshift decides the same itself
    seconds, rc, lines = _timed(argv, full, out.parent / "virt-v2v.log")
    if rc != 0:
        return Run("virt-v2v", seconds, False, error=_failure(out.parent / "virt-v2v.log"))
    marks = v2v_marks("\n".join(line for _, line in lines))
    return Run("virt-v2v", seconds, True, spans(marks, seconds))


def _boot(outdir: Path) -> str:
    xml = next(outdir.glob("*.xml")).read_text()
    disks = [p for p in outdir.iterdir() if p.suffix not in (".xml", ".sh")]
    dev = devices_from_xml(xml)
    result = boot_to_login(
        sorted(disks)[0], disk_bus=dev.disk_bus, nic_model=dev.nic_model, mac=dev.mac
    )
    return f"{result.outcome} ({dev.disk_bus}, {dev.nic_model or 'no NIC'})"


def bench_guest(guest: BenchGuest, pairs: int, work: Path, boot: bool) -> None:
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    tools: dict[str, Callable[[BenchGuest, Path, dict[str, str]], Run]] = {
        "vmshift": run_vmshift,
        "virt-v2v": run_v2v,
    }
    done: list[tuple[Run, Run]] = []
    for n in range(pairs):
        order = ["vmshift", "virt-v2v"] if n % 2 == 0 else ["virt-v2v", "vmshift"]
        runs: dict[str, Run] = {}
        for tool in order:
            where = work / f"{guest.name}-p{n + 1}-{tool}"
            out = where / "out"
            out.mkdir(parents=True)
            runs[tool] = tools[tool](guest, out, env)
            if boot and guest.boots and n == 0 and runs[tool].ok:
                runs[tool].boot = _boot(out)
            shutil.rmtree(out, ignore_errors=True)  # the outputs are GBs: keep only the logs
        done.append((runs["vmshift"], runs["virt-v2v"]))
        print(f"  pair {n + 1}: {_pair_line(order, *done[-1])}", flush=True)
    _print_guest(guest, done)


def _pair_line(order: list[str], ours: Run, theirs: Run) -> str:
    ratio = f"{ours.seconds / theirs.seconds:.2f}" if ours.ok and theirs.ok else "-"
    return (f"{order[0]} first: vmshift {ours.seconds:.1f} s, virt-v2v {theirs.seconds:.1f} s, "
            f"ratio {ratio}")  # fmt: skip


def _print_guest(guest: BenchGuest, done: list[tuple[Run, Run]]) -> None:
    print(f"\n== {guest.name}: {guest.what}, {len(done)} pair(s)")
    print(f"{'pair':6} {'first':9} {'vmshift s':>10} {'virt-v2v s':>11} {'ratio':>6}")
    ratios: list[float] = []
    for n, (ours, theirs) in enumerate(done):
        first = "vmshift" if n % 2 == 0 else "virt-v2v"
        ok = ours.ok and theirs.ok
        if ok:
            ratios.append(ours.seconds / theirs.seconds)
        cells = [f"{r.seconds:10.1f}" if r.ok else f"{'FAILED':>10}" for r in (ours, theirs)]
        ratio = f"{ratios[-1]:6.2f}" if ok else f"{'-':>6}"
        print(f"{n + 1:<6} {first:9} {cells[0]} {cells[1]:>11} {ratio}")
    mine = [o.seconds for o, _ in done if o.ok]
    theirs_s = [t.seconds for _, t in done if t.ok]
    med = [f"{statistics.median(v):10.1f}" if v else f"{'-':>10}" for v in (mine, theirs_s)]
    ratio_med = f"{statistics.median(ratios):6.2f}" if ratios else f"{'-':>6}"
    print(f"{'median':16} {med[0]} {med[1]:>11} {ratio_med}")
    for ours, theirs in done[:1]:
        for r in (ours, theirs):
            if r.boot != "-":
                print(f"{r.tool} result boots: {r.boot}")
    for r in (run for pair in done for run in pair if not run.ok):
        print(f"{r.tool} failed: {r.error}")
    ok_ours = [o for o, _ in done if o.ok]
    if ok_ours:
        print()
        print("\n".join(vmshift_table([o.stages for o in ok_ours], [o.steps for o in ok_ours])))
    ok_theirs = [t for _, t in done if t.ok]
    if ok_theirs:
        print()
        print("\n".join(v2v_table([t.stages for t in ok_theirs])))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs (default 3)")
    parser.add_argument("--guest", choices=[*GUESTS, "all"], default="debian")
    parser.add_argument("--workdir", type=Path, default=None, help="where outputs go")
    parser.add_argument("--keep", action="store_true", help="keep the logs and reports")
    parser.add_argument("--no-boot", action="store_true", help="skip booting the results")
    args = parser.parse_args()
    if shutil.which("virt-v2v") is None:
        print("virt-v2v is not installed (apt-get install virt-v2v)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="vmshift-v2v-bench-", dir=args.workdir))
    accel = "KVM" if _kvm_ok() else "TCG"
    version = subprocess.run(
        ["virt-v2v", "--version"], capture_output=True, text=True, check=False
    ).stdout
    print(f"{accel}, {version.strip()}, work in {work}")
    try:
        for name in GUESTS if args.guest == "all" else (args.guest,):
            aux = work / f"{name}-aux"
            aux.mkdir()
            guest = make_guest(name, aux)
            print(f"{name}: {guest.what}", flush=True)
            bench_guest(guest, args.pairs, work, boot=not args.no_boot)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _kvm_ok() -> bool:
    from vmshift.guest.accel import detect_accelerator

    return detect_accelerator().is_kvm


if __name__ == "__main__":
    sys.exit(main())
