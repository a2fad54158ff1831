"""LUKS volumes: opened with the keys the user gave, before inspection, so it sees inside.

The keys follow virt-v2v's `--key SELECTOR` (libguestfs-common's key store):

    ID:key:KEY_STRING     the passphrase itself (it cannot contain ':')
    ID:file:FILENAME      the first line of FILENAME, without its newline
    ID:clevis             Clevis/Tang network unlocking: refused here (the appliance has no
                          network, and libguestfs 1.48 has no Clevis call)

ID is a device as the appliance names the guest's disks (/dev/sda2, like --root), an LVM
logical volume (/dev/VG/LV or /dev/mapper/VG-LV), the LUKS UUID, or `all` for every volume.
Several keys may match one volume: each is tried in turn. A volume no key matches is asked for
through the caller's `ask` (a terminal prompt, or --keys-from-stdin), or refused naming it.

Volumes are looked for on the partitions and on disks without a partition table, then, once
those are open and LVM rescanned, on the logical volumes (LUKS on LVM): the order libguestfs's
own tools use. Opening writes nothing to the volume; the decrypted device is read-only when the
disks are (`vmshift inspect`), and otherwise written through to the overlay like any other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vmshift.errors import UsageError
from vmshift.guest.probes import blkid_tags, listed, plain_devices
from vmshift.guest.session import GuestSession

log = logging.getLogger(__name__)

LUKS_TYPE = "crypto_LUKS"
LVM_PV_TYPE = "LVM2_member"
ALL = "all"
# A LUKS volume whose key the user must give: (device, description) -> passphrase, or None
# when there is no way to ask.
AskKey = Callable[[str, str], str | None]

_MAPPER_LV = re.compile(r"/dev/mapper/((?:[^-]|--)+)-((?:[^-]|--)+)")


@dataclass(frozen=True)
class LuksKey:
    selector: str  # a device, an LV, a LUKS UUID or "all"
    passphrase: str = field(repr=False)
    origin: str = field(default="", compare=False)  # the option as given, for messages

    def matches(self, device: str, uuid: str | None) -> bool:
        wanted = _lv_name(self.selector)
        return wanted in (ALL, device) or (uuid is not None and wanted.lower() == uuid.lower())


def parse_key_option(value: str) -> LuksKey:
    """One `--key` value; a key file is read now, so a bad one fails before the slow work."""
    fields = value.split(":")
    ident = fields[0]
    kind = fields[1] if len(fields) > 1 else ""
    if not ident:
        raise UsageError(f"--key {_shown(value)}: missing the device or UUID before ':'")
    if kind == "clevis":
        if len(fields) != 2:
            raise UsageError(f"--key {_shown(value)}: too many fields after 'clevis'")
        raise UsageError(
            f"--key {ident}:clevis: Clevis network unlocking is not supported",
            hint=f"give the volume's passphrase: --key {ident}:key:PASSPHRASE or "
            f"--key {ident}:file:FILE",
        )
    if kind not in ("key", "file"):
        raise UsageError(
            f"--key {_shown(value)}: expected ID:key:KEY_STRING, ID:file:FILENAME or ID:clevis"
        )
    if len(fields) != 3:
        what = "KEY_STRING" if kind == "key" else "FILENAME"
        raise UsageError(f"--key {_shown(value)}: missing {what}, or too many ':' fields")
    if kind == "key":
        return LuksKey(ident, fields[2], f"{ident}:key:...")
    return LuksKey(ident, read_key_file(Path(fields[2]), option=f"--key {value}"), value)


def read_key_file(path: Path, *, option: str) -> str:
    """The first line of a key file, as virt-v2v reads it (the newline removed)."""
    try:
        with path.open("rb") as f:
            line = f.readline()
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {path}: {exc.strerror}") from exc
    return line.removesuffix(b"\n").decode("utf-8", errors="surrogateescape")


def _shown(value: str) -> str:
    """A --key value fit for a message: never the passphrase."""
    fields = value.split(":")
    if len(fields) >= 3 and fields[1] == "key":
        return f"{fields[0]}:key:..."
    return value


def _lv_name(selector: str) -> str:
    """/dev/mapper/VG-LV as libguestfs names the LV: /dev/VG/LV ('--' is a '-' in a name)."""
    match = _MAPPER_LV.fullmatch(selector)
    if match is None:
        return selector
    vg, lv = (part.replace("--", "-") for part in match.groups())
    return f"/dev/{vg}/{lv}"


def unlock_volumes(
    session: GuestSession, keys: Sequence[LuksKey], ask: AskKey | None = None
) -> list[str]:
    """Open every LUKS volume on the guest's disks; return the decrypted devices."""
    g = session.g
    opened: list[str] = []
    plain = plain_devices(g)
    if _open_each(session, plain, keys, ask, opened):
        g.lvm_scan(True)  # volume groups inside the opened volumes
    # Logical volumes live in PVs: on the plain devices, or inside the volumes just opened.
    if opened or any(_type(session, dev) == LVM_PV_TYPE for dev in plain):
        _open_each(session, listed(g.lvs), keys, ask, opened)
    return opened


