"""P2V over SSH against `dd | ssh` of the same disk (issue 13).

The "physical machine" is this host with the real Debian test guest's raw disk on a
read-only loop device; the server is the test lab's (tests/integration/p2v_lab.py: a real
sshd on 127.0.0.1 with a non-root conversion user). Per run, interleaved:

- vmshift-p2v unattended, with and without compression: the whole conversion's wall time,
  the copy stage's time (from its stage line to the next), and the bytes on the wire
  (iptables counters on the sshd port: both directions, TCP/IP headers included);
- `dd if=DISK bs=4M | ssh host 'cat > /dev/null'` of the whole disk, with and without -C:
  what sending the disk plainly costs on the same link (a second sshd without the forced
  command, same machine).

Used data is what e2fsprogs counts in use (dumpe2fs), plus the area before the partition.

    .venv/bin/python -m bench.p2v_bench [--runs 2]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.guests.debian_real import build_real_debian
from tests.integration.p2v_lab import loop_device, p2v_server, used_data, wire_counter
from tests.integration.test_vsphere_convert import flat_copy
from tests.sshd_fixture import private_sshd

MIB = 1 << 20


@dataclass(frozen=True)
class Sample:
    what: str
    seconds: float
    copy_seconds: float | None
    wire: int


def _stage_times(out: str) -> dict[str, float]:
    """The client's console lines "[  139.3] copy: ..." -> {stage: seconds}."""
    return {m[2]: float(m[1]) for m in re.finditer(r"^\[\s*([\d.]+)\] (\w+): ", out, re.M)}


def p2v_run(disk: Path, compress: bool, tag: str) -> Sample:
    exe = Path(sys.executable).parent / "vmshift-p2v"
    with p2v_server(None) as server:
        words = server.cmdline(
            f"p2v.disks={disk}", f"p2v.name=bench-{tag}", "p2v.memory=1G", "p2v.vcpus=1",
            f"p2v.compress={'on' if compress else 'off'}",
        )  # fmt: skip
        with wire_counter(server.sshd.port) as wire:
            start = time.monotonic()
            proc = subprocess.run([str(exe), "--cmdline", words], capture_output=True,
                                  text=True, check=False)  # fmt: skip
            seconds = time.monotonic() - start
        if proc.returncode != 0:
            raise SystemExit(f"p2v run failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    stages = _stage_times(proc.stdout)
    copy = stages["finalize"] - stages["copy"] if {"copy", "finalize"} <= stages.keys() else None
    label = "vmshift-p2v, compressed" if compress else "vmshift-p2v, plain"
    return Sample(label, seconds, copy, sum(wire.values()))


def dd_run(disk: Path, sshd_root: Path, compress: bool) -> Sample:
    with private_sshd(sshd_root) as sshd:
        ssh = ["ssh", "-p", str(sshd.port), "-i", str(sshd.identity), "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
               "-o", f"Compression={'yes' if compress else 'no'}", "root@127.0.0.1",
               "cat > /dev/null"]  # fmt: skip
        with wire_counter(sshd.port) as wire:
            start = time.monotonic()
            dd = subprocess.Popen(["dd", f"if={disk}", "bs=4M", "status=none"],
                                  stdout=subprocess.PIPE)  # fmt: skip
            subprocess.run(ssh, stdin=dd.stdout, check=True)
            dd.wait()
            seconds = time.monotonic() - start
    label = "dd \\| ssh -C" if compress else "dd \\| ssh"  # escaped: a Markdown table cell
    return Sample(label, seconds, seconds, sum(wire.values()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/p2v-bench"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    descriptor = flat_copy(build_real_debian().disks[0], "vmdk", "debian12-vmware")
    image = descriptor.with_name(descriptor.stem + "-flat.vmdk")
    used = used_data(image)
    samples: list[Sample] = []
    with loop_device(image) as disk:
        for run in range(args.runs):
            order = [True, False] if run % 2 == 0 else [False, True]
            for compress in order:
                samples.append(p2v_run(disk, compress, f"{run}{int(compress)}"))
                samples.append(dd_run(disk, args.workdir / f"sshd-{run}-{int(compress)}", compress))
                print(samples[-2], samples[-1], file=sys.stderr)
    size = image.stat().st_size
    print(
        f"disk {size / MIB:.0f} MiB, used data {used / MIB:.1f} MiB; runs: {args.runs}, best kept"
    )
    print("| what | wall s | copy s | on the wire MiB | wire / used |")
    print("|---|--:|--:|--:|--:|")
    for what in dict.fromkeys(s.what for s in samples):
        best = min((s for s in samples if s.what == what), key=lambda s: s.seconds)
        copy = f"{best.copy_seconds:.1f}" if best.copy_seconds is not None else "-"
        print(f"| {what} | {best.seconds:.1f} | {copy} | {best.wire / MIB:.1f} | "
              f"{best.wire / used:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
