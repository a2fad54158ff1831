"""`vmshift profiles [NAME]`: the conversion profiles found, or one of them in detail."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from vmshift.cli.profile_options import DEFAULTS
from vmshift.formats.profiles import NetworkRule, Profile
from vmshift.profiles import Catalogue, load_catalogue

HELP = "list the conversion profiles (--profile), or show one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME", help="show this profile in detail")
    p.add_argument(
        "--conf",
        type=Path,
        metavar="FILE",
        help="read FILE (virt-v2v.conf XML or TOML) instead of the usual places",
    )
    p.add_argument("--json", action="store_true", help="print a JSON document")


def run(args: argparse.Namespace) -> int:
    catalogue = load_catalogue(args.conf)
    if args.name is not None:
        profile = catalogue.get(args.name)
        if args.json:
            _print_json(_profile_json(profile, catalogue))
        else:
            print(_details(profile, catalogue))
        return 0
    if args.json:
        doc = {
            "files": [str(f.path) for f in catalogue.files],
            "searched": [str(p) for p in catalogue.searched],
            "profiles": [_profile_json(p, catalogue) for p in catalogue.visible()],
        }
        _print_json(doc)
        return 0
    print(_listing(catalogue))
    return 0


def _print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _method(profile: Profile) -> str:
    if profile.method == profile.output:
        return profile.method
    return f"{profile.method} (-o {profile.output})"


def _listing(catalogue: Catalogue) -> str:
    profiles = catalogue.visible()
    if not profiles:
        looked = ", ".join(str(p) for p in catalogue.searched)
        return f"No profiles found (looked in {looked})."
    header = ("NAME", "METHOD", "STORAGE", "FORMAT", "ALLOCATION", "FILE")
    rows = [header] + [
        (
            p.name,
            _method(p),
            p.storage or "-",
            p.format or "-",
            p.allocation or "-",
            p.origin,
        )
        for p in profiles
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    ]
    for profile in profiles:
        for hidden in catalogue.shadowed(profile.name):
            lines.append(f"({hidden.name} at {hidden.origin} is hidden by {profile.origin})")
    return "\n".join(lines)


def _details(profile: Profile, catalogue: Catalogue) -> str:
    def value(text: str | None, dest: str) -> str:
        if text is not None:
            return text
        return f"{DEFAULTS[dest]} (default)" if dest in DEFAULTS else "-"

    lines = [
        f"Profile {profile.name} ({profile.origin})",
        f"  method       {_method(profile)}",
        f"  storage      {profile.storage or '-'}",
        f"  format       {value(profile.format, 'output_format')}",
        f"  allocation   {value(profile.allocation, 'output_alloc')}",
    ]
    if profile.conn:
        lines.append(f"  connection   {profile.conn}")
    if profile.rhv_data_domain_type:
        lines.append(f"  RHV data domain type   {profile.rhv_data_domain_type}")
    rules = profile.effective_networks()
    lines.append("  networks" if rules else "  networks     (none: NICs go to network default)")
    for rule in rules:
        scope = "" if rule in profile.networks else ", top-level"
        at = f"line {rule.line}{scope}" if rule.line else scope.lstrip(", ")
        lines.append(f"    {rule.describe()}" + (f"   ({at})" if at else ""))
    for hidden in catalogue.shadowed(profile.name):
        lines.append(f"  (also defined at {hidden.origin}, which is ignored)")
    lines.append("  as options   " + shlex.join(_as_options(profile)))
    return "\n".join(lines)


def _as_options(profile: Profile) -> list[str]:
    """The `vmshift convert` options the profile stands for."""
    opts = ["-o", profile.output]
    for flag, text in (
        ("-os", profile.storage),
        ("-of", profile.format),
        ("-oa", profile.allocation),
        ("-oc", profile.conn),
        ("--rhv-data-domain-type", profile.rhv_data_domain_type),
    ):
        if text is not None:
            opts += [flag, text]
    for rule in profile.effective_networks():
        mapping = rule.out_name if rule.source is None else f"{rule.source}:{rule.out_name}"
        opts += [f"--{rule.out_type}", mapping]
    return opts


def _rule_json(rule: NetworkRule, profile: Profile) -> dict[str, Any]:
    return {
        "source": rule.source,
        "source_type": rule.source_type,
        "type": rule.out_type,
        "name": rule.out_name,
        "line": rule.line,
        "scope": "profile" if rule in profile.networks else "file",
    }


def _profile_json(profile: Profile, catalogue: Catalogue) -> dict[str, Any]:
    return {
        "name": profile.name,
        "method": profile.method,
        "output": profile.output,
        "storage": profile.storage,
        "format": profile.format,
        "allocation": profile.allocation,
        "conn": profile.conn,
        "rhv_data_domain_type": profile.rhv_data_domain_type,
        "file": str(profile.path),
        "line": profile.line,
        "networks": [_rule_json(r, profile) for r in profile.effective_networks()],
        "options": _as_options(profile),
        "hides": [h.origin for h in catalogue.shadowed(profile.name)],
    }