def _type(session: GuestSession, device: str) -> str | None:
    """blkid's TYPE (crypto_LUKS, LVM2_member, ext4 ...), asked once per session."""
    return blkid_tags(session.g, device, session.probes).get("TYPE")


def _open_each(
    session: GuestSession,
    devices: Sequence[str],
    keys: Sequence[LuksKey],
    ask: AskKey | None,
    opened: list[str],
) -> bool:
    found = False
    for device in devices:
        if _type(session, device) != LUKS_TYPE:
            continue
        found = True
        opened.append(_open(session, device, keys, ask))
    return found


def _open(session: GuestSession, device: str, keys: Sequence[LuksKey], ask: AskKey | None) -> str:
    g = session.g
    try:
        uuid: str | None = str(g.luks_uuid(device)) or None
    except RuntimeError:
        uuid = None
    where = _where(session, device, uuid)
    candidates = [k.passphrase for k in keys if k.matches(device, uuid)]
    if not candidates and ask is not None:
        asked = ask(device, where)
        candidates = [asked] if asked is not None else []
    if not candidates:
        raise UsageError(
            f"{where} is LUKS-encrypted and no key was given for it",
            hint=f"give its key with --key {device}:key:PASSPHRASE or "
            f"--key {device}:file:FILE (or --keys-from-stdin)",
        )
    mapname = f"luks-{uuid}" if uuid else "crypt" + re.sub(r"[^A-Za-z0-9]", "", device[5:])
    readonly = all(d.readonly for d in session.disks)
    last = ""
    for passphrase in candidates:
        try:
            g.cryptsetup_open(device, passphrase, mapname, readonly=readonly)
        except RuntimeError as exc:
            last = str(exc)
            continue
        log.info("opened LUKS volume %s as /dev/mapper/%s", device, mapname)
        return f"/dev/mapper/{mapname}"
    if "No key available" in last:
        tried = (
            "the key given does not open"
            if len(candidates) == 1
            else f"none of the {len(candidates)} keys given opens"
        )
        raise UsageError(
            f"{where}: {tried} this LUKS volume",
            hint=f"check the passphrase (the keys for {device}, its UUID and all were tried)",
        )
    raise UsageError(f"{where}: cannot open this LUKS volume: {last}")


def _where(session: GuestSession, device: str, uuid: str | None) -> str:
    """How to name a LUKS volume to the user: the device, its disk's file and its UUID."""
    disk = session.device_to_disk(device)
    parts = [f"on {disk.label}"] if disk is not None else []
    if uuid:
        parts.append(f"UUID {uuid}")
    return f"{device} ({', '.join(parts)})" if parts else device
