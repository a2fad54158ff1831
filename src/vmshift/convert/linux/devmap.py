"""Block device names before and after conversion, and the text edits that follow from them.

Pure: no libguestfs. devices.py reads the guest's files, asks here what the names become and
writes the results back.

How the map is made (virt-v2v makes the same assumption): the converted guest's disks are the
source disks in the same order, so the i-th source disk becomes vd<i> on virtio-blk and sd<i>
on virtio-scsi or SATA. What the i-th disk was called in the source depends on its controller
(pvscsi, LSI Logic and SATA: sdX; IDE: sdX under libata, hdX on old kernels; virtio-blk: vdX;
NVMe: nvmeNn1). On top of that prediction, the disk names the guest's own files use (Xen's
xvdX, an HP Smart Array's cciss/c0dN, an IDE name on a source that did not say its controller)
are mapped by position too, which is also how libguestfs resolves them during inspection.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from vmshift.model.devnames import drive_letters
from vmshift.model.vm import Controller, Removable, SourceDisk

# A whole-disk name as the kernel spells it. Partitions follow directly (sda1) for the letter
# families and after a "p" (nvme0n1p1, cciss/c0d0p1) for the others.
_DISK = r"(?:(?:xvd|vd|sd|hd)[a-z]+|nvme\d+n\d+|cciss/c\d+d\d+)"
# /dev/NAME[PART] standing alone: not inside a longer path or word (/mnt/dev/sda, /dev/sdaa),
# not a directory (/dev/sdvg/lv is a volume group named sdvg).
_DEV = re.compile(rf"(?<![\w/.-])/dev/(?P<disk>{_DISK})(?P<part>p?\d+)?(?![\w/])")
_LETTER_FAMILIES = ("sd", "hd", "vd", "xvd")
_COMMENT = re.compile(r"^\s*#")


def ide_prefix(family: str, distro: str, major: int) -> str:
    """What the guest's kernel calls IDE disks: hdX on kernels from before libata took over
    parallel ATA (RHEL <= 5, SLES/openSUSE 10, Debian <= 5, Ubuntu <= 6), else sdX."""
    last_hd = {"ubuntu": 6}.get(distro) or {"rhel": 5, "suse": 10, "debian": 5}.get(family)
    return "hd" if last_hd is not None and 0 < major <= last_hd else "sd"


def target_prefix(block_bus: str, ide: str = "sd") -> str:
    if block_bus == "virtio-blk":
        return "vd"
    if block_bus == "ide":
        return ide
    return "sd"  # virtio-scsi, sata, scsi


def target_names(count: int, block_bus: str, ide: str = "sd") -> list[str]:
    """The converted guest's disk names, in source order."""
    prefix = target_prefix(block_bus, ide)
    return [prefix + drive_letters(i) for i in range(count)]


def _family(disk: str) -> str:
    """sd, hd, vd, xvd, nvme, cciss; "other" for a name such as "cdrom"."""
    for family in ("xvd", "sd", "hd", "vd", "nvme", "cciss/"):
        if disk.startswith(family):
            return family.rstrip("/")
    return "other"


def _letters_index(disk: str, family: str) -> int:
    """The position a letter-named disk stands for: sda -> 0, sdab -> 27."""
    index = 0
    for ch in disk[len(family) :]:
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def _position(disk: str) -> tuple[str, int] | None:
    """(family, index) of a used name that positional mapping understands."""
    family = _family(disk)
    if family in _LETTER_FAMILIES:
        return family, _letters_index(disk, family)
    m = re.fullmatch(r"nvme(\d+)n1", disk) or re.fullmatch(r"cciss/c0d(\d+)", disk)
    if m:
        return family, int(m[1])
    return None  # nvme namespaces other than 1, a second cciss controller: no guess


