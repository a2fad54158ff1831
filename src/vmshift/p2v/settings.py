"""The P2V client's settings: what the kernel command line, a config file or the UI say.

`P2VSettings` is what every way in produces; the parsers below (from the `p2v.KEY=VALUE`
words of a kernel command line or `vmshift-p2v --cmdline`, and from a config file of the same
keys) raise UsageError naming the key at fault.

The parsers' rules:
- Only words starting with `p2v.` count; the others belong to the kernel or init. A `p2v.` key
  that is not known is an error (a typo must not be dropped silently), as is one without `=`.
- A value may be quoted with double quotes as the kernel allows: `p2v.name="web 01"` or
  `"p2v.name=web 01"`; the quotes are dropped. A later word wins over an earlier one.
- An empty value (`p2v.password=`) means the default, as if the key were not given.
- Sizes (p2v.memory, p2v.resize) are those of `--memory`: a plain number is MiB (as virt-p2v
  takes p2v.memory), or with a suffix K, M, G (KiB, MB ... alike: powers of 1024).
- Lists are comma-separated; p2v.network is IN:OUT pairs, p2v.resize PARTITION:SIZE with a
  leading + or - for a change in size.
- A config file holds one `p2v.KEY=VALUE` or `KEY=VALUE` per line; blank lines and lines
  starting with `#` are skipped (a `#` inside a value is part of it: passwords may hold one);
  a value wrapped in double quotes loses them. Its errors are ConfigErrors naming FILE:LINE.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from vmshift.cli.options import memory_size
from vmshift.errors import ConfigError, UsageError

POSTS = ("poweroff", "reboot", "shell", "exit")


@dataclass(frozen=True)
class Resize:
    """p2v.resize=/dev/sda2:+10G: a partition and its new size."""

    partition: str  # as given: /dev/sda2 or sda2
    size: int  # bytes: the new size, or the change when relative
    relative: bool = False  # +10G / -2G: size is a change (negative shrinks)


@dataclass(frozen=True)
class P2VSettings:
    server: str | None = None  # p2v.server=
    port: int = 22  # p2v.port=
    user: str = "root"  # p2v.user=
    identity: str | None = None  # p2v.identity=: a path or file:// URL of the private key
    hostkey: str | None = None  # p2v.hostkey=SHA256:...: the server's host key fingerprint
    password: str | None = None  # p2v.password=
    profile: str | None = None  # p2v.profile=: a profile on the server
    name: str | None = None  # p2v.name=: the guest's name (default: the hostname)
    vcpus: int | None = None  # p2v.vcpus= (default: the machine's)
    memory: int | None = None  # p2v.memory=, bytes (default: the machine's)
    disks: tuple[str, ...] = ()  # p2v.disks=sda,sdb or /dev/loop3 (default: every fixed disk)
    partitions: tuple[str, ...] = ()  # p2v.partitions=sda1,sda2: only these (default: all)
    resize: tuple[Resize, ...] = ()  # p2v.resize=/dev/sda2:+10G,...
    removable: tuple[str, ...] = ()  # p2v.removable=sr0: removable media to give the guest
    interfaces: tuple[str, ...] = ()  # p2v.interfaces=eth0: NICs to give the guest (default all)
    network: tuple[tuple[str, str], ...] = ()  # p2v.network=eth0:default,eth1:br0
    compress: bool = True  # p2v.compress=on|off
    post: str | None = None  # p2v.post=: None means the mode's default (poweroff, or exit)

    @property
    def unattended(self) -> bool:
        """The kernel command line (or --cmdline) names a server: run at once, no UI."""
        return self.server is not None


_DEFAULTS = P2VSettings()
_HOSTKEY = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
_TRUE = frozenset({"on", "yes", "true", "1"})
_FALSE = frozenset({"off", "no", "false", "0"})


def parse_cmdline(text: str, base: P2VSettings = _DEFAULTS) -> P2VSettings:
    """The settings the `p2v.` words of a kernel command line give, over base."""
    settings = base
    for word in cmdline_words(text):
        if word.startswith("p2v."):
            key, sep, value = word.removeprefix("p2v.").partition("=")
            if not sep:
                raise UsageError(f"p2v.{key}: needs a value (p2v.{key}=...)")
            settings = _apply(settings, key, value)
    return settings


def parse_config_file(path: Path, base: P2VSettings = _DEFAULTS) -> P2VSettings:
    """The settings of a config file (see the module's docstring), over base."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {getattr(exc, 'strerror', exc)}") from exc
    settings = base
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip().removeprefix("p2v."), value.strip()
        if not sep or not key:
            raise ConfigError(f"{path}:{number}: expected p2v.KEY=VALUE, not {line!r}")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        try:
            settings = _apply(settings, key, value)
        except UsageError as exc:
            raise ConfigError(f"{path}:{number}: {exc.message}") from exc
    return settings


def merge(base: P2VSettings, override: P2VSettings) -> P2VSettings:
    """base with each setting override gives: every field of override that is not the
    default. (A setting given as its default cannot undo base's; for that, parse one source
    over the other: `parse_cmdline(text, base=parse_config_file(path))`.)"""
    given = {
        f.name: getattr(override, f.name)
        for f in fields(P2VSettings)
        if getattr(override, f.name) != getattr(_DEFAULTS, f.name)
    }
    return replace(base, **given)


def cmdline_words(text: str) -> list[str]:
    """The words of a kernel command line: split at blanks outside double quotes, the quotes
    dropped (`p2v.name="web 01"` is the word `p2v.name=web 01`)."""
    words: list[str] = []
    word: list[str] | None = None  # None between words; [] in a word still empty ("")
    quoted = False
    for char in text:
        if char.isspace() and not quoted:
            if word is not None:
                words.append("".join(word))
            word = None
            continue
        word = word if word is not None else []
        if char == '"':
            quoted = not quoted
        else:
            word.append(char)
    if word is not None:
        words.append("".join(word))
    return words


def _apply(settings: P2VSettings, key: str, value: str) -> P2VSettings:
    parse = _PARSERS.get(key)
    if parse is None:
        known = " ".join(f"p2v.{k}" for k in _PARSERS)
        raise UsageError(f"p2v.{key}: unknown option (known: {known})")
    if value == "":
        return replace(settings, **{key: getattr(_DEFAULTS, key)})
    try:
        return replace(settings, **{key: parse(value)})
    except ValueError as exc:
        raise UsageError(f"p2v.{key}={value}: {exc}") from exc


def _text(value: str) -> str:
    return value


def _host(value: str) -> str:
    if any(c.isspace() for c in value):
        raise ValueError("a host name has no blanks")
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError("expected a port number, 1 to 65535")
    return int(value)


def _count(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError("expected a number of 1 or more")
    return int(value)


def _identity(value: str) -> str:
    """A path, or a file:// URL of one (file:///root/.ssh/id_ed25519): the local path."""
    if "://" not in value:
        return value
    url = urlsplit(value)
    if url.scheme != "file" or url.netloc not in ("", "localhost") or not url.path:
        raise ValueError("expected a path or a file:// URL of the private key")
    return unquote(url.path)


def _hostkey(value: str) -> str:
    if _HOSTKEY.fullmatch(value) is None:
        raise ValueError("expected SHA256: and 43 base64 characters (ssh-keygen -lf)")
    return value


def _size(value: str) -> int:
    try:
        size = memory_size(value)
    except UsageError:
        raise ValueError("expected a size such as 2048 (MiB), 512M or 4G") from None
    if size == 0:
        raise ValueError("the size is 0")
    return size


def _names(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(","))
    if not all(names):
        raise ValueError("an empty name in the list")
    return names


def _resize(value: str) -> tuple[Resize, ...]:
    found = []
    for item in _names(value):
        partition, _, size = item.rpartition(":")
        if not partition:
            raise ValueError(f"{item}: expected PARTITION:SIZE, +SIZE or -SIZE")
        sign = size[:1] if size[:1] in ("+", "-") else ""
        amount = _size(size.removeprefix(sign))
        found.append(Resize(partition, -amount if sign == "-" else amount, bool(sign)))
    return tuple(found)


def _network(value: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _names(value):
        source, _, target = item.partition(":")
        if not source or not target:
            raise ValueError(f"{item}: expected INTERFACE:NETWORK")
        pairs.append((source, target))
    return tuple(pairs)


def _flag(value: str) -> bool:
    if value.lower() not in _TRUE | _FALSE:
        raise ValueError("expected on or off (yes/no, true/false, 1/0)")
    return value.lower() in _TRUE


def _post(value: str) -> str:
    if value not in POSTS:
        raise ValueError(f"expected one of {', '.join(POSTS)}")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "server": _host,
    "port": _port,
    "user": _text,
    "identity": _identity,
    "hostkey": _hostkey,
    "password": _text,
    "profile": _text,
    "name": _text,
    "vcpus": _count,
    "memory": _size,
    "disks": _names,
    "partitions": _names,
    "resize": _resize,
    "removable": _names,
    "interfaces": _names,
    "network": _network,
    "compress": _flag,
    "post": _post,
}
