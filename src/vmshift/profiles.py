"""Where profiles are found, and which one a name means (docs/profiles.md).

Without --conf, every file of the search path that exists is read, in this order, and the first
file defining a name wins:

    $XDG_CONFIG_HOME/vmshift/profiles.toml   (default ~/.config/vmshift/profiles.toml)
    /etc/vmshift/profiles.toml
    /etc/virt-v2v.conf                       (the seed's XML)

The user's own file comes first so a user can redefine a site-wide profile without root. A
malformed file on the path is an error even when another file defines the profile: silently
skipping a file would hide the profile someone meant to use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import ConfigError
from vmshift.formats.profiles import MAX_BYTES, Profile, ProfileFile, parse_profile_file

log = logging.getLogger(__name__)

SYSTEM_FILES = (Path("/etc/vmshift/profiles.toml"), Path("/etc/virt-v2v.conf"))


def search_path(environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    env = os.environ if environ is None else environ
    # The XDG spec says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and Path(xdg).is_absolute():
        config = Path(xdg)
    else:
        config = Path(env.get("HOME") or Path.home()) / ".config"
    return (config / "vmshift" / "profiles.toml", *SYSTEM_FILES)


def read_profile_file(path: Path) -> ProfileFile:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, not a profile file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_profile_file(data, path)


@dataclass(frozen=True)
class Catalogue:
    """The profiles of the files read, in search order."""

    files: tuple[ProfileFile, ...]
    searched: tuple[Path, ...]  # every file looked for, found or not

    def all(self) -> list[Profile]:
        return [p for f in self.files for p in f.profiles]

    def visible(self) -> list[Profile]:
        """One profile per name: the first file's."""
        seen: dict[str, Profile] = {}
        for profile in self.all():
            seen.setdefault(profile.name, profile)
        return list(seen.values())

    def shadowed(self, name: str) -> list[Profile]:
        """Profiles of this name that an earlier file hides."""
        return [p for p in self.all() if p.name == name][1:]

    def get(self, name: str) -> Profile:
        for profile in self.visible():
            if profile.name == name:
                for hidden in self.shadowed(name):
                    log.info(
                        "profile %s: using %s; also defined at %s, which is ignored",
                        name,
                        profile.origin,
                        hidden.origin,
                    )
                return profile
        raise self._unknown(name)

    def _unknown(self, name: str) -> ConfigError:
        if not self.files:
            places = ", ".join(str(p) for p in self.searched)
            return ConfigError(
                f"no profile {name!r}: no profile files found (looked for {places})",
                hint="write one as docs/profiles.md shows, or name it with --conf FILE",
            )
        read = ", ".join(str(f.path) for f in self.files)
        names = ", ".join(sorted(p.name for p in self.visible()))
        if not names:
            return ConfigError(f"no profile {name!r}: {read} define no profiles")
        return ConfigError(f"no profile {name!r} in {read}; available: {names}")


def load_catalogue(conf: Path | None = None, environ: Mapping[str, str] | None = None) -> Catalogue:
    """The file named by --conf alone, else every file of the search path that exists."""
    if conf is not None:
        return Catalogue((read_profile_file(conf),), (conf,))
    paths = search_path(environ)
    files = []
    for path in paths:
        try:
            present = path.exists()
        except OSError:
            present = True  # the read says why it cannot be read
        if present:
            log.debug("reading profiles from %s", path)
            files.append(read_profile_file(path))
    return Catalogue(tuple(files), paths)
