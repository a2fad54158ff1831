"""virt-v2v's `-i vmx -it ssh ssh://...` argument, and how the command line wires -it, -io and -ip
for it (and refuses them elsewhere)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from tests.unit.test_v2v_options import convert_args
from vmshift.cli import convert_cmd, mode_options
from vmshift.errors import UsageError
from vmshift.sources.ssh_uri import SshUri, parse_ssh_uri
from vmshift.sources.vmx import VmxSource


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "ssh://root@esxi.example.com/vmfs/volumes/datastore1/web01/web01.vmx",
            SshUri(
                "root",
                "esxi.example.com",
                22,
                PurePosixPath("/vmfs/volumes/datastore1/web01/web01.vmx"),
            ),
        ),
        (
            "ssh://esxi:2222/vmfs/volumes/datastore1/my%20guest/my%20guest.vmx",
            SshUri(
                None, "esxi", 2222, PurePosixPath("/vmfs/volumes/datastore1/my guest/my guest.vmx")
            ),
        ),
        (
            "SSH://admin%40corp@[fd00::5]:22/vmfs/volumes/ds%231/g/g.vmx",
            SshUri("admin@corp", "fd00::5", 22, PurePosixPath("/vmfs/volumes/ds#1/g/g.vmx")),
        ),
    ],
)
def test_uris(uri: str, expected: SshUri) -> None:
    assert parse_ssh_uri(uri) == expected


def test_known_hosts_name() -> None:
    assert parse_ssh_uri("ssh://h/x.vmx").known_hosts_name == "h"
    assert parse_ssh_uri("ssh://h:2222/x.vmx").known_hosts_name == "[h]:2222"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/vmfs/volumes/ds/g/g.vmx", "expected ssh://[USER@]HOST[:PORT]/PATH/GUEST.vmx"),
        ("esx://h/", "expected ssh://"),
        ("ssh:///vmfs/g.vmx", "expected ssh://"),
        ("ssh://root:hunter2@h/g.vmx", "a password in the URI is refused"),
        ("ssh://h:port/g.vmx", "the port is not a number"),
        ("ssh://h:0/g.vmx", "the port is not a number"),
        ("ssh://h:70000/g.vmx", "the port is not a number"),
        ("ssh://h", "the path must be the VMX file's absolute path"),
        ("ssh://h/vmfs/volumes/ds/g/", "the path must be the VMX file's absolute path"),
        ("ssh://h/vmfs/volumes/../../etc/passwd", "the path must be the VMX file's absolute path"),
        ("ssh://h/g/g.vmx?x=1", "must be written %3F"),
    ],
)
def test_bad_uris(uri: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_ssh_uri(uri)
    assert message in exc.value.message
    assert "hunter2" not in exc.value.message


# ---- the command line ----------------------------------------------------------------------

URI = "ssh://root@esxi/vmfs/volumes/datastore1/web01/web01.vmx"


def test_it_ssh_picks_the_ssh_transport(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("not read before open()")
    pw = tmp_path / "pw"
    pw.write_text("ssh pass\n")
    args = convert_args(
        "-i", "vmx", "-it", "ssh", URI, "-io", f"ssh-identity={key}", "-io",
        "ssh-known-hosts=/etc/hostname", "-ip", pw,
    )  # fmt: skip
    assert mode_options.input_transport(args) == "ssh"
    assert mode_options.input_password(args) == "ssh pass"
    assert mode_options.input_options(args) == {
        "ssh-identity": str(key),
        "ssh-known-hosts": "/etc/hostname",
    }
    source = convert_cmd.make_source(args)  # no connection yet: that is open()'s work
    assert isinstance(source, VmxSource)
    assert source.display == URI and source.path == PurePosixPath(
        "/vmfs/volumes/datastore1/web01/web01.vmx"
    )


def test_io_listing_for_ssh() -> None:
    args = convert_args("-i", "vmx", "-it", "ssh", URI, "-io", "?")
    listing = mode_options.wants_help(args)
    assert listing is not None
    assert listing.splitlines()[0] == "Input options (-io) of -i vmx -it ssh:"
    assert "ssh-known-hosts" in listing and "ssh-identity" in listing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-i", "vmx", "-it", "vddk", "g.vmx"], "-it vddk: -i vmx takes only -it ssh"),
        (["-i", "disk", "-it", "ssh", "d.img"], "-it ssh: -i disk takes no -it"),
        (["-i", "ova", "-it", "ssh", "g.ova"], "-it ssh: -i ova takes no -it"),
    ],
)
def test_it_where_it_does_not_belong(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        convert_cmd.make_source(convert_args(*argv))
    assert exc.value.message.startswith(message)


def test_ssh_options_need_it_ssh(tmp_path: Path) -> None:
    local = convert_args("-i", "vmx", "g.vmx", "-io", "ssh-identity=/etc/hostname")
    with pytest.raises(UsageError, match=r"^-io ssh-identity=/etc/hostname: -i vmx takes no"):
        mode_options.input_options(local)
    bad = convert_args("-i", "vmx", "-it", "ssh", URI, "-io", "ssh-identity")
    with pytest.raises(UsageError, match="takes ssh-known-hosts=VALUE, ssh-identity=VALUE"):
        mode_options.input_options(bad)
    missing = convert_args("-i", "vmx", "-it", "ssh", URI, "-io", f"ssh-identity={tmp_path}/no")
    with pytest.raises(UsageError, match=r"^-io ssh-identity=.*/no: no such file$"):
        convert_cmd.make_source(missing)


def test_vmx_over_ssh_takes_one_uri() -> None:
    with pytest.raises(UsageError, match="exactly one argument: the guest's ssh:// URI"):
        convert_cmd.make_source(convert_args("-i", "vmx", "-it", "ssh", URI, URI))
