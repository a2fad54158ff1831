"""What both profile formats share: the parsed profiles, their errors, the allowed values."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vmshift.errors import ConfigError

# method -> the -o name it selects. "rhev" is the seed's word; the rest are vmshift's outputs.
METHODS: dict[str, str] = {
    "rhev": "rhv",
    "rhv": "rhv",
    "ovirt": "rhv",
    "libvirt": "libvirt",
    "local": "local",
    "disk": "local",
    "qemu": "qemu",
    "null": "null",
}
FORMATS = ("raw", "qcow2")
ALLOCATIONS = ("sparse", "preallocated")
DATA_DOMAIN_TYPES = ("nfs", "iscsi", "fc")
OUT_TYPES = ("network", "bridge")

# Hand-written configuration is a few kilobytes; refuse to parse anything absurd.
MAX_BYTES = 4 << 20


class ProfileError(ConfigError):
    """A profile file that cannot be used; the message names the file and, when known, line."""

    def __init__(
        self, path: Path, line: int | None, problem: str, *, hint: str | None = None
    ) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {problem}", hint=hint)
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class NetworkRule:
    """One mapping: NICs on source network `source` go to `out_type` `out_name`."""

    source: str | None  # None: the default, for NICs no other rule matches
    out_type: str  # "network" or "bridge"
    out_name: str
    source_type: str | None = None  # "network"/"bridge" as the file says (NICs match by name)
    line: int | None = None

    def describe(self) -> str:
        if self.source is None:
            src = "default"
        else:
            src = f"{self.source_type} {self.source}" if self.source_type else self.source
        return f"{src} -> {self.out_type} {self.out_name}"


@dataclass(frozen=True)
class Profile:
    name: str
    method: str  # as written in the file
    output: str  # the -o output it selects (METHODS[method])
    storage: str | None  # -os; None only for method null
    path: Path
    line: int | None
    format: str | None = None  # -of
    allocation: str | None = None  # -oa
    conn: str | None = None  # -oc (TOML only)
    rhv_data_domain_type: str | None = None  # --rhv-data-domain-type (TOML only)
    networks: tuple[NetworkRule, ...] = ()  # this profile's own mappings
    file_networks: tuple[NetworkRule, ...] = ()  # the file's top-level mappings

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.line}" if self.line else str(self.path)

    def effective_networks(self) -> tuple[NetworkRule, ...]:
        """The rules that apply, one per source name plus at most one default.

        As in the seed: the profile's own rules win over the file's top-level ones for the same
        source; a top-level rule for a specific source still beats the profile's default,
        because a specific rule always beats the default when NICs are matched."""
        chosen: dict[str | None, NetworkRule] = {r.source: r for r in self.file_networks}
        chosen.update({r.source: r for r in self.networks})
        return tuple(chosen.values())


@dataclass(frozen=True)
class ProfileFile:
    path: Path
    kind: Literal["xml", "toml"]
    profiles: tuple[Profile, ...]


def check_choice(
    path: Path, line: int | None, what: str, value: str, choices: Iterable[str]
) -> str:
    allowed = list(choices)
    if value not in allowed:
        raise ProfileError(path, line, f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


def add_rule(
    path: Path, scope: dict[str | None, NetworkRule], rule: NetworkRule, where: str
) -> None:
    """One rule per source name in a scope: NICs are matched by name only, so two rules for the
    same name (even one for a bridge and one for a network) could not both be honoured."""
    old = scope.get(rule.source)
    if old is not None:
        what = "the default network" if rule.source is None else f"network {rule.source!r}"
        at = f" at line {old.line}" if old.line else ""
        raise ProfileError(path, rule.line, f"{where}: {what} is already mapped{at}")
    scope[rule.source] = rule
