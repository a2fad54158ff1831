"""What makes two `vmshift convert` commands "the same command" for --resume.

The key is a digest of the parsed options that decide what is converted and where it goes,
after a profile is applied (so `--profile P` and the options it stands for are the same
command, and the order of the options does not matter). Left out: how the run talks
(-v, -q, --machine-readable, --report), where it works (--workdir: where the kept copy is
looked for), what is checked after the copy (--no-verify-copy, --verify-boot ...), where a
password is read from (-ip, -op: not what is converted), and --resume itself. The source's
options are all in it: -i, -ic (the vSphere or SSH host, the datacenter ...), -it, -io, -if and
the guest's name or files. Only the digest is written down, never the options (--key holds
passphrases).
"""

from __future__ import annotations

import argparse
import hashlib
import json

IGNORED = frozenset({
    "verbose", "quiet", "machine_readable", "report", "workdir", "resume", "run", "command",
    "print_source", "verify_copy", "verify_boot", "verify_boot_conn", "verify_boot_timeout",
    "input_password_file", "output_password_file",
})  # fmt: skip


def resume_key(args: argparse.Namespace) -> str:
    options = {k: v for k, v in sorted(vars(args).items()) if k not in IGNORED and not callable(v)}
    text = json.dumps(options, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
