"""The options of the checks a conversion can end with: --verify-boot (boot the result from
what the target describes) and --no-verify-copy (skip the read-back of each copied disk)."""

from __future__ import annotations

import argparse
import os

from vmshift.errors import UsageError
from vmshift.guest.accel import detect_accelerator
from vmshift.targets.export_domain import is_nfs_spec
from vmshift.targets.libvirt import DEFAULT_URI as LIBVIRT_DEFAULT_URI
from vmshift.verify.boot import VerifyOptions


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--verify-boot",
        action="store_true",
        help="-o local/libvirt: boot the result from its XML (throwaway overlays, no "
        "network), -o rhv: boot the devices its OVF names, -o qemu: run its script with "
        "-snapshot, and wait for the login prompt and static addresses; exit 3 if it fails",
    )
    p.add_argument(
        "--verify-boot-conn",
        metavar="URI",
        help="the libvirt to boot it on (default: -o libvirt's -oc; else qemu:///system "
        "as root, qemu:///session otherwise)",
    )
    p.add_argument(
        "--verify-boot-timeout",
        type=float,
        metavar="SECONDS",
        help="how long the guest may take to its login prompt (default 600, 1800 without KVM)",
    )
    p.add_argument(
        "--no-verify-copy",
        dest="verify_copy",
        action="store_false",
        help="do not compare each copied disk with the converted disk it came from "
        "(compared by default)",
    )


def boot_options(args: argparse.Namespace, output: str) -> VerifyOptions | None:
    """--verify-boot and its options; refused up front where the output cannot be booted."""
    if not args.verify_boot:
        if args.verify_boot_conn or args.verify_boot_timeout:
            raise UsageError("--verify-boot-conn and --verify-boot-timeout need --verify-boot")
        return None
    if output not in ("local", "libvirt", "qemu", "rhv"):
        raise UsageError(
            f"--verify-boot works with -o local, -o libvirt, -o qemu and -o rhv, not -o {output}"
        )
    storage = args.output_storage or ""
    if output == "rhv" and is_nfs_spec(storage):
        # The disks are booted where they are: a HOST:/PATH is mounted privately for the run
        # and unmounted when it ends, out of reach of libvirt's qemu.
        raise UsageError(
            f"--verify-boot -o rhv: -os {storage} is mounted only while vmshift writes to it; "
            "the boot check needs the export domain as a directory",
            hint=f"mount {storage} yourself and give the mount point to -os",
        )
    if output == "qemu" and args.verify_boot_conn:
        raise UsageError("--verify-boot-conn: -o qemu's guest boots from its script, not libvirt")
    conn = args.verify_boot_conn
    if conn is None and output == "libvirt":
        conn = args.output_conn or LIBVIRT_DEFAULT_URI
    if conn is None:
        conn = "qemu:///system" if os.geteuid() == 0 else "qemu:///session"
    timeout = args.verify_boot_timeout
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--verify-boot-timeout {timeout:g}: must be more than 0")
    if timeout is None:
        timeout = 600.0 if detect_accelerator().is_kvm else 1800.0
    return VerifyOptions(conn=conn, timeout=timeout)
