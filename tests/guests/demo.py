"""`make demo`: build the sample VMware guest (cached after the first run) and inspect it.

Later issues extend this to convert the guest and boot the result.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.guests.debian_real import build_real_debian


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def main() -> int:
    say("building the sample VMware guest: Debian 12 with open-vm-tools, pvscsi and vmxnet3")
    say("(the first run downloads packages with debootstrap and takes several minutes)")
    started = time.monotonic()
    guest = build_real_debian()
    say(f"sample guest ready in {time.monotonic() - started:.0f} s: {guest.extra['vmx']}")
    vmshift = Path(sys.executable).parent / "vmshift"
    cmd = [str(vmshift), "-v", "inspect", *map(str, guest.disks)]
    say("running: " + " ".join(cmd))
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
