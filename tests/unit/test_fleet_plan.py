"""fleet/plan.py: a TOML plan read into `vmshift convert` command lines, and its mistakes
refused in one line that names the file and the guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmshift.errors import ConfigError
from vmshift.fleet.plan import Limits, load_plan

# The example of issue 14, as docs/plans.md shows it.
ISSUE_EXAMPLE = """
[defaults]                      # any `vmshift convert` long option, without its dashes
output = "local"                # -o
output-storage = "/var/tmp/out" # -os
output-format = "qcow2"         # -of
network = ["VM Network:default"]

[limits]
total = 4
per-source-host = 2

[[guest]]
input = "vmx"                   # -i
args = ["/srv/vms/web01/web01.vmx"]
output-name = "web01-kvm"       # -on

[[guest]]
input = "libvirt"
input-conn = "esx://root@esxi1.example.com/?no_verify=1"   # -ic
input-password-file = "/root/esxi1.pw"                     # -ip
args = ["db01"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_the_issues_example_gives_these_command_lines(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, ISSUE_EXAMPLE))
    common = ["-o", "local", "-os", "/var/tmp/out", "-of", "qcow2", "-n", "VM Network:default"]
    web, db = plan.guests
    assert (web.name, db.name) == ("web01-kvm", "db01")
    assert web.argv() == [*common, "-i", "vmx", "-on", "web01-kvm", "/srv/vms/web01/web01.vmx"]
    assert db.argv() == [
        *common, "-i", "libvirt", "-ic", "esx://root@esxi1.example.com/?no_verify=1",
        "-ip", "/root/esxi1.pw", "db01",
    ]  # fmt: skip
    assert plan.limits == Limits(total=4, per_source_host=2, per_target_storage=None)
    assert (web.source_host, db.source_host) == ("localhost", "esxi1.example.com")
    assert web.target_storage == db.target_storage == "local::/var/tmp/out"
    assert plan.directory == tmp_path


def test_a_guest_overrides_the_defaults_under_any_name_of_the_option(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            """
[defaults]
output = "local"
output-storage = "/a"
verify-copy = false
memory = "2G"

[[guest]]
output = "null"
memsize = "4G"
args = ["one.img"]
input = "disk"

[[guest]]
output-storage = "/b"
no-verify-copy = false
args = ["two.img"]
input = "disk"
""",
        )
    )
    one, two = plan.guests
    assert one.argv()[:4] == ["-o", "null", "-os", "/a"]
    assert one.options["memory"] == "4G" and "memsize" not in one.options
    assert one.argv().count("4G") == 1 and "2G" in two.argv()
    assert "--no-verify-copy" in one.argv()
    assert two.argv()[:4] == ["-o", "local", "-os", "/b"]
    assert "--no-verify-copy" not in two.argv()
    assert (one.name, two.name) == ("one", "two")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[guest]]\nargs = ["a.img"]\nfrobnicate = 1\n',
         "[[guest]] 1: unknown key 'frobnicate' (not a `vmshift convert` option)"),
        ('[[guest]]\nargs = ["a.img"]\n[[guest]]\nargs = ["b.img"]\noutput-format = true\n',
         "[[guest]] 2: output-format takes a string or a number, not True"),
        ('[[guest]]\nargs = ["a.img"]\nno-secure-boot = "yes"\n',
         "[[guest]] 1: no-secure-boot takes true or false, not 'yes'"),
        ('[[guest]]\ninput = "disk"\n', "[[guest]] 1: args names no guest"),
        ('[[guest]]\nargs = ["a.img"]\nskip = "no"\n', "[[guest]] 1: skip takes true or false"),
        ('[[guest]]\nargs = ["a.img"]\nblock-driver = "ahci"\n',
         "[[guest]] 1: argument --block-driver: invalid choice: 'ahci'"),
        ('[limits]\ntotal = 0\n', "[limits]: total must be a whole number of at least 1"),
        ('[limits]\nper-host = 2\n', "[limits]: unknown key 'per-host'"),
        ('[defaults]\nmachine-readable = true\n', "[defaults]: unknown key 'machine-readable'"),
        ("[[guest]\n", "not a valid TOML plan"),
        ('[frobs]\n', "unknown table or key 'frobs'"),
    ],
)  # fmt: skip
def test_a_mistake_is_one_line_naming_the_file_and_the_guest(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_plan(path)
    assert caught.value.message.startswith(f"{path}"), caught.value.message
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_two_guests_of_the_same_name_are_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[guest]]
input = "disk"
args = ["/x/web.img"]

[[guest]]
input = "vmx"
args = ["/y/web.vmx"]
""",
    )
    with pytest.raises(ConfigError) as caught:
        load_plan(path)
    assert caught.value.message == f"{path}: guests 1 and 2 are both named 'web'"
    assert caught.value.hint == "give one of them output-name"


@pytest.mark.parametrize(
    ("conn", "arg", "host"),
    [
        ("esx://root@esxi1.example.com/?no_verify=1", "db01", "esxi1.example.com"),
        ("vpx://admin@vc.example.com/DC/Cluster/esxi7.example.com?no_verify=1", "db01",
         "esxi7.example.com"),
        ("vpx://admin@vc.example.com/DC/esxi8?no_verify=1", "db01", "esxi8"),
        (None, "ssh://root@box.example.com/vmfs/volumes/ds1/db01/db01.vmx", "box.example.com"),
        (None, "/srv/vms/db01/db01.vmx", "localhost"),
    ],
)  # fmt: skip
def test_the_source_host_a_guest_counts_against(
    tmp_path: Path, conn: str | None, arg: str, host: str
) -> None:
    mode = "libvirt" if conn else "vmx"
    lines = [f'input = "{mode}"', f'args = ["{arg}"]']
    if conn:
        lines.append(f'input-conn = "{conn}"')
    plan = load_plan(write(tmp_path, "[[guest]]\n" + "\n".join(lines) + "\n"))
    assert plan.guests[0].source_host == host


def test_source_host_and_skip_are_the_plans_own_keys(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            """
[[guest]]
input = "disk"
args = ["a.img"]
source-host = "rack3"

[[guest]]
input = "disk"
args = ["b.img"]
skip = true
""",
        )
    )
    a, b = plan.guests
    assert a.source_host == "rack3" and "rack3" not in a.argv()
    assert b.skip and [g.name for g in plan.active()] == ["a"]


def test_limits_default_to_two_per_source_host_and_no_storage_limit(tmp_path: Path) -> None:
    plan = load_plan(write(tmp_path, '[limits]\ntotal = 3\n[[guest]]\nargs = ["a.img"]\n'))
    assert plan.limits == Limits(total=3, per_source_host=2, per_target_storage=None)
