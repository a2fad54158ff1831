"""`make demo`: the main job on a built-in sample.

Builds the sample VMware guest (Debian 12 with open-vm-tools on pvscsi/vmxnet3; cached after the
first run), inspects it, converts it with `vmshift convert -i vmx ... -o local`, and boots the
result under qemu on the devices the output XML names, waiting for the login prompt.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.guests.boot import boot_to_login, devices_from_xml
from tests.guests.debian_real import build_real_debian

OUT = Path("demo-out")

# libvirt XML bus -> the boot helper's bus names.


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def main() -> int:
    say("building the sample VMware guest: Debian 12 with open-vm-tools, pvscsi and vmxnet3")
    say("(the first run downloads packages with debootstrap and takes several minutes)")
    started = time.monotonic()
    guest = build_real_debian()
    vmx = guest.extra["vmx"]
    say(f"sample guest ready in {time.monotonic() - started:.0f} s: {vmx}")
    vmshift = str(Path(sys.executable).parent / "vmshift")

    say(f"running: vmshift inspect {guest.disks[0]}")
    if subprocess.call([vmshift, "inspect", str(guest.disks[0])]) != 0:
        return 1

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    cmd = [vmshift, "convert", "-i", "vmx", str(vmx), "-o", "local", "-os", str(OUT),
           "-of", "qcow2", "--network", "VM Network:default"]  # fmt: skip
    say("running: " + " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        return proc.returncode
    verdict = proc.stdout.strip().splitlines()[-1]

    xml = next(OUT.glob("*.xml")).read_text()
    disk = next(p for p in OUT.iterdir() if p.suffix != ".xml")
    dev = devices_from_xml(xml)
    say(f"booting {disk} on {dev.disk_bus} with a {dev.nic_model} NIC (TCG: a minute or two)")
    result = boot_to_login(disk, disk_bus=dev.disk_bus, nic_model=dev.nic_model, mac=dev.mac)
    if not result.reached_login:
        say(f"the converted guest did not boot: {result.outcome}\n{result.tail()}")
        return 1
    say(f"the converted guest booted to its login prompt in {result.seconds:.0f} s")
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
