"""virt-v2v's per-mode options: -io/-oo OPTION[=VALUE], -ip/-op FILE (docs/convert.md).

virt-v2v accepts these flags with every input and output, and each mode refuses what it does
not use, naming the flag; vmshift does the same, before anything slow starts. The tables say
which mode uses what:

    -oo compressed      -o local, libvirt, qemu (with -of qcow2): compressed output clusters
    -oo qemu-boot       -o qemu: boot the guest after writing it (also --qemu-boot)
    -ip FILE            -i libvirt: the password of the -ic connection (first line of FILE);
                        -i vmx -it ssh: the SSH password
    -io vddk-thumbprint -ic esx:// or vpx://: pin the server's certificate
    -io ssh-known-hosts -i vmx -it ssh: the known_hosts file that vouches for the host
    -io ssh-identity    -i vmx -it ssh: a private key to log in with
    -it ssh             -i vmx only: read the VM from an SSH server
    -op                 no vmshift output uses it yet (virt-v2v: -o openstack ...)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import UsageError
from vmshift.formats.vmx import parse_bool
from vmshift.sources.vsphere_uri import is_vsphere_uri

# -o NAME (after aliases) -> the -oo options it takes, with their help lines.
OUTPUT_OPTIONS: dict[str, dict[str, str]] = {
    "local": {"compressed": "compress the output disks (only with -of qcow2)"},
    "libvirt": {"compressed": "compress the output disks (only with -of qcow2)"},
    "qemu": {
        "compressed": "compress the output disks (only with -of qcow2)",
        "qemu-boot": "boot the guest in qemu after conversion",
    },
    "rhv": {},
    "null": {},
}
# -i NAME -> the -io options it takes ("vsphere": -i libvirt with -ic esx:// or vpx://;
# "vmx-ssh": -i vmx -it ssh).
INPUT_OPTIONS: dict[str, dict[str, str]] = {
    "vsphere": {"vddk-thumbprint": "the server certificate's SHA-1 (or SHA-256) fingerprint"},
    "vmx-ssh": {
        "ssh-known-hosts": "known_hosts file to check the host key in (default ~/.ssh/known_hosts)",
        "ssh-identity": "private key file to log in with (besides ssh-agent and ~/.ssh/id_*)",
    },
}
# Modes that use a password file.
INPUT_PASSWORD = frozenset({"libvirt", "vsphere", "vmx-ssh"})
# -i NAME -> the -it transports it takes. The vSphere source leaves -it to itself.
INPUT_TRANSPORTS: dict[str, tuple[str, ...]] = {"vmx": ("ssh",)}
OUTPUT_PASSWORD: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OutputOptions:
    compressed: bool = False
    qemu_boot: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-io",
        dest="input_options",
        action="append",
        metavar="OPTION[=VALUE]",
        help="an option of the input mode ('-io ?' lists them)",
    )
    p.add_argument(
        "-ip",
        dest="input_password_file",
        metavar="FILE",
        help="the password of the input connection, on the first line of FILE",
    )
    p.add_argument(
        "-oo",
        dest="output_options",
        action="append",
        metavar="OPTION[=VALUE]",
        help="an option of the output mode ('-oo ?' lists them)",
    )
    p.add_argument(
        "-op",
        dest="output_password_file",
        metavar="FILE",
        help="the password of the output connection, on the first line of FILE",
    )


def wants_help(args: argparse.Namespace) -> str | None:
    """The text `-io ?` or `-oo ?` asks for, if it was given."""
    inputs = INPUT_OPTIONS.get(_options_mode(args))
    outputs = OUTPUT_OPTIONS.get(args.output)
    for flag, values, kind, mode, options in (
        ("-io", args.input_options, "input", _shown(args), inputs),
        ("-oo", args.output_options, "output", f"-o {args.output}", outputs),
    ):
        if "?" in (values or []):
            if not options:
                return f"No {kind} options ({flag}) can be used with {mode}.\n"
            lines = [f"  {flag} {name:<16}{text}" for name, text in options.items()]
            return f"{kind.capitalize()} options ({flag}) of {mode}:\n" + "\n".join(lines) + "\n"
    return None


def output_options(args: argparse.Namespace, output: str) -> OutputOptions:
    """-oo values checked against what -o output takes; -op refused where it is not used."""
    if args.output_password_file is not None and output not in OUTPUT_PASSWORD:
        raise UsageError(f"-o {output}: -op is not used by this output mode")
    allowed = OUTPUT_OPTIONS.get(output, {})
    values = {"compressed": False, "qemu-boot": bool(getattr(args, "qemu_boot", False))}
    for text in args.output_options or []:
        key, sep, value = text.partition("=")
        if not allowed:
            raise UsageError(f"-oo {text}: -o {output} takes no output options")
        if key not in allowed:
            raise UsageError(
                f"-oo {text}: -o {output} has no output option {key!r}; "
                f"it takes: {', '.join(allowed)}"
            )
        values[key] = _bool(f"-oo {text}", value) if sep else True
    opts = OutputOptions(compressed=values["compressed"], qemu_boot=values["qemu-boot"])
    if opts.compressed and args.output_format != "qcow2":
        raise UsageError(
            f"-oo compressed: needs -of qcow2 (the output format is {args.output_format})"
        )
    if opts.compressed and args.output_alloc == "preallocated":
        raise UsageError("-oo compressed: cannot be used with -oa preallocated")
    return opts


def input_mode(args: argparse.Namespace) -> str:
    """-i's value, or "vsphere" for -i libvirt with an esx:// or vpx:// -ic."""
    mode: str = args.input
    if mode == "libvirt" and is_vsphere_uri(args.input_conn):
        return "vsphere"
    return mode


