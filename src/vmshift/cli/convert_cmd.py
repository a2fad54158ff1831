"""`vmshift convert`: virt-v2v's command line, the whole pipeline, and a one-line verdict."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from vmshift.blockio.progress import Event
from vmshift.cli import key_options, mode_options, verify_options
from vmshift.cli.options import memory_size
from vmshift.cli.profile_options import apply_profile, target_networks
from vmshift.cli.render import ProgressPrinter, human_size, print_source_vm
from vmshift.cli.resume_key import resume_key
from vmshift.cli.signals import GUARD
from vmshift.convert.base import ConvertOptions
from vmshift.errors import BootCheckError, UsageError
from vmshift.model.inspection import OperatingSystem
from vmshift.pipeline import ConversionResult, RunOptions, run_conversion
from vmshift.report import conversion_report
from vmshift.sources import SOURCES
from vmshift.sources.base import Source, SourceOptions
from vmshift.sources.vsphere_uri import parse_vsphere_uri
from vmshift.targets import TARGETS
from vmshift.targets.base import Target, TargetOptions

HELP = "convert a guest to run on KVM (virt-v2v compatible options)"

TARGET_ALIASES = {"disk": "local", "rhev": "rhv", "ovirt": "rhv"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="ARG", help="the guest: a file, disks, or a name")
    p.add_argument(
        "-i",
        dest="input",
        default="libvirt",
        metavar="INPUT",
        help=f"input: {', '.join(SOURCES)} (default libvirt)",
    )
    p.add_argument("-ic", dest="input_conn", metavar="URI", help="input connection URI")
    p.add_argument(
        "-it",
        dest="input_transport",
        metavar="TRANSPORT",
        help="input transport: ssh (with -i vmx and an ssh:// URI)",
    )
    p.add_argument("-if", dest="input_format", metavar="FORMAT", help="input disk format")
    p.add_argument(
        "-o",
        dest="output",
        metavar="OUTPUT",
        help=f"output: {', '.join(TARGETS)} (default libvirt)",
    )
    p.add_argument(
        "-os",
        dest="output_storage",
        metavar="STORAGE",
        help="output storage: a directory (local, qemu), a pool (libvirt), or an export "
        "storage domain (rhv: HOST:/PATH or a mounted directory)",
    )
    p.add_argument("-oc", dest="output_conn", metavar="URI", help="output connection URI")
    p.add_argument(
        "-of",
        dest="output_format",
        choices=["raw", "qcow2"],
        help="output disk format (default raw)",
    )
    p.add_argument(
        "-oa",
        dest="output_alloc",
        choices=["sparse", "preallocated"],
        help="output allocation (default sparse)",
    )
    p.add_argument("-on", dest="output_name", metavar="NAME", help="rename the guest")
    p.add_argument(
        "--domain-type",
        choices=["kvm", "qemu"],
        help="the guest's libvirt domain type on the target: kvm (the default; -o libvirt: "
        "what the target's libvirtd offers) or qemu (TCG emulation). -o qemu: the script's "
        "accelerator (default: KVM where the script runs and KVM works, else TCG)",
    )
    p.add_argument(
        "--rhv-data-domain-type",
        choices=["nfs", "iscsi", "fc"],
        help="with -o rhv: the data domain the guest will be imported into; refuses disk "
        "formats it cannot hold",
    )
    p.add_argument(
        "--profile",
        metavar="NAME",
        help="output options from a profile (docs/profiles.md); options given here win",
    )
    p.add_argument(
        "--conf",
        type=Path,
        metavar="FILE",
        help="read --profile from FILE (virt-v2v.conf XML or TOML) instead of the usual places",
    )
    p.add_argument(
        "-n",
        "--network",
        action="append",
        metavar="[IN:]OUT",
        help="map source network IN (or every unmapped NIC) to libvirt network OUT",
    )
    p.add_argument(
        "-b",
        "--bridge",
        action="append",
        metavar="[IN:]OUT",
        help="map source network IN (or every unmapped NIC) to bridge OUT",
    )
    p.add_argument(
        "--mac",
        action="append",
        metavar="MAC:network|bridge:OUT",
        help="map the NIC with this MAC address",
    )
    p.add_argument(
        "--root",
        metavar="ask|single|first|DEVICE",
        help="which OS to convert when the guest has several (default ask: a list to choose "
        "from on a terminal, an error naming them otherwise)",
    )
    p.add_argument(
        "--no-secure-boot",
        dest="secure_boot",
        action="store_false",
        help="turn UEFI secure boot off on the target even if the source enforced it",
    )
    p.add_argument(
        "--block-driver",
        choices=["virtio-blk", "virtio-scsi"],
        default="virtio-blk",
        help="virtio disk driver to use (default virtio-blk)",
    )
    p.add_argument(
        "--virtio-win",
        metavar="PATH",
        help="Windows VirtIO drivers: a virtio-win ISO or directory "
        "(default: $VIRTIO_WIN, then /usr/share/virtio-win)",
    )
    p.add_argument(
        "--firstboot-tool",
        metavar="FILE",
        help="Windows first-boot service wrapper, rhsrvany.exe or pvvxsvc.exe "
        "(default: $VMSHIFT_FIRSTBOOT_TOOL, then /usr/share/virt-tools)",
    )
    p.add_argument(
        "-m",
        "--memory",
        "--memsize",
        dest="memory",
        metavar="SIZE",
        help="memory of the guest in MiB, or with a unit (4G) (default: the source's)",
    )
    p.add_argument(
        "--vcpus", "--smp", dest="vcpus", type=int, metavar="N", help="vCPUs of the guest"
    )
    p.add_argument(
        "--name",
        dest="source_name",
        metavar="NAME",
        help="guest name for -i disk (default: from the first disk's file name)",
    )
    p.add_argument("--print-source", action="store_true", help="print what was read and exit")
    p.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report to FILE")
    p.add_argument(
        "--qemu-boot", action="store_true", help="with -o qemu: boot the result (-oo qemu-boot)"
    )
    mode_options.add_arguments(p)
    key_options.add_arguments(p)
    p.add_argument(
        "--machine-readable",
        action="store_true",
        help="print progress as plain lines for other programs",
    )
    verify_options.add_arguments(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the copy of this same conversion where a signal or a kill interrupted "
        "it (a run without --resume discards such a copy)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="where overlays live during the conversion (default: $TMPDIR)",
    )


def _instantiate(table: dict[str, str], name: str, kind: str, opts: Any) -> Any:
    if name not in table:
        flag = "-i" if kind == "input" else "-o"
        raise UsageError(f"{flag} {name}: unknown {kind}; choose from {', '.join(table)}")
    module_name, _, class_name = table[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(opts)


def make_source(args: argparse.Namespace) -> Source:
    mode = mode_options.input_mode(args)
    opts = SourceOptions(
        args=tuple(args.args),
        conn=args.input_conn,
        password=mode_options.input_password(args),
        options=mode_options.input_options(args),
        transport=mode_options.input_transport(args),
        input_format=args.input_format,
        memory=memory_size(args.memory) if args.memory else None,
        vcpus=args.vcpus,
        name=args.source_name,
    )
    if not args.args:
        raise UsageError(f"-i {args.input}: name the guest (a file, disk images or a guest name)")
    if mode == "vsphere" and opts.password is None:
        opts = dataclasses.replace(opts, password=_ask_password(args.input_conn))
    source: Source = _instantiate(SOURCES, mode, "input", opts)
    return source


def _ask_password(conn: str) -> str:
    """The vSphere password from the terminal; without one, an error (never a wait on stdin)."""
    uri = parse_vsphere_uri(conn)
    if not sys.stdin.isatty():
        raise UsageError(
            f"-ic {conn}: a password is needed and there is no terminal to ask on",
            hint="give -ip FILE (the password on its first line)",
        )
    try:
        return getpass.getpass(f"Password for {uri.user} on {uri.server}: ")
    except EOFError:
        raise UsageError(f"-ic {conn}: no password given") from None


def make_target(args: argparse.Namespace, out: mode_options.OutputOptions) -> Target:
    opts = TargetOptions(
        storage=args.output_storage,
        conn=args.output_conn,
        format=args.output_format,
        allocation=args.output_alloc,
        name=args.output_name,
        networks=target_networks(args),
        qemu_boot=out.qemu_boot,
        rhv_data_domain_type=args.rhv_data_domain_type,
        domain_type=args.domain_type,
        discard_dir=_discard_dir(),
    )
    if args.qemu_boot and args.output != "qemu":
        raise UsageError("--qemu-boot works only with -o qemu")
    target: Target = _instantiate(TARGETS, output_name(args), "output", opts)
    return target


def _discard_dir() -> Path | None:
    """Where -o null writes: $TMPDIR if the user set one (None: tempfile honours it), else
    /var/tmp, disk-backed unlike /tmp on many hosts."""
    var_tmp = Path("/var/tmp")
    return var_tmp if not os.environ.get("TMPDIR") and var_tmp.is_dir() else None


def output_name(args: argparse.Namespace) -> str:
    """-o's value with virt-v2v's aliases resolved (disk -> local, rhev/ovirt -> rhv)."""
    name: str = TARGET_ALIASES.get(args.output, args.output)
    return name


def _existing_path(option: str, value: str | None) -> str | None:
    """A path option checked before the slow work starts."""
    if value is not None and not Path(value).exists():
        raise UsageError(f"{option} {value}: no such file or directory")
    return value


def verdict(result: ConversionResult) -> str:
    name = result.target.name
    caps = result.caps
    if caps.virtio:
        drivers = f" ({', '.join(caps.drivers_installed)})" if caps.drivers_installed else ""
        return f"vmshift: {name} configured with virtio drivers{drivers}."
    why = "; ".join(caps.warnings) or "no virtio drivers available for this guest"
    partial = f" Installed: {', '.join(caps.drivers_installed)}." if caps.drivers_installed else ""
    return (
        f"vmshift: warning: {name} was NOT configured with virtio drivers ({why}); "
        f"it will use {caps.block_bus} disks and a {caps.net_model} network card (slower)."
        + partial
    )


def run(args: argparse.Namespace) -> int:
    apply_profile(args)
    listing = mode_options.wants_help(args)
    if listing is not None:
        print(listing, end="")
        return 0
    source = make_source(args)
    if args.print_source:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="vmshift-") as tmp:
            try:
                vm = source.open(Path(tmp))
            finally:
                source.close()
        for warning in vm.warnings:
            print(f"vmshift: warning: {warning}", file=sys.stderr)
        print_source_vm(Console(markup=False, emoji=False, highlight=False), vm)
        return 0
    out = mode_options.output_options(args, output_name(args))
    target = make_target(args, out)
    printer = ProgressPrinter(
        quiet=args.quiet,
        machine_readable=args.machine_readable,
        console=Console(stderr=True, markup=False, emoji=False, highlight=False),
    )
    run_opts = RunOptions(
        out_format=args.output_format,
        preallocated=args.output_alloc == "preallocated",
        compressed=out.compressed,
        convert=ConvertOptions(
            block_driver=args.block_driver,
            virtio_win=_existing_path("--virtio-win", args.virtio_win),
            firstboot_tool=args.firstboot_tool,
            secure_boot=args.secure_boot,
            environ=dict(os.environ),
        ),
        root=args.root or "ask",
        ask_root=partial(ask_root, printer) if sys.stdin.isatty() else None,
        workdir_parent=args.workdir,
        memory=memory_size(args.memory) if args.memory else None,
        vcpus=args.vcpus,
        keys=key_options.luks_keys(args),
        ask_key=key_options.key_asker(args, printer.paused),
        verify_boot=verify_options.boot_options(args, output_name(args)),
        verify_copy=args.verify_copy,
        resume_key=resume_key(args),
        resume=args.resume,
        interrupted=lambda: GUARD.signum is not None,
    )
    with printer:
        result = run_conversion(source, target, run_opts, partial(_both, printer.event))
    line = verdict(result)
    if args.report:
        write_report(args.report, result, line)
    for warning in result.target.warnings:
        print(f"vmshift: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        for label, size in result.fetched.items():
            print(f"vmshift: {label}: {human_size(size)} fetched from the source", file=sys.stderr)
        print(result.target.description)
    print(line, file=sys.stdout)
    if result.boot is not None:
        print(result.boot.line(result.target.name), file=sys.stdout)
        if not result.boot.ok:
            return BootCheckError.exit_code
    return 0


def _both(show: Callable[[Event], None], event: Event) -> None:
    """The run's event sink: the signal guard learns the stage, the printer shows it."""
    GUARD.note(event)
    show(event)


def ask_root(printer: ProgressPrinter, oses: Sequence[OperatingSystem]) -> OperatingSystem:
    """--root ask on a terminal: list the operating systems found and read a number."""
    with printer.paused():
        print("\nSeveral operating systems were found; choose the one to convert:", file=sys.stderr)
        for number, candidate in enumerate(oses, start=1):
            print(f"  {number}. {candidate.root} ({candidate.product_name})", file=sys.stderr)
        while True:
            print(f"Number (1-{len(oses)}): ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                raise UsageError("--root ask: no answer on the terminal")
            answer = line.strip()
            if answer.isdigit() and 1 <= int(answer) <= len(oses):
                return oses[int(answer) - 1]
            print(f"Type a number from 1 to {len(oses)}.", file=sys.stderr)


def write_report(path: Path, result: ConversionResult, line: str) -> None:
    """--report FILE: the document of vmshift.report, as JSON."""
    import json

    try:
        path.write_text(json.dumps(conversion_report(result, line), indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"--report {path}: cannot write: {exc.strerror}") from exc
