"""--profile for `vmshift convert`: a profile's output options under the command line's.

Every output option the command line gives wins over the profile; --network/--bridge mappings
are merged, the command line's winning for the same source network (docs/profiles.md).
"""

from __future__ import annotations

import argparse
import logging

from vmshift.cli.options import network_map
from vmshift.errors import UsageError
from vmshift.formats.profiles import Profile
from vmshift.profiles import load_catalogue
from vmshift.targets.base import NetworkMap

log = logging.getLogger(__name__)

# What the command line means when neither it nor a profile says otherwise.
DEFAULTS = {"output": "libvirt", "output_format": "raw", "output_alloc": "sparse"}


def apply_profile(args: argparse.Namespace) -> Profile | None:
    """Fill the output options the command line left unset: from --profile, then DEFAULTS.

    Sets args.profile_networks, the profile's network mappings, for target_networks()."""
    profile = None
    if args.profile:
        profile = load_catalogue(args.conf).get(args.profile)
        log.info("profile %s from %s: method %s", profile.name, profile.origin, profile.method)
        for dest, value in (
            ("output", profile.output),
            ("output_storage", profile.storage),
            ("output_format", profile.format),
            ("output_alloc", profile.allocation),
            ("output_conn", profile.conn),
            ("rhv_data_domain_type", profile.rhv_data_domain_type),
        ):
            _fill(args, dest, value)
    elif args.conf:
        raise UsageError(f"--conf {args.conf}: give --profile NAME to use a profile from it")
    for dest, default in DEFAULTS.items():
        _fill(args, dest, default)
    args.profile_networks = profile_network_map(profile) if profile else NetworkMap()
    return profile


def _fill(args: argparse.Namespace, dest: str, value: str | None) -> None:
    if value is not None and getattr(args, dest, None) is None:
        setattr(args, dest, value)


def profile_network_map(profile: Profile) -> NetworkMap:
    networks: dict[str, str] = {}
    bridges: dict[str, str] = {}
    defaults: dict[str, str] = {}
    for rule in profile.effective_networks():
        if rule.source is None:
            defaults[rule.out_type] = rule.out_name
        elif rule.out_type == "bridge":
            bridges[rule.source] = rule.out_name
        else:
            networks[rule.source] = rule.out_name
    return NetworkMap(
        networks=networks,
        bridges=bridges,
        default_network=defaults.get("network"),
        default_bridge=defaults.get("bridge"),
    )


def merge_networks(profile: NetworkMap, cli: NetworkMap) -> NetworkMap:
    """The profile's mappings under the command line's: a source network the command line maps
    (to a network or a bridge) loses its profile mapping; a command-line default replaces the
    profile's defaults but not the profile's mappings of specific networks."""
    taken = cli.networks.keys() | cli.bridges.keys()
    defaults = cli if cli.default_network or cli.default_bridge else profile
    return NetworkMap(
        networks={k: v for k, v in profile.networks.items() if k not in taken} | cli.networks,
        bridges={k: v for k, v in profile.bridges.items() if k not in taken} | cli.bridges,
        macs=profile.macs | cli.macs,
        default_network=defaults.default_network,
        default_bridge=defaults.default_bridge,
    )


def target_networks(args: argparse.Namespace) -> NetworkMap:
    """--network/--bridge/--mac merged over the profile's mappings (if apply_profile ran)."""
    cli = network_map(args.network, args.bridge, args.mac)
    profile: NetworkMap | None = getattr(args, "profile_networks", None)
    return merge_networks(profile, cli) if profile is not None else cli
