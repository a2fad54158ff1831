"""esx:// conversions against the vSphere simulator: the copy against curl, the bytes fetched
against the guest's used data, and the wall time against `-i vmx` of the same files.

The goals (docs/vsphere.md, issue 11): on the real Debian 12 VMware guest from the test suite,
1. the copy stage of an `esx://` conversion takes less time than `curl` takes to download the
   disk's `-flat.vmdk` from the same datastore URL (only used data should move);
2. the whole conversion fetches at most 1.1x the guest's used data from the datastore;
3. the `esx://` conversion's wall time is at most 1.3x that of `-i vmx` on the same files on
   local disk.

The bench starts govmomi's simulator (tests/vsphere/simulator.py) with an ESX model, registers
the guest as "debian12" with its flat VMDK hard-linked into the simulator's datastore (the
cached copy the integration test uses), writes a VMX that points at the same descriptor, and
runs, `--runs` times: both conversions `-o local -of qcow2` (interleaved, each run starting
with the other one) and, next to the esx:// one, `curl -k` of the flat file to /dev/null with
the API session's cookie.

- The copy stage is timed from the `--machine-readable` stage lines as they arrive: from
  `stage copy` to `stage finalize` (the output is fsync'ed by then; curl writes nothing).
- Bytes fetched: `source.fetched_bytes` of `--report` (nbdkit's log filter, the whole run).
  The bytes fetched during the copy come from the same nbdkit log (hard-linked out of
  vmshift's work directory before it is removed): the reads on the NBD connections opened
  after the last one closed before the copy stage began (qemu-img convert's own).
- Used data, two ways: the flat file's allocation on the datastore (`st_blocks * 512`), and
  the 4 KiB blocks holding a non-zero byte (copy_bench's count).

The datastore files are never written: their hash, size, allocation and mtime are compared
before and after, and a difference is a failure. Not a test: the figures go to
docs/benchmarks.md.

    .venv/bin/python -m bench.vsphere_bench [--runs 2] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from tests.conftest import sha256
from tests.guests.debian_real import BASE, MAC, _vmx, build_real_debian
from tests.integration.test_vsphere_convert import flat_copy
from tests.vsphere.simulator import (
    DATASTORE,
    ESX_DATACENTER,
    SimDisk,
    SimNic,
    Simulator,
    SimVm,
    flat_file,
    simulator,
)

from bench.copy_bench import (
    MiB,
    _first_line,
    _load,
    bench_workdir,
    machine_info,
    nonzero_bytes,
    print_report,
)
from vmshift.blockio.nbdkit_log import ReadLog, read_log
from vmshift.errors import VmshiftError
from vmshift.process import run
from vmshift.sources.vsphere_session import write_cookie

VM = "debian12"
USER = "root"
PASSWORD = "bench pass"
TIMEOUT = 2400  # seconds a conversion may take (TCG, loaded machine)

GOAL_COPY = 1.0  # esx:// copy stage time / curl's time for the flat file: below this
GOAL_FETCHED = 1.1  # bytes fetched / used data: at most this
GOAL_WALL = 1.3  # esx:// wall time / -i vmx wall time: at most this

STAGES = ("source", "appliance", "inspect", "convert", "trim", "copy", "finalize")


class BenchError(VmshiftError):
    """A conversion or a download failed, or the datastore changed."""


# --- one conversion ------------------------------------------------------------------------


@dataclass
class Conversion:
    kind: str  # esx or vmx
    seconds: float  # wall time of the vmshift command
    stages: dict[str, float]  # stage -> seconds from the start, when its line arrived
    output_bytes: int  # allocation of the qcow2 output
    fetched: dict[str, int] = field(default_factory=dict)  # --report's source.fetched_bytes
    copy_fetched: int = 0  # bytes nbdkit fetched on the copy's connections

    @property
    def copy_seconds(self) -> float:
        return self.stages["finalize"] - self.stages["copy"]

    @property
    def before_copy_seconds(self) -> float:
        return self.stages["copy"]

    @property
    def after_copy_seconds(self) -> float:
        return self.seconds - self.stages["finalize"]

    @property
    def fetched_total(self) -> int:
        return sum(self.fetched.values())


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) connection=(\d+) (\S+)")


def copy_reads(log: Path, copy_started: float) -> ReadLog:
    """The reads nbdkit logged on the connections of the copy stage.

    Everything before the copy (the appliance, `qemu-img measure`) has closed its connection
    by the time vmshift announces the copy, so the copy's connections are those opened after
    the last disconnection logged before `copy_started` (a time.time() taken when the stage
    line arrived: whether our clock reads it a little late does not matter).
    """
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    start = 0
    for n, line in enumerate(lines):
        m = _STAMP.match(line)
        if m is None or m[3] != "Disconnect":
            continue
        when = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if when < copy_started:
            start = n + 1
    ours = {m[2] for line in lines[start:] if (m := _STAMP.match(line)) and m[3] == "Connect"}
    with tempfile.NamedTemporaryFile("w", dir=log.parent.parent, suffix=".part") as part:
        part.writelines(line + "\n" for line in lines if (m := _STAMP.match(line)) and m[2] in ours)
        part.flush()
        return read_log(Path(part.name))


def convert(kind: str, argv: list[str], work: Path) -> Conversion:
    """Run `vmshift convert ARGV` into work/out, timing the stage lines as they arrive."""
    out, scratch, logs = work / "out", work / "scratch", work / "nbdkit-logs"
    for d in (out, scratch, logs):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    report = work / "report.json"
    report.unlink(missing_ok=True)
    exe = str(Path(sys.executable).parent / "vmshift")
    full = [exe, "convert", *argv, "-o", "local", "-os", str(out), "-of", "qcow2",
            "--machine-readable", "--workdir", str(scratch), "--report", str(report)]  # fmt: skip
    env = {**os.environ, "LIBGUESTFS_BACKEND": os.environ.get("LIBGUESTFS_BACKEND", "direct")}
    stages: dict[str, float] = {}
    copy_wall = 0.0
    with (work / "stderr.txt").open("w+") as err:
        started = time.monotonic()
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                now = time.monotonic() - started
                if not line.startswith("stage "):
                    continue
                stage = line.split()[1]
                stages[stage] = now
                if stage == "copy":
                    copy_wall = time.time()
                if stage == "appliance":  # the source is open: nbdkit's files exist
                    for log in scratch.glob("vmshift-*/vsphere-*"):
                        # The log filter's file and nbdkit's messages; not the socket, nor
                        # the session cookie.
                        if log.is_file() and "cookie" not in log.name:
                            os.link(log, logs / log.name)  # outlives vmshift's work dir
            proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - started
        if proc.returncode != 0 or "finalize" not in stages or "copy" not in stages:
            err.seek(0)
            tail = "\n".join(err.read().splitlines()[-15:])
            raise BenchError(f"{kind} conversion failed (exit {proc.returncode}):\n{tail}")
    outputs = [p for p in out.iterdir() if p.suffix not in (".xml", ".sh")]
    result = Conversion(kind, seconds, stages, sum(p.stat().st_blocks * 512 for p in outputs))
    result.fetched = json.loads(report.read_text())["source"]["fetched_bytes"]
    # Only the log filter's file has reads in it: the others add nothing.
    result.copy_fetched = sum(copy_reads(log, copy_wall).fetched for log in logs.iterdir())
    for d in (out, scratch, logs):
        shutil.rmtree(d, ignore_errors=True)
    return result


# --- curl ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    seconds: float
    size: int  # bytes curl received


def flat_url(sim: Simulator, descriptor: Path) -> str:
    """The datastore's HTTPS file URL of the VM's -flat.vmdk, as vmshift reads it."""
    path = quote(f"{VM}/{flat_file(descriptor).name}")
    query = urlencode({"dcPath": ESX_DATACENTER, "dsName": DATASTORE})
    return f"{sim.url.removesuffix('/sdk')}/folder/{path}?{query}"


def download(sim: Simulator, url: str, work: Path) -> Download:
    """curl -k of url to /dev/null with a fresh API session's cookie (kept off the command
    line: curl reads the header from a file)."""
    from pyVim.connect import Disconnect

    si = sim.connect()
    try:
        cookie, header = work / "cookie", work / "cookie-header"
        write_cookie(cookie, si)
        header.write_text(f"Cookie: {cookie.read_text().strip()}\n")
        header.chmod(0o600)
        argv = ["curl", "-k", "-sS", "--fail", "-H", f"@{header}", "-o", "/dev/null",
                "-w", "%{size_download}", url]  # fmt: skip
        started = time.perf_counter()
        proc = run(argv, timeout=TIMEOUT)
        seconds = time.perf_counter() - started
    finally:
        Disconnect(si)
        for f in ("cookie", "cookie-header"):
            (work / f).unlink(missing_ok=True)
    return Download(seconds, int(proc.stdout.decode().strip()))


# --- the datastore -------------------------------------------------------------------------


@dataclass(frozen=True)
class UsedData:
    flat_size: int  # the disk's virtual size (the -flat.vmdk's length)
    allocated: int  # st_blocks * 512 of the -flat.vmdk
    nonzero: int  # bytes in 4 KiB blocks holding a non-zero byte


def fingerprint(paths: Sequence[Path]) -> dict[str, tuple[str, int, int, int]]:
    """What would show a write: hash, size, allocation and mtime of each file."""
    out = {}
    for p in paths:
        st = p.stat()
        out[str(p)] = (sha256(p), st.st_size, st.st_blocks, st.st_mtime_ns)
    return out


def write_vmx(where: Path, descriptor: Path) -> Path:
    """The guest's VMX as its builder writes it, in a directory of its own beside symbolic
    links to the datastore's descriptor and -flat file (vmshift wants a VM's files together,
    and links leave the datastore untouched)."""
    where.mkdir(parents=True, exist_ok=True)
    for f in (descriptor, flat_file(descriptor)):
        (where / f.name).unlink(missing_ok=True)
        (where / f.name).symlink_to(f)
    vmx = where / f"{BASE.name}.vmx"
    vmx.write_text(_vmx(BASE, descriptor.name))
    return vmx


# --- the runs ------------------------------------------------------------------------------


@dataclass
class Run:
    esx: Conversion
    vmx: Conversion
    curl: Download
    esx_first: bool
    load: str  # load average after the run


def bench(sim: Simulator, descriptor: Path, runs: int, work: Path) -> list[Run]:
    password = work / "password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    vmx = write_vmx(work / "vmx-files", descriptor)
    url = flat_url(sim, descriptor)
    esx_argv = ["-ic", sim.uri(), VM, "-ip", str(password)]
    vmx_argv = ["-i", "vmx", str(vmx)]
    done: list[Run] = []
    for n in range(runs):
        esx_first = n % 2 == 0  # alternate which goes first, against load drift
        results: dict[str, Conversion] = {}
        curl: Download | None = None
        for kind in ("esx", "vmx") if esx_first else ("vmx", "esx"):
            argv = esx_argv if kind == "esx" else vmx_argv
            results[kind] = convert(kind, argv, work / kind)
            c = results[kind]
            print(
                f"run {n + 1}/{runs}  {kind}: {c.seconds:6.1f} s, copy {c.copy_seconds:5.1f} s"
                + (f", fetched {c.fetched_total / MiB:.1f} MiB "
                   f"({c.copy_fetched / MiB:.1f} MiB in the copy)" if kind == "esx" else ""),
                file=sys.stderr,
                flush=True,
            )  # fmt: skip
            if kind == "esx":  # curl right after the esx:// copy, on the same cache state
                curl = download(sim, url, work)
                print(
                    f"run {n + 1}/{runs}  curl: {curl.seconds:6.1f} s, {curl.size / MiB:.1f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
        assert curl is not None
        done.append(Run(results["esx"], results["vmx"], curl, esx_first, _load()))
    return done


# --- the report ----------------------------------------------------------------------------


def _conversion_row(c: Conversion) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seconds": round(c.seconds, 1),
        "before_copy_seconds": round(c.before_copy_seconds, 1),
        "copy_seconds": round(c.copy_seconds, 2),
        "after_copy_seconds": round(c.after_copy_seconds, 1),
        "stages": {k: round(v, 2) for k, v in c.stages.items()},
        "output_bytes": c.output_bytes,
    }
    if c.kind == "esx":
        row["fetched_bytes"] = c.fetched
        row["copy_fetched_bytes"] = c.copy_fetched
        row["copy_mib_s"] = round(c.copy_fetched / MiB / c.copy_seconds, 1)
    return row


def summarise(runs: Sequence[Run], used: UsedData) -> dict[str, Any]:
    esx = [r.esx for r in runs]
    vmx = [r.vmx for r in runs]
    curls = [r.curl for r in runs]
    best_copy = min(esx, key=lambda c: c.copy_seconds)
    best_curl = min(curls, key=lambda d: d.seconds)
    copy_ratio = best_copy.copy_seconds / best_curl.seconds
    copy_paired = statistics.median(r.esx.copy_seconds / r.curl.seconds for r in runs)
    fetched = max(c.fetched_total for c in esx)  # the worst run
    wall_best = min(c.seconds for c in esx) / min(c.seconds for c in vmx)
    wall_paired = statistics.median(r.esx.seconds / r.vmx.seconds for r in runs)
    return {
        "copy": {
            "best_copy_seconds": round(best_copy.copy_seconds, 2),
            "copy_fetched_bytes": best_copy.copy_fetched,
            "copy_mib_s": round(best_copy.copy_fetched / MiB / best_copy.copy_seconds, 1),
            "best_curl_seconds": round(best_curl.seconds, 2),
            "curl_bytes": best_curl.size,
            "curl_mib_s": round(best_curl.size / MiB / best_curl.seconds, 1),
            "ratio": round(copy_ratio, 3),
            "paired_ratio_median": round(copy_paired, 3),
            "goal": f"< {GOAL_COPY}",
            "met": copy_ratio < GOAL_COPY and copy_paired < GOAL_COPY,
        },
        "fetched": {
            "fetched_bytes_max": fetched,
            "fetched_bytes_runs": [c.fetched_total for c in esx],
            "vs_allocated": round(fetched / used.allocated, 3),
            "vs_nonzero": round(fetched / used.nonzero, 3),
            "goal": f"<= {GOAL_FETCHED}",
            "met": fetched <= GOAL_FETCHED * min(used.allocated, used.nonzero),
        },
        "wall": {
            "best_esx_seconds": round(min(c.seconds for c in esx), 1),
            "best_vmx_seconds": round(min(c.seconds for c in vmx), 1),
            "ratio_best": round(wall_best, 3),
            "paired_ratio_median": round(wall_paired, 3),
            "goal": f"<= {GOAL_WALL}",
            "met": wall_paired <= GOAL_WALL,
        },
    }


def _phases(c: dict[str, Any]) -> str:
    return (
        f"{c['seconds']:.1f} | {c['before_copy_seconds']:.1f} | {c['copy_seconds']:.2f} | "
        f"{c['after_copy_seconds']:.1f}"
    )


def render(report: dict[str, Any]) -> str:
    used = report["used"]
    s = report["summary"]
    lines = [
        f"disk: {used['flat_size'] / MiB:.0f} MiB -flat.vmdk; used data: "
        f"{used['allocated'] / MiB:.1f} MiB allocated on the datastore, "
        f"{used['nonzero'] / MiB:.1f} MiB in non-zero 4 KiB blocks",
        f"runs: {report['runs']}; load average before/after: "
        f"{report['load_before']} / {report['load_after']}",
        "",
        "| run | first | input | wall s | before copy s | copy s | after copy s | "
        "fetched MiB (copy) | copy MiB/s | curl s | curl MiB/s |",
        "|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for n, r in enumerate(report["runs_detail"], 1):
        first = "esx://" if r["esx_first"] else "-i vmx"
        esx, vmx, curl = r["esx"], r["vmx"], r["curl"]
        lines.append(
            f"| {n} | {first} | esx:// | {_phases(esx)} | "
            f"{sum(esx['fetched_bytes'].values()) / MiB:.1f} "
            f"({esx['copy_fetched_bytes'] / MiB:.1f}) | {esx['copy_mib_s']:.0f} | "
            f"{curl['seconds']:.2f} | {curl['size'] / MiB / curl['seconds']:.0f} |"
        )
        lines.append(f"| {n} | {first} | -i vmx | {_phases(vmx)} | - | - | - | - |")
    copy, fetched, wall = s["copy"], s["fetched"], s["wall"]
    verdict = {True: "met", False: "NOT met"}
    lines += [
        "",
        f"copy: esx:// copy stage {copy['best_copy_seconds']:.2f} s "
        f"({copy['copy_fetched_bytes'] / MiB:.1f} MiB fetched, {copy['copy_mib_s']} MiB/s) "
        f"vs curl {copy['best_curl_seconds']:.2f} s ({copy['curl_bytes'] / MiB:.0f} MiB, "
        f"{copy['curl_mib_s']} MiB/s): {copy['ratio']:.2f}x (median of the per-run ratios "
        f"{copy['paired_ratio_median']:.2f}x; goal {copy['goal']}: {verdict[copy['met']]})",
        f"fetched: {fetched['fetched_bytes_max'] / MiB:.1f} MiB (the larger run) = "
        f"{fetched['vs_allocated']:.3f}x allocated, {fetched['vs_nonzero']:.3f}x non-zero "
        f"blocks (goal {fetched['goal']}: {verdict[fetched['met']]})",
        f"wall: esx:// {wall['best_esx_seconds']:.1f} s vs -i vmx {wall['best_vmx_seconds']:.1f} s"
        f" (best): {wall['ratio_best']:.2f}x; median of the per-run ratios "
        f"{wall['paired_ratio_median']:.2f}x (goal {wall['goal']}: {verdict[wall['met']]})",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.vsphere_bench",
        description="esx:// conversions from the vSphere simulator: copy vs curl, bytes "
        "fetched vs used data, wall time vs -i vmx.",
    )
    p.add_argument("--runs", type=int, default=2, help="pairs of conversions (default 2)")
    p.add_argument(
        "--workdir",
        type=Path,
        help="where outputs and vmshift's work directories go, emptied after each "
        "conversion (default: a temporary directory under /var/tmp, removed at the end)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [p for p in ("curl", "nbdkit", "qemu-img") if shutil.which(p) is None]
    if missing:
        print(f"vsphere_bench: not installed: {', '.join(missing)}", file=sys.stderr)
        return 1
    work, keep = bench_workdir(args.workdir)
    try:
        print("building or finding the cached Debian guest ...", file=sys.stderr, flush=True)
        guest = build_real_debian()
        descriptor = flat_copy(guest.disks[0], "vmdk", BASE.name)
        flat = flat_file(descriptor)
        used = UsedData(flat.stat().st_size, flat.stat().st_blocks * 512, nonzero_bytes(flat))
        with simulator("esx", USER, PASSWORD) as sim:
            sim.add_vm(SimVm(VM, (SimDisk(descriptor),), (SimNic(MAC),)))
            folder = sim.datastore_dir / VM
            stored = [folder / descriptor.name, folder / flat.name]
            before = fingerprint(stored)
            load_before = _load()
            runs = bench(sim, folder / descriptor.name, args.runs, work)
            load_after = _load()
            if fingerprint(stored) != before:
                raise BenchError("the datastore's files changed")
        report: dict[str, Any] = {
            "date": datetime.date.today().isoformat(),
            "machine": {
                **machine_info(work),
                "nbdkit": _first_line(["nbdkit", "--version"]),
                "curl": _first_line(["curl", "--version"]),
            },
            "used": asdict(used),
            "runs": args.runs,
            "load_before": load_before,
            "load_after": load_after,
            "runs_detail": [
                {
                    "esx_first": r.esx_first,
                    "esx": _conversion_row(r.esx),
                    "vmx": _conversion_row(r.vmx),
                    "curl": {"seconds": round(r.curl.seconds, 2), "size": r.curl.size},
                    "load_after": r.load,
                }
                for r in runs
            ],
            "summary": summarise(runs, used),
        }
    except VmshiftError as exc:
        print(f"vsphere_bench: {exc}", file=sys.stderr)
        return 1
    except pytest.skip.Exception as exc:  # the simulator cannot be built here
        print(f"vsphere_bench: {exc.msg}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print_report(report, render, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
