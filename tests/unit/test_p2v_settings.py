"""The P2V client's settings from the kernel command line (or --cmdline) and a config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmshift.errors import ConfigError, UsageError
from vmshift.p2v.settings import (
    P2VSettings,
    Resize,
    cmdline_words,
    merge,
    parse_cmdline,
    parse_config_file,
)

GIB = 1 << 30
MIB = 1 << 20
HOSTKEY = "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8"


def test_every_key() -> None:
    text = (
        "BOOT_IMAGE=/vmlinuz root=live:CDLABEL=p2v quiet "
        "p2v.server=conv.example.com p2v.port=2222 p2v.user=p2v "
        "p2v.identity=file:///root/.ssh/id%20p2v p2v.hostkey=" + HOSTKEY + " "
        "p2v.password=s3cret#1 p2v.profile=rhv p2v.name=web01 p2v.vcpus=4 p2v.memory=4G "
        "p2v.disks=sda,/dev/loop3 p2v.partitions=sda1,/dev/sda2 "
        "p2v.resize=/dev/sda2:+10G,sda3:20G,sda5:-512M p2v.removable=sr0 "
        "p2v.interfaces=eth0,eth1 p2v.network=eth0:default,eth1:br0 p2v.compress=off "
        "p2v.post=reboot"
    )
    assert parse_cmdline(text) == P2VSettings(
        server="conv.example.com",
        port=2222,
        user="p2v",
        identity="/root/.ssh/id p2v",
        hostkey=HOSTKEY,
        password="s3cret#1",
        profile="rhv",
        name="web01",
        vcpus=4,
        memory=4 * GIB,
        disks=("sda", "/dev/loop3"),
        partitions=("sda1", "/dev/sda2"),
        resize=(
            Resize("/dev/sda2", 10 * GIB, relative=True),
            Resize("sda3", 20 * GIB),
            Resize("sda5", -512 * MIB, relative=True),
        ),
        removable=("sr0",),
        interfaces=("eth0", "eth1"),
        network=(("eth0", "default"), ("eth1", "br0")),
        compress=False,
        post="reboot",
    )


def test_defaults_and_other_words() -> None:
    settings = parse_cmdline("BOOT_IMAGE=/vmlinuz quiet splash p2vserver=x -- single")
    assert settings == P2VSettings()
    assert not settings.unattended
    assert parse_cmdline("p2v.server=10.0.0.1").unattended


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('p2v.name="web 01"', "web 01"),
        ('"p2v.name=web 01"', "web 01"),
        ('quiet p2v.name="a  b" p2v.vcpus=2', "a  b"),
        ("p2v.name=first p2v.name=second", "second"),
    ],
)
def test_quoting(text: str, name: str) -> None:
    assert parse_cmdline(text).name == name


def test_words() -> None:
    assert cmdline_words(' a  b="c d"\te\n"f g" h=""\n') == ["a", "b=c d", "e", "f g", "h="]


def test_empty_value_is_the_default() -> None:
    base = parse_cmdline("p2v.password=x p2v.port=2222 p2v.compress=off")
    assert parse_cmdline('p2v.password= p2v.port="" p2v.compress=', base) == P2VSettings()


@pytest.mark.parametrize(
    ("value", "size"),
    [("2048", 2 * GIB), ("4G", 4 * GIB), ("4GiB", 4 * GIB), ("512M", 512 * MIB),
     ("1048576K", GIB), ("4g", 4 * GIB)],
)  # fmt: skip
def test_memory(value: str, size: int) -> None:
    assert parse_cmdline(f"p2v.memory={value}").memory == size


@pytest.mark.parametrize(
    ("value", "flag"),
    [("on", True), ("yes", True), ("true", True), ("1", True), ("ON", True),
     ("off", False), ("no", False), ("false", False), ("0", False)],
)  # fmt: skip
def test_compress(value: str, flag: bool) -> None:
    assert parse_cmdline(f"p2v.compress={value}").compress is flag


@pytest.mark.parametrize("post", ["poweroff", "reboot", "shell", "exit"])
def test_post(post: str) -> None:
    assert parse_cmdline(f"p2v.post={post}").post == post


@pytest.mark.parametrize(
    ("value", "path"),
    [("/root/.ssh/id_ed25519", "/root/.ssh/id_ed25519"),
     ("file:///root/.ssh/id_ed25519", "/root/.ssh/id_ed25519"),
     ("file://localhost/etc/p2v/key", "/etc/p2v/key"),
     ("keys/id_rsa", "keys/id_rsa")],
)  # fmt: skip
def test_identity(value: str, path: str) -> None:
    assert parse_cmdline(f"p2v.identity={value}").identity == path


def test_unknown_key() -> None:
    with pytest.raises(UsageError) as info:
        parse_cmdline("quiet p2v.sever=conv.example.com")
    assert str(info.value).startswith("p2v.sever: unknown option (known: p2v.server p2v.port")
    assert "\n" not in str(info.value)


def test_key_without_value() -> None:
    with pytest.raises(
        UsageError, match=r"^p2v\.compress: needs a value \(p2v\.compress=\.\.\.\)$"
    ):
        parse_cmdline("p2v.compress")


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("p2v.port=ssh", "p2v.port=ssh: expected a port number, 1 to 65535"),
        ("p2v.port=0", "p2v.port=0: expected a port number, 1 to 65535"),
        ("p2v.port=65536", "p2v.port=65536: expected a port number, 1 to 65535"),
        ('"p2v.server=conv example"', "p2v.server=conv example: a host name has no blanks"),
        ("p2v.vcpus=0", "p2v.vcpus=0: expected a number of 1 or more"),
        ("p2v.vcpus=two", "p2v.vcpus=two: expected a number of 1 or more"),
        ("p2v.memory=4T", "p2v.memory=4T: expected a size such as 2048 (MiB), 512M or 4G"),
        ("p2v.memory=lots", "p2v.memory=lots: expected a size such as 2048 (MiB), 512M or 4G"),
        ("p2v.memory=0", "p2v.memory=0: the size is 0"),
        (
            "p2v.hostkey=SHA256:abc",
            "p2v.hostkey=SHA256:abc: expected SHA256: and 43 base64 characters (ssh-keygen -lf)",
        ),
        (
            "p2v.hostkey=" + HOSTKEY + "=",
            f"p2v.hostkey={HOSTKEY}=: expected SHA256: and 43 base64 characters (ssh-keygen -lf)",
        ),
        (
            "p2v.hostkey=MD5:" + HOSTKEY[7:],
            f"p2v.hostkey=MD5:{HOSTKEY[7:]}: expected SHA256: and 43 base64 characters "
            "(ssh-keygen -lf)",
        ),
        (
            "p2v.identity=https://example.com/id",
            "p2v.identity=https://example.com/id: expected a path or a file:// URL of the "
            "private key",
        ),
        (
            "p2v.identity=file://other/id",
            "p2v.identity=file://other/id: expected a path or a file:// URL of the private key",
        ),
        ("p2v.disks=sda,,sdb", "p2v.disks=sda,,sdb: an empty name in the list"),
        ("p2v.resize=sda2", "p2v.resize=sda2: sda2: expected PARTITION:SIZE, +SIZE or -SIZE"),
        ("p2v.resize=sda2:+", "p2v.resize=sda2:+: expected a size such as 2048 (MiB), 512M or 4G"),
        ("p2v.resize=sda2:+0", "p2v.resize=sda2:+0: the size is 0"),
        (
            "p2v.resize=sda2:10X",
            "p2v.resize=sda2:10X: expected a size such as 2048 (MiB), 512M or 4G",
        ),
        ("p2v.network=eth0", "p2v.network=eth0: eth0: expected INTERFACE:NETWORK"),
        ("p2v.network=eth0:", "p2v.network=eth0:: eth0:: expected INTERFACE:NETWORK"),
        ("p2v.compress=maybe", "p2v.compress=maybe: expected on or off (yes/no, true/false, 1/0)"),
        ("p2v.post=halt", "p2v.post=halt: expected one of poweroff, reboot, shell, exit"),
    ],
)
def test_bad_values(word: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_cmdline(f"quiet {word} p2v.server=x")
    assert str(info.value) == message


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "p2v.conf"
    path.write_text(
        "# the conversion server\n"
        "p2v.server=conv.example.com\n"
        "  user = p2v  \n"
        "\n"
        "password=pa ss#word\n"
        'name="web 01"\n'
        "p2v.memory = 2048\n"
        "network=eth0:default\n"
        "compress=no\n"
    )
    assert parse_config_file(path) == P2VSettings(
        server="conv.example.com",
        user="p2v",
        password="pa ss#word",
        name="web 01",
        memory=2 * GIB,
        network=(("eth0", "default"),),
        compress=False,
    )


def test_config_file_under_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "p2v.conf"
    path.write_text("server=conv.example.com\ncompress=off\nname=from-file\nvcpus=2\n")
    exact = parse_cmdline("p2v.name=from-cmdline p2v.compress=on", parse_config_file(path))
    assert (exact.server, exact.name, exact.vcpus, exact.compress) == (
        "conv.example.com", "from-cmdline", 2, True,
    )  # fmt: skip
    # merge() takes what the command line set to other than the default: compress=on is the
    # default, so the file's off stays.
    merged = merge(parse_config_file(path), parse_cmdline("p2v.name=from-cmdline p2v.compress=on"))
    assert (merged.server, merged.name, merged.vcpus, merged.compress) == (
        "conv.example.com", "from-cmdline", 2, False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server=x\nsever=y\n", ":2: p2v.sever: unknown option (known: p2v.server"),
        ("server=x\n\n# c\nport=http\n", ":4: p2v.port=http: expected a port number, 1 to 65535"),
        ("server x\n", ":1: expected p2v.KEY=VALUE, not 'server x'"),
        ("=x\n", ":1: expected p2v.KEY=VALUE, not '=x'"),
    ],
)
def test_config_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p2v.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        parse_config_file(path)
    assert str(info.value).startswith(f"{path}{message}")
    assert "\n" not in str(info.value)


def test_config_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_file(tmp_path / "none.conf")
    assert str(info.value) == f"{tmp_path / 'none.conf'}: cannot read it: No such file or directory"
