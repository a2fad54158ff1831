"""`vmshift p2v-image -o p2v.iso`: the P2V boot medium (docs/p2v-image.md).

A hybrid ISO for CD or USB stick (BIOS and UEFI), and with --kernel-initrd the same kernel
and initrd for PXE, built from Debian bookworm with `vmshift-p2v` preinstalled. It starts the
console UI, or converts unattended when the kernel command line names p2v.server=.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from vmshift.p2v.image import ImageRequest, build_image

HELP = "build the P2V boot image (hybrid ISO for CD/USB, kernel and initrd for PXE)"
MIB = 1 << 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="the ISO to write")
    p.add_argument(
        "--cmdline",
        default="",
        metavar="WORDS",
        help="add these words to the kernel command line, e.g. 'p2v.server=HOST p2v.profile=P' "
        "(a preseeded medium converts unattended)",
    )
    p.add_argument(
        "--inject-ssh-identity",
        type=Path,
        metavar="KEY",
        help="put this private key in the image as /etc/vmshift-p2v/id (and add "
        "p2v.identity=file:///etc/vmshift-p2v/id unless --cmdline names one)",
    )
    p.add_argument(
        "--kernel-initrd",
        type=Path,
        metavar="DIR",
        help="also write vmlinuz, initrd.img and cmdline into DIR, for PXE",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp"),
        metavar="DIR",
        help="where the build works (about 1 GiB, removed at the end; default: /var/tmp)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="keep the Debian part and the downloaded packages here: later builds (another "
        "--cmdline or key, a new vmshift) take seconds",
    )
    p.add_argument("--mirror", default="http://deb.debian.org/debian", metavar="URL",
                   help="the Debian mirror (default: %(default)s)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    quiet = getattr(args, "quiet", False)

    def progress(line: str) -> None:
        if not quiet:
            print(f"vmshift: p2v-image: {line}", flush=True)

    request = ImageRequest(
        output=args.output,
        cmdline=args.cmdline,
        identity=args.inject_ssh_identity,
        kernel_initrd=args.kernel_initrd,
        workdir=args.workdir,
        cache=args.cache_dir,
        mirror=args.mirror,
        is_root=os.geteuid() == 0,
    )
    result = build_image(request, progress)
    system = result.system.facts
    progress(
        f"kernel {system['kernel']} {result.kernel_bytes / MIB:.1f} MiB, initrd "
        f"{result.initrd_bytes / MIB:.1f} MiB ({system['modules']} modules, Python "
        f"{system['python']}), in {result.seconds:.0f} s"
    )
    if result.iso is not None:
        print(f"vmshift: {result.iso}: {result.iso_bytes / MIB:.1f} MiB")
    if result.words:
        shown = [w.split("=", 1)[0] + "=..." if w.startswith("p2v.password=") else w
                 for w in result.words]  # fmt: skip
        progress("kernel command line adds: " + " ".join(shown))
    return 0