def device_map(
    disks: Sequence[SourceDisk],
    block_bus: str,
    *,
    ide: str = "sd",
    removables: Sequence[Removable] = (),
    used: Iterable[str] = (),
) -> dict[str, str]:
    """Source disk name -> converted disk name ("sda" -> "vda"), identities included.

    `disks` are the source disks in order; `ide` is ide_prefix() of the guest; `used` the disk
    names the guest's files mention (device_names()), which are mapped by position when the
    controllers did not predict them."""
    targets = target_names(len(disks), block_bus, ide)
    mapping: dict[str, str] = {}
    counters = {"sd": 0, "vd": 0, "nvme": 0}
    for disk, target in zip(disks, targets, strict=True):
        if disk.controller is Controller.IDE and ide == "hd":
            # The old IDE driver names by position on the cable, not by probe order:
            # ide0:0 -> hda, ide0:1 -> hdb, ide1:0 -> hdc.
            source = "hd" + drive_letters(disk.bus * 2 + disk.unit)
        elif disk.controller is Controller.VIRTIO_BLK:
            source = "vd" + drive_letters(counters["vd"])
            counters["vd"] += 1
        elif disk.controller is Controller.NVME:
            source = f"nvme{counters['nvme']}n1"
            counters["nvme"] += 1
        else:  # SCSI, SATA, virtio-scsi, IDE under libata, unknown: the sd probe order
            source = "sd" + drive_letters(counters["sd"])
            counters["sd"] += 1
        mapping.setdefault(source, target)
    # On old guests an IDE CD-ROM had an hdX name that udev also links as /dev/cdrom; on the
    # new machine the CD-ROM is srN, so name it by the link (virt-v2v does the same).
    cdrom_names = set()
    if ide == "hd":
        for r in removables:
            if r.controller is Controller.IDE:
                name = "hd" + drive_letters(r.bus * 2 + r.unit)
                cdrom_names.add(name)
                if r.kind == "cdrom":
                    mapping.setdefault(name, "cdrom")
    predicted = {_family(name) for name in mapping if name not in cdrom_names}
    for name in sorted(set(used)):
        where = _position(name)
        if name in mapping or where is None or name in cdrom_names:
            continue
        family, index = where
        # Only a family no controller predicted: with IDE hdX and SCSI sdX disks both present,
        # a third guess by position would contradict the controllers.
        if family not in predicted and index < len(targets):
            mapping[name] = targets[index]
    # Xen presents every disk as xvdX as well (and PV guests use nothing else).
    for index, target in enumerate(targets):
        mapping.setdefault("xvd" + drive_letters(index), target)
    return mapping


def renames(mapping: Mapping[str, str]) -> dict[str, str]:
    """Only the names that change."""
    return {src: dst for src, dst in mapping.items() if src != dst}


def device_names(text: str, *, comments: bool = True) -> set[str]:
    """The disk names /dev/... paths in text refer to: {"sda", "xvdb", "nvme0n1"}; with
    comments=False, those on lines starting with # are left out."""
    if not comments:
        text = "".join(line for line in text.splitlines(True) if not _COMMENT.match(line))
    return {m["disk"] for m in _DEV.finditer(text)}


def _partition(disk: str, part: str) -> str:
    number = part.lstrip("p")
    if not number:
        return ""
    return f"p{number}" if _family(disk) in ("nvme", "cciss") else number


def device_path(disk: str, partition: int | None = None) -> str:
    """/dev/vda, /dev/vda1, /dev/nvme0n1p1."""
    return f"/dev/{disk}{_partition(disk, str(partition)) if partition else ''}"


def rename_devices(text: str, mapping: Mapping[str, str]) -> str:
    """Replace every /dev/<disk>[<part>] whose disk is in mapping, all in one pass (so a map
    that swaps two names cannot chain). Other text, /dev/sdaa and /dev/mapper/... included,
    is left as it is."""

    def swap(m: re.Match[str]) -> str:
        disk, part = m["disk"], m["part"] or ""
        new = mapping.get(disk)
        if new is None or (part.startswith("p") and _family(disk) in _LETTER_FAMILIES):
            return m[0]
        return f"/dev/{new}{_partition(new, part)}"

    return _DEV.sub(swap, text)


def renamed_path(path: str, mapping: Mapping[str, str]) -> str | None:
    """The new name of a device path that is exactly /dev/<disk>[<part>], else None."""
    m = _DEV.fullmatch(path)
    if m is None or m["disk"] not in mapping:
        return None
    return rename_devices(path, mapping)


# --- fstab and crypttab --------------------------------------------------------------------

# Names that follow a disk's place on a bus, which the new machine does not have.
_BUS_BOUND = re.compile(r"^/dev/disk/by-(?:path/|id/(?:scsi|ata|wwn|nvme|usb|virtio)-)")


def _rewrite_field(
    text: str,
    column: int,
    new_value: Callable[[list[str]], str | None],
) -> str:
    """Replace one whitespace-separated column of each non-comment line, keeping the rest of
    the line (and its spacing) as it was."""
    out = []
    for line in text.splitlines(keepends=True):
        if _COMMENT.match(line) or not line.strip():
            out.append(line)
            continue
        fields = line.split()
        if len(fields) <= column:
            out.append(line)
            continue
        replacement = new_value(fields)
        if replacement is None or replacement == fields[column]:
            out.append(line)
            continue
        spans = [m.span() for m in re.finditer(r"\S+", line)]
        start, end = spans[column]
        out.append(line[:start] + replacement + line[end:])
    return "".join(out)


