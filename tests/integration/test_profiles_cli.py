"""Profiles through the real command line: `vmshift profiles` listing and showing them, bad
files refused with one FILE:LINE error, and `vmshift convert --profile` applying one (options
given on the command line winning), up to one real conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import vmshift
from tests.guests.manifest import BuiltGuest
from tests.integration.test_convert_bad_input import Vm, make_vm, refused

SEED_XML = """<?xml version="1.0"?>
<virt-v2v>
  <path-root>/var/lib/virt-v2v/software</path-root>
  <app os="rhel" major="6" arch="x86_64" name="kernel"><path>k.rpm</path></app>
  <network type="bridge" name="xenbr1">
    <network type="network" name="default"/>
  </network>
  <profile name="myrhev">
    <method>rhev</method>
    <storage format="raw" allocation="sparse">{rhv_storage}</storage>
    <network type="default">
      <network type="network" name="rhevm"/>
    </network>
  </profile>
  <profile name="kvm1">
    <method>libvirt</method>
    <storage format="qcow2">default</storage>
  </profile>
</virt-v2v>
"""

USER_TOML = """\
[profile.mylocal]
method = "local"
storage = "{local_storage}"
format = "qcow2"
default-bridge = "br0"

[[profile.mylocal.map]]
source = "VM Network"
network = "prod"

[profile.kvm1]
method = "qemu"
storage = "/var/tmp"
"""


def run(
    args: list[str | Path], *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "vmshift"
    return subprocess.run(
        [str(exe), *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "virt-v2v.conf"
    path.write_text(SEED_XML.format(rhv_storage=tmp_path / "not-an-export-domain"))
    (tmp_path / "not-an-export-domain").mkdir()
    return path


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """XDG_CONFIG_HOME holding the user's profiles.toml."""
    config = tmp_path / "config"
    (config / "vmshift").mkdir(parents=True)
    (config / "vmshift" / "profiles.toml").write_text(
        USER_TOML.format(local_storage=tmp_path / "missing-out")
    )
    return {"XDG_CONFIG_HOME": str(config)}


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# ---- vmshift profiles -----------------------------------------------------------------------


def test_list_the_seed_file(seed: Path) -> None:
    proc = run(["profiles", "--conf", seed])
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert rows[0] == ["NAME", "METHOD", "STORAGE", "FORMAT", "ALLOCATION", "FILE"]
    domain = seed.parent / "not-an-export-domain"
    assert rows[1:] == [
        ["myrhev", "rhev", "(-o", "rhv)", str(domain), "raw", "sparse", f"{seed}:8"],
        ["kvm1", "libvirt", "default", "qcow2", "-", f"{seed}:15"],
    ]


def test_list_the_user_file_first(user_env: dict[str, str], tmp_path: Path) -> None:
    proc = run(["profiles"], env=user_env)
    assert proc.returncode == 0, proc.stderr
    toml = Path(user_env["XDG_CONFIG_HOME"]) / "vmshift" / "profiles.toml"
    lines = proc.stdout.splitlines()
    assert lines[1].split() == [
        "mylocal", "local", str(tmp_path / "missing-out"), "qcow2", "-", f"{toml}:1",
    ]  # fmt: skip
    assert lines[2].split() == ["kvm1", "qemu", "/var/tmp", "-", "-", f"{toml}:11"]


def test_show_one(seed: Path) -> None:
    proc = run(["profiles", "--conf", seed, "myrhev"])
    assert proc.returncode == 0, proc.stderr
    domain = seed.parent / "not-an-export-domain"
    assert proc.stdout.splitlines() == [
        f"Profile myrhev ({seed}:8)",
        "  method       rhev (-o rhv)",
        f"  storage      {domain}",
        "  format       raw",
        "  allocation   sparse",
        "  networks",
        "    bridge xenbr1 -> network default   (line 5, top-level)",
        "    default -> network rhevm   (line 11)",
        f"  as options   -o rhv -os {domain} -of raw -oa sparse --network xenbr1:default "
        "--network rhevm",
    ]


