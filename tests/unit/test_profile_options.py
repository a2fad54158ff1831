"""Which profile a name means (search order, first file wins), and how a profile and the
command line combine into `vmshift convert`'s output options (the command line wins)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from vmshift import profiles
from vmshift.cli.main import build_parser
from vmshift.cli.profile_options import apply_profile, merge_networks, target_networks
from vmshift.errors import ConfigError, UsageError
from vmshift.formats.profiles import ProfileError
from vmshift.profiles import load_catalogue, search_path
from vmshift.targets.base import NetworkMap

# ---- the search path ------------------------------------------------------------------------


def test_search_path() -> None:
    assert search_path({"HOME": "/home/u"}) == (
        Path("/home/u/.config/vmshift/profiles.toml"),
        Path("/etc/vmshift/profiles.toml"),
        Path("/etc/virt-v2v.conf"),
    )
    env = {"HOME": "/home/u", "XDG_CONFIG_HOME": "/cfg"}
    assert search_path(env)[0] == Path("/cfg/vmshift/profiles.toml")
    # A relative XDG_CONFIG_HOME is invalid (XDG base directory spec) and ignored.
    env = {"HOME": "/home/u", "XDG_CONFIG_HOME": "cfg"}
    assert search_path(env)[0] == Path("/home/u/.config/vmshift/profiles.toml")


USER_TOML = """
[profile.shared]
method = "local"
storage = "/srv/user"

[profile.mine]
method = "qemu"
storage = "/srv/qemu"
"""
SITE_TOML = """
[profile.shared]
method = "libvirt"
storage = "site-pool"

[profile.site]
method = "null"
"""
SEED_XML = """<virt-v2v>
  <profile name="shared"><method>rhev</method><storage>nfs:/x</storage></profile>
  <profile name="myrhev"><method>rhev</method><storage>nfs:/export</storage></profile>