def _options_mode(args: argparse.Namespace) -> str:
    """The mode whose -io/-ip the tables list: input_mode(), or vmx-ssh for -i vmx -it ssh."""
    mode = input_mode(args)
    return "vmx-ssh" if mode == "vmx" and args.input_transport == "ssh" else mode


def _shown(args: argparse.Namespace) -> str:
    """The input mode as the command line chose it, for messages."""
    mode = _options_mode(args)
    if mode == "vsphere":
        return f"-i {args.input} -ic {args.input_conn}"
    return f"-i {args.input}" + (" -it ssh" if mode == "vmx-ssh" else "")


def input_transport(args: argparse.Namespace) -> str | None:
    """-it checked against what the input mode takes."""
    transport: str | None = args.input_transport
    mode = input_mode(args)
    if transport is None or mode == "vsphere":
        return transport
    allowed = INPUT_TRANSPORTS.get(mode, ())
    if transport not in allowed:
        takes = f"takes only -it {', '.join(allowed)}" if allowed else "takes no -it"
        raise UsageError(f"-it {transport}: -i {args.input} {takes} (-it ssh is for -i vmx)")
    return transport


def input_options(args: argparse.Namespace) -> dict[str, str]:
    """-io KEY=VALUE checked against what the input mode takes."""
    allowed = INPUT_OPTIONS.get(_options_mode(args), {})
    shown = _shown(args)
    options: dict[str, str] = {}
    for text in args.input_options or []:
        key, sep, value = text.partition("=")
        if not allowed:
            raise UsageError(f"-io {text}: {shown} takes no input options")
        if key not in allowed or not sep or not value:
            raise UsageError(
                f"-io {text}: {shown} takes {', '.join(k + '=VALUE' for k in allowed)}"
            )
        options[key] = value
    return options


def input_password(args: argparse.Namespace) -> str | None:
    """-ip FILE's password for an input mode that uses one."""
    path = args.input_password_file
    if path is None:
        return None
    if _options_mode(args) not in INPUT_PASSWORD:
        raise UsageError(f"{_shown(args)}: -ip is not used by this input mode")
    return read_password_file("-ip", Path(path))


def read_password_file(flag: str, path: Path) -> str:
    """The password on the first line of path (as virt-v2v reads -ip/-op files)."""
    try:
        with path.open("rb") as f:
            first = f.readline(65536)
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{flag} {path}: is a directory, not a password file") from None
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read: {exc.strerror}") from None
    password = first.rstrip(b"\r\n").decode("utf-8", errors="replace")
    if not password:
        raise UsageError(f"{flag} {path}: the first line is empty (no password)")
    return password


def _bool(where: str, value: str) -> bool:
    parsed = parse_bool(value)
    if parsed is None:
        raise UsageError(f"{where}: expected true or false")
    return parsed