def test_show_one_as_json(user_env: dict[str, str]) -> None:
    proc = run(["profiles", "--json", "mylocal"], env=user_env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["method"] == "local"
    assert doc["format"] == "qcow2"
    assert doc["allocation"] is None
    assert doc["line"] == 1
    assert doc["networks"] == [
        {"source": "VM Network", "source_type": None, "type": "network", "name": "prod",
         "line": 7, "scope": "profile"},
        {"source": None, "source_type": None, "type": "bridge", "name": "br0", "line": 5,
         "scope": "profile"},
    ]  # fmt: skip
    assert doc["options"][-4:] == ["--network", "VM Network:prod", "--bridge", "br0"]


def test_list_as_json(seed: Path) -> None:
    proc = run(["profiles", "--conf", seed, "--json"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["files"] == [str(seed)]
    assert [(p["name"], p["output"]) for p in doc["profiles"]] == [
        ("myrhev", "rhv"),
        ("kvm1", "libvirt"),
    ]


def test_unknown_profile(seed: Path) -> None:
    error = _one_error(run(["profiles", "--conf", seed, "rhev2"]))
    assert error == f"vmshift: error: no profile 'rhev2' in {seed}; available: kvm1, myrhev"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("virt-v2v.conf", "<virt-v2v>\n<profile name='a'>\n", ":3: not well-formed XML: "),
        (
            "virt-v2v.conf",
            "<virt-v2v>\n\n<profile name='a'>\n<method>rhev</method></profile></virt-v2v>",
            ":3: profile 'a': no <storage>",
        ),
        ("profiles.toml", '[profile.a]\nmethod = "local\n', ":2: TOML syntax error: "),
        (
            "profiles.toml",
            '[profile.a]\nmethod = "local"\nstorage = "/x"\nallocation = "thin"\n',
            ":4: profile 'a': allocation 'thin' is not one of sparse, preallocated",
        ),
    ],
    ids=["xml-syntax", "xml-no-storage", "toml-syntax", "toml-bad-allocation"],
)
def test_malformed_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    error = _one_error(run(["profiles", "--conf", path]))
    assert error.startswith(f"vmshift: error: {path}{message}"), error
    # `convert` reads the same way and stops before reading the source.
    error = _one_error(run(["convert", "--profile", "a", "--conf", path, "-i", "vmx", "no.vmx"]))
    assert error.startswith(f"vmshift: error: {path}{message}"), error


def test_malformed_user_file_found_by_lookup(user_env: dict[str, str]) -> None:
    toml = Path(user_env["XDG_CONFIG_HOME"]) / "vmshift" / "profiles.toml"
    toml.write_text(toml.read_text().replace('method = "qemu"', 'method = "vmware"'))
    error = _one_error(run(["profiles"], env=user_env))
    assert error.startswith(f"vmshift: error: {toml}:12: profile 'kvm1': method 'vmware'"), error


# ---- vmshift convert --profile ---------------------------------------------------------------


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    return make_vm(tmp_path / "vm")


def test_the_profile_storage_is_used(
    vm: Vm, user_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mylocal says -o local -os TMP/missing-out: the local target's check names that directory.
    monkeypatch.setenv("XDG_CONFIG_HOME", user_env["XDG_CONFIG_HOME"])
    refused(
        ["--profile", "mylocal", "-i", "vmx", vm.vmx],
        sources=vm.files,
        outdir=None,
        names=[f"-os {tmp_path / 'missing-out'}", "no such directory"],
    )


def test_command_line_output_options_win(vm: Vm, seed: Path, tmp_path: Path) -> None:
    missing = tmp_path / "cli-out"
    refused(
        ["--profile", "myrhev", "--conf", seed, "-i", "vmx", vm.vmx, "-o", "local", "-os", missing],
        sources=vm.files,
        outdir=None,
        names=[f"-os {missing}", "no such directory"],
    )


def test_method_rhev_selects_the_rhv_output(vm: Vm, seed: Path) -> None:
    error = refused(
        ["--profile", "myrhev", "--conf", seed, "-i", "vmx", vm.vmx],
        sources=vm.files,
        outdir=seed.parent / "not-an-export-domain",
        names=[],
    )
    # The rhv target refuses the directory the profile names, which is no export domain.
    domain = seed.parent / "not-an-export-domain"
    assert f"-os {domain}: not an export storage domain" in error, error


@pytest.mark.slow
def test_convert_with_a_profile(
    linux_guests: dict[str, BuiltGuest], tmp_path: Path, outdir: Path, workdir: Path
) -> None:
    """A real conversion whose output options all come from a TOML profile, but for one
    network mapping the command line replaces."""
    guest = linux_guests["ubuntu"]  # -i disk: one NIC, on source network "default"
    conf = tmp_path / "site.conf"  # no .toml extension: recognised by content
    conf.write_text(
        f'[profile.lab]\nmethod = "local"\nstorage = "{outdir}"\nformat = "qcow2"\n'
        'default-network = "lab-net"\n'
        '[[profile.lab.map]]\nsource = "default"\nnetwork = "from-profile"\n'
    )
    proc = vmshift([
        "convert", "--profile", "lab", "--conf", conf, "-i", "disk", guest.disks[0],
        "--bridge", "default:br-cli", "--workdir", workdir,
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("vmshift: ubuntu configured with")
    disk = outdir / "ubuntu-sda"
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", disk], check=True, capture_output=True, text=True
    )
    assert json.loads(info.stdout)["format"] == "qcow2"  # the profile's -of
    xml = (outdir / "ubuntu.xml").read_text().replace('"', "'")
    assert "<source bridge='br-cli'/>" in xml  # the command line's mapping won
    assert "from-profile" not in xml
    assert "<driver name='qemu' type='qcow2'" in xml