</virt-v2v>
"""


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A user config dir and stand-ins for /etc/vmshift/profiles.toml and /etc/virt-v2v.conf."""
    user = tmp_path / "cfg" / "vmshift" / "profiles.toml"
    site = tmp_path / "etc" / "vmshift" / "profiles.toml"
    seed = tmp_path / "etc" / "virt-v2v.conf"
    for path, text in ((user, USER_TOML), (site, SITE_TOML), (seed, SEED_XML)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(profiles, "SYSTEM_FILES", (site, seed))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    return {"user": user, "site": site, "seed": seed}


def test_first_file_wins_and_says_so(
    places: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    catalogue = load_catalogue()
    assert [f.path for f in catalogue.files] == [places["user"], places["site"], places["seed"]]
    assert [(p.name, p.path) for p in catalogue.visible()] == [
        ("shared", places["user"]),
        ("mine", places["user"]),
        ("site", places["site"]),
        ("myrhev", places["seed"]),
    ]
    with caplog.at_level(logging.INFO, logger="vmshift.profiles"):
        shared = catalogue.get("shared")
    assert (shared.output, shared.storage) == ("local", "/srv/user")
    assert f"using {places['user']}:2" in caplog.text
    assert f"also defined at {places['site']}:2" in caplog.text
    assert f"{places['seed']}:2, which is ignored" in caplog.text
    assert catalogue.get("myrhev").output == "rhv"


def test_missing_files_are_skipped(places: dict[str, Path]) -> None:
    places["user"].unlink()
    places["site"].unlink()
    catalogue = load_catalogue()
    assert [f.path for f in catalogue.files] == [places["seed"]]
    assert catalogue.get("shared").path == places["seed"]


def test_a_malformed_file_on_the_path_is_an_error(places: dict[str, Path]) -> None:
    # Even though the user's file defines the profile: skipping a broken file would hide the
    # profile someone meant to use.
    places["seed"].write_text("<virt-v2v>\n<profile name='x'>\n")
    with pytest.raises(ProfileError, match=rf"^{places['seed']}:3: not well-formed XML"):
        load_catalogue()


def test_unknown_name_lists_the_available_ones(places: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as err:
        load_catalogue().get("nope")
    files = f"{places['user']}, {places['site']}, {places['seed']}"
    assert err.value.message == (
        f"no profile 'nope' in {files}; available: mine, myrhev, shared, site"
    )


def test_no_profile_files_at_all(places: dict[str, Path]) -> None:
    for path in places.values():
        path.unlink()
    with pytest.raises(ConfigError) as err:
        load_catalogue().get("myrhev")
    assert err.value.message.startswith(
        f"no profile 'myrhev': no profile files found (looked for {places['user']}, "
    )
    assert err.value.hint is not None
    assert "--conf" in err.value.hint


def test_conf_reads_that_file_only(places: dict[str, Path], tmp_path: Path) -> None:
    catalogue = load_catalogue(places["seed"])
    assert [p.name for p in catalogue.visible()] == ["shared", "myrhev"]
    assert catalogue.get("shared").output == "rhv"
    with pytest.raises(ConfigError, match=r"no profile 'mine' in .*virt-v2v.conf; available"):
        catalogue.get("mine")
    with pytest.raises(ConfigError, match=rf"^{tmp_path}/absent.toml: no such file$"):
        load_catalogue(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: is a directory"):
        load_catalogue(tmp_path)


# ---- profile + command line -----------------------------------------------------------------

PROFILES = """
[profile.lan]
method = "local"
storage = "/srv/out"
format = "qcow2"
allocation = "preallocated"
conn = "qemu:///session"
default-network = "rhevm"

[[profile.lan.map]]
source = "VM Network"
bridge = "br-prod"

[[profile.lan.map]]
source = "Backup Network"
network = "backup"

[profile.myrhev]
method = "rhev"
storage = "nfs.example.com:/export/domain"
rhv-data-domain-type = "iscsi"
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.toml"
    path.write_text(PROFILES)
    return path


def convert_args(*argv: str | Path) -> argparse.Namespace:
    args = build_parser().parse_args(["convert", *map(str, argv)])
    apply_profile(args)
    return args


def _outputs(args: argparse.Namespace) -> tuple[str, str | None, str, str, str | None]:
    return (
        args.output,
        args.output_storage,
        args.output_format,
        args.output_alloc,
        args.output_conn,
    )


def test_without_a_profile_the_defaults_apply() -> None:
    args = convert_args("-i", "vmx", "g.vmx")
    assert _outputs(args) == ("libvirt", None, "raw", "sparse", None)
    assert target_networks(args) == NetworkMap()


def test_the_profile_sets_what_the_command_line_leaves_unset(conf: Path) -> None:
    args = convert_args("--profile", "lan", "--conf", conf, "-i", "vmx", "g.vmx")
    assert _outputs(args) == ("local", "/srv/out", "qcow2", "preallocated", "qemu:///session")
    assert target_networks(args) == NetworkMap(
        networks={"Backup Network": "backup"},
        bridges={"VM Network": "br-prod"},
        default_network="rhevm",
    )


def test_command_line_options_win(conf: Path) -> None:
    args = convert_args(
        "--profile", "lan", "--conf", conf, "-i", "vmx", "g.vmx",
        "-o", "qemu", "-os", "/elsewhere", "-of", "raw", "-oa", "sparse", "-oc", "qemu:///system",
    )  # fmt: skip
    assert _outputs(args) == ("qemu", "/elsewhere", "raw", "sparse", "qemu:///system")


def test_network_mappings_merge_the_command_line_winning(conf: Path) -> None:
    args = convert_args(
        "--profile", "lan", "--conf", conf, "-i", "vmx", "g.vmx",
        "--network", "VM Network:lan",  # was the bridge br-prod in the profile
        "--bridge", "DMZ:br-dmz",  # a source the profile does not map
        "--bridge", "br-default",  # replaces the profile's default network rhevm
        "--mac", "00:50:56:ab:cd:ef:network:special",
    )  # fmt: skip
    networks = target_networks(args)
    assert networks == NetworkMap(
        networks={"Backup Network": "backup", "VM Network": "lan"},
        bridges={"DMZ": "br-dmz"},
        macs={"00:50:56:ab:cd:ef": ("network", "special")},
        default_bridge="br-default",
    )
    assert networks.map("00:50:56:aa:00:01", "VM Network") == ("network", "lan")
    assert networks.map(None, "Backup Network") == ("network", "backup")  # the profile's
    assert networks.map(None, "Elsewhere") == ("bridge", "br-default")
    assert networks.map("00:50:56:AB:CD:EF", "VM Network") == ("network", "special")


def test_merge_keeps_the_profile_default_when_the_command_line_has_none() -> None:
    profile = NetworkMap(networks={"a": "x"}, default_network="rhevm")
    cli = NetworkMap(bridges={"a": "br-a"})
    assert merge_networks(profile, cli) == NetworkMap(
        bridges={"a": "br-a"}, default_network="rhevm"
    )


def test_method_rhev_selects_the_rhv_output(conf: Path) -> None:
    args = convert_args(
        "--profile", "myrhev", "--conf", conf, "-ic", "qemu:///system", "guest1"
    )  # fmt: skip
    assert _outputs(args) == ("rhv", "nfs.example.com:/export/domain", "raw", "sparse", None)
    assert args.rhv_data_domain_type == "iscsi"
    assert args.input == "libvirt"
    assert args.args == ["guest1"]


def test_an_explicit_rhv_data_domain_type_wins(conf: Path) -> None:
    args = build_parser().parse_args(["convert", "--profile", "myrhev", "--conf", str(conf), "g"])
    args.rhv_data_domain_type = "fc"  # as --rhv-data-domain-type fc leaves it
    apply_profile(args)
    assert args.rhv_data_domain_type == "fc"


def test_conf_without_profile_is_a_usage_error(conf: Path) -> None:
    with pytest.raises(UsageError, match=r"^--conf .*profiles.toml: give --profile NAME"):
        convert_args("--conf", conf, "-i", "vmx", "g.vmx")


def test_an_unknown_profile_names_the_available_ones(conf: Path) -> None:
    with pytest.raises(ConfigError, match=r"no profile 'lab' in .*; available: lan, myrhev$"):
        convert_args("--profile", "lab", "--conf", conf, "-i", "vmx", "g.vmx")