def rewrite_fstab(
    text: str,
    mapping: Mapping[str, str],
    uuids: Mapping[str, str],
    mount_uuids: Mapping[str, str] | None = None,
) -> str:
    """fstab with its device names made right for the converted guest.

    A spec naming a disk in mapping becomes UUID=<uuid> when `uuids` (new device path ->
    filesystem UUID, for filesystems and swap whose UUID is unique) knows the device, else the
    new device name. A spec that names a bus path (/dev/disk/by-path/..., by-id/scsi-...) becomes
    UUID= when `mount_uuids` (mountpoint -> UUID) knows its mountpoint. Comments stay as they
    are: "# / was on /dev/sda1 during installation" is still true."""
    by_mount = mount_uuids or {}

    def spec(fields: list[str]) -> str | None:
        old = fields[0]
        new = renamed_path(old, mapping)
        if new is not None:
            uuid = uuids.get(new)
            return f"UUID={uuid}" if uuid else new
        if _BUS_BOUND.match(old) and len(fields) > 1 and fields[1] in by_mount:
            return f"UUID={by_mount[fields[1]]}"
        return None

    return _rewrite_field(text, 0, spec)


def rewrite_crypttab(text: str, mapping: Mapping[str, str], luks_uuids: Mapping[str, str]) -> str:
    """crypttab's second column (the encrypted device): UUID= for LUKS containers, whose UUID
    lives in the header; a plain dm-crypt device (swap keyed from /dev/urandom) has no stable
    UUID and only gets its new name."""

    def device(fields: list[str]) -> str | None:
        new = renamed_path(fields[1], mapping)
        if new is None:
            return None
        uuid = luks_uuids.get(new)
        return f"UUID={uuid}" if uuid else new

    return _rewrite_field(text, 1, device)


# --- grubenv -------------------------------------------------------------------------------


def rewrite_grubenv(block: str, transform: Callable[[str], str]) -> str | None:
    """Apply transform to a grub environment block's variables, keeping the block's size (grub
    reads and writes it in place, 1024 bytes padded with '#'). None when it no longer fits."""
    body = block.rstrip("#")
    new_body = transform(body)
    if new_body == body:
        return block
    if len(new_body.encode()) > len(block.encode()):
        return None
    return new_body + "#" * (len(block.encode()) - len(new_body.encode()))


# --- LVM filters ---------------------------------------------------------------------------

_FILTER_START = re.compile(r"^[ \t]*(?:global_)?filter[ \t]*=[ \t]*\[", re.MULTILINE)
_FILTER_NAME = re.compile(r"(?<![A-Za-z0-9_])(?P<name>(?:xvd|vd|sd|hd)[a-z]*)")


def _prefix_map(mapping: Mapping[str, str]) -> dict[str, str]:
    """sd -> vd when every sdX maps to a vdX, for patterns like "a|/dev/sd.*|"."""
    seen: dict[str, set[str]] = {}
    for src, dst in mapping.items():
        fs, fd = _family(src), _family(dst)
        if fs in _LETTER_FAMILIES and fd in _LETTER_FAMILIES:
            seen.setdefault(fs, set()).add(fd)
    return {fs: next(iter(fd)) for fs, fd in seen.items() if len(fd) == 1 and fs not in fd}


def translate_filter_pattern(pattern: str, mapping: Mapping[str, str]) -> str:
    """An LVM filter regex with the disk names in it converted: "a|^/dev/sda[0-9]*$|" ->
    "a|^/dev/vda[0-9]*$|", "a|/dev/sd.*|" -> "a|/dev/vd.*|", "r/sdb/" -> "r/vdb/"."""
    prefixes = _prefix_map(mapping)

    def swap(m: re.Match[str]) -> str:
        name = m["name"]
        if name in mapping:
            return mapping[name]
        return prefixes.get(name, name)

    return _FILTER_NAME.sub(swap, pattern)


def _filter_strings(text: str, start: int) -> tuple[list[tuple[int, int]], int] | None:
    """The (start, end) spans of the quoted strings of a filter list opening at start, and
    where the list ends; None if the list is not closed."""
    spans: list[tuple[int, int]] = []
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "]":
            return spans, i
        if ch == "#":
            i = text.find("\n", i)
            if i < 0:
                return None
        elif ch == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                return None
            spans.append((i, j + 1))
            i = j
        i += 1
    return None


def rewrite_lvm_filters(text: str, mapping: Mapping[str, str]) -> str:
    """lvm.conf with each filter/global_filter pattern that names a renamed disk followed by
    its converted twin, so the volume groups are found on the new disks (and still on the old
    ones). First match wins in an LVM filter: the twin right after the original keeps the
    order of accept and reject rules."""
    changes = renames(mapping)
    if not changes:
        return text
    out: list[str] = []
    pos = 0
    for m in _FILTER_START.finditer(text):
        if m.start() < pos:
            continue
        found = _filter_strings(text, m.end())
        if found is None:
            continue
        spans, end = found
        for s, e in spans:
            original = text[s:e]
            twin = translate_filter_pattern(original, changes)
            out.append(text[pos:e])
            if twin != original and twin not in (text[a:b] for a, b in spans):
                out.append(f", {twin}")
            pos = e
        out.append(text[pos:end])
        pos = end
    out.append(text[pos:])
    return "".join(out)
