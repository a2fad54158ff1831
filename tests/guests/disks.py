"""Partition, format and fill the disks of many phony guests with one libguestfs launch.

Where the time goes decides the shape. A launch under TCG costs 15-20 s, and each partitioning
call inside the appliance another second (parted, then udev settling), so:
- every disk is a sparse raw file partitioned on the host by sfdisk (libguestfs depends on
  fdisk, so it is always there), and vfat is made there too by mkfs.fat, which unlike
  libguestfs can set the volume serial: all UUIDs are fixed before anything runs;
- with the UUIDs fixed, the guests' trees are staged on the host (where rpm and cpio tools
  run) while the appliance boots;
- the appliance makes LVM, ext4 and swap, and pours each tree in with one tar_in (vfat takes
  its few files one by one: it cannot hold tar's ownership);
- disks meant to be qcow2, vmdk, vhdx or vdi are converted from raw at the end.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import guestfs

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
_GPT_TYPES = {
    "ext4": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
    "lvm": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
    "vfat": ESP_TYPE,
}
_MBR_TYPES = {"ext4": "83", "swap": "82", "lvm": "8e", "vfat": "ef"}
_FIRST_SECTOR = 2048
_SECTORS_PER_MIB = 2048
_UUID_NAMESPACE = uuid.UUID("6f1c35f4-5d0e-4b8e-9a55-7d0e4e0c3a11")
_EXTENSIONS = {"raw": "img", "qcow2": "qcow2", "vmdk": "vmdk", "vhdx": "vhdx", "vdi": "vdi"}
# qemu-img's defaults make a 512 MiB VHDX of a few MiB of data weigh over 100 MiB.
_CONVERT_OPTIONS = {"vhdx": ["-o", "block_size=1M"]}


@dataclass(frozen=True)
class DiskSpec:
    stem: str  # file name without extension, unique across all guests
    size_mib: int
    ptable: str  # dos | gpt
    format: str = "raw"  # raw | qcow2 | vmdk | vhdx | vdi

    @property
    def filename(self) -> str:
        return f"{self.stem}.{_EXTENSIONS[self.format]}"


@dataclass(frozen=True)
class Volume:
    mountpoint: str  # "/", "/boot", "/boot/efi", "/var"...; "swap" for swap
    fstype: str  # ext4 | vfat | swap
    disk: int  # index into the guest's disks
    part: int  # partition number, partitions laid out in this order
    size_mib: int | None = None  # None: the rest of the disk
    lv: str | None = None  # "vg/lv": the filesystem goes on the only LV of a VG on this partition
    fstab: str = "uuid"  # how /etc/fstab names it: uuid | device (/dev/sdXN) | mapper
    luks: str | None = None  # a passphrase: the filesystem goes in a LUKS volume on this partition

    def fstab_line(self, spec: str) -> str:
        if self.fstype == "swap":
            return f"{spec}\tnone\tswap\tsw\t0\t0\n"
        options = {"/": "errors=remount-ro", "/boot/efi": "umask=0077"}.get(self.mountpoint)
        passno = 1 if self.mountpoint == "/" else 2
        return f"{spec}\t{self.mountpoint}\t{self.fstype}\t{options or 'defaults'}\t0\t{passno}\n"


@dataclass(frozen=True)
class Formatted:
    """What the layout fixed, for the files that must name it (fstab, kernel command line)."""

    fstab: str
    uuids: dict[str, str]  # mountpoint -> filesystem UUID as blkid reports it
    root_spec: str  # how the guest names its root: UUID=..., /dev/sda1 or /dev/mapper/...


# fill(staged_root, formatted, scratch_dir) writes the guest's files below staged_root.
Filler = Callable[[Path, Formatted, Path], None]


@dataclass(frozen=True)
class DiskJob:
    name: str
    disks: tuple[DiskSpec, ...]
    volumes: tuple[Volume, ...]
    fill: Filler | None = None  # None: leave the filesystems empty

    def formatted(self) -> Formatted:
        fstab = "# /etc/fstab: static file system information.\n"
        uuids: dict[str, str] = {}
        root_spec = ""
        for vol in self.volumes:
            uuids[vol.mountpoint] = _fs_uuid(self.name, vol)
            if vol.fstab == "device":
                spec = f"/dev/sd{chr(ord('a') + vol.disk)}{vol.part}"
            elif vol.fstab == "mapper" and vol.lv is not None:
                spec = "/dev/mapper/" + vol.lv.replace("/", "-")
            else:
                spec = f"UUID={uuids[vol.mountpoint]}"
            fstab += f"# {vol.mountpoint} was on {spec} during installation\n"
            fstab += vol.fstab_line(spec)
            if vol.mountpoint == "/":
                root_spec = spec
        return Formatted(fstab, uuids, root_spec)


def _digest(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def _fs_uuid(job: str, vol: Volume) -> str:
    # Fixed, and distinct across guests so that one handle can hold them all.
    if vol.fstype == "vfat":
        serial = _digest(job, vol.mountpoint)[:8].upper()
        return f"{serial[:4]}-{serial[4:]}"
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{job}:{vol.mountpoint}"))


def _run(argv: list[str], stdin: str | None = None) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def build_disks(jobs: Sequence[DiskJob], outdir: Path) -> None:
    """Create every job's disks in `outdir`, each job's filesystems formatted and filled."""
    raws: list[Path] = []
    for job in jobs:
        for index, disk in enumerate(job.disks):
            raw = outdir / f"{disk.stem}.img"
            _lay_out(raw, job, index, disk)
            raws.append(raw)
    g = new_handle()
    try:
        for raw in raws:
            g.add_drive_opts(str(raw), format="raw", readonly=False)
        with ThreadPoolExecutor(max_workers=1) as pool:
            launched = pool.submit(g.launch)
            tarballs = {job.name: _stage(job, outdir / f".stage-{job.name}") for job in jobs}
            launched.result()
        devices: list[str] = g.list_devices()
        for job in jobs:
            mine, devices = devices[: len(job.disks)], devices[len(job.disks) :]
            _make_filesystems(g, job, mine)
            if job.fill is not None:
                _pour(g, job, mine, tarballs[job.name], outdir / f".stage-{job.name}")
        g.shutdown()
    finally:
        g.close()
        for job in jobs:
            shutil.rmtree(outdir / f".stage-{job.name}", ignore_errors=True)
    for job in jobs:
        for disk in job.disks:
            if disk.format != "raw":
                _convert(outdir, disk)


def new_handle() -> guestfs.GuestFS:
    """A handle that boots with TCG: there is no usable KVM here or in CI. Set on the handle,
    not in os.environ, so that vmshift code later run in the same process chooses for itself."""
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    g.set_backend_settings(["force_tcg"])
    return g


def _lay_out(raw: Path, job: DiskJob, index: int, disk: DiskSpec) -> None:
    """Create the sparse raw disk, its partition table, and any vfat filesystem on it."""
    with raw.open("wb") as f:
        f.truncate(disk.size_mib * 1024 * 1024)
    vols = sorted((v for v in job.volumes if v.disk == index), key=lambda v: v.part)
    seed = _digest(job.name, str(index))
    label_id = f"0x{seed[:8]}" if disk.ptable == "dos" else str(uuid.UUID(seed[:32]))
    script = f"label: {disk.ptable}\nlabel-id: {label_id}\nunit: sectors\n"
    start = _FIRST_SECTOR
    # Installers mark the partition holding /boot active; some BIOSes want one marked.
    bootable = next((v.part for v in vols if v.mountpoint == "/boot"), None)
    bootable = bootable or next((v.part for v in vols if v.mountpoint == "/"), None)
    for vol in vols:
        kind = "lvm" if vol.lv else vol.fstype
        line = f"start={start}, "
        if vol.size_mib is not None:
            line += f"size={vol.size_mib * _SECTORS_PER_MIB}, "
            start += vol.size_mib * _SECTORS_PER_MIB
        if disk.ptable == "gpt":
            partuuid = uuid.UUID(_digest(job.name, str(index), str(vol.part))[:32])
            line += f"type={_GPT_TYPES[kind]}, uuid={partuuid}"
        else:
            line += f"type={_MBR_TYPES[kind]}" + (", bootable" if vol.part == bootable else "")
        script += line + "\n"
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(raw)], stdin=script)
    offset = _FIRST_SECTOR
    for vol in vols:
        if vol.fstype == "vfat":
            if vol.size_mib is None:
                raise ValueError("a vfat volume needs a size")
            serial = _fs_uuid(job.name, vol).replace("-", "")
            _run(
                [
                    "mkfs.vfat",
                    "-F",
                    "32",
                    "-s",
                    "1",
                    f"--offset={offset}",
                    "-i",
                    serial,
                    str(raw),
                    str(vol.size_mib * 1024),
                ]
            )
        offset += (vol.size_mib or 0) * _SECTORS_PER_MIB


def _stage(job: DiskJob, stage: Path) -> Path | None:
    """Write the guest's tree on the host and pack the part that goes in by tar_in."""
    if job.fill is None:
        return None
    root = stage / "root"
    root.mkdir(parents=True)
    job.fill(root, job.formatted(), stage / "scratch")
    vfat = [v.mountpoint.lstrip("/") for v in job.volumes if v.fstype == "vfat"]

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if any(info.name == m or info.name.startswith(m + "/") for m in vfat):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    tarball = stage / "root.tar"
    with tarfile.open(tarball, "w") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name, filter=owned_by_root)
    return tarball


def _make_filesystems(g: guestfs.GuestFS, job: DiskJob, devices: list[str]) -> None:
    for vol in job.volumes:
        dev = f"{devices[vol.disk]}{vol.part}"
        if vol.lv is not None:
            vg, lv = vol.lv.split("/")
            g.pvcreate(dev)
            g.vgcreate(vg, [dev])
            g.lvcreate_free(lv, vg, 100)
            dev = f"/dev/{vg}/{lv}"
        if vol.luks is not None:
            g.luks_format(dev, vol.luks, 0)
            g.cryptsetup_open(dev, vol.luks, _luks_map(job, vol))
            dev = f"/dev/mapper/{_luks_map(job, vol)}"
        fsuuid = _fs_uuid(job.name, vol)
        if vol.fstype == "ext4":
            g.mke2fs(dev, fstype="ext4", uuid=fsuuid)
        elif vol.fstype == "swap":
            g.mkswap(dev, uuid=fsuuid)


def _luks_map(job: DiskJob, vol: Volume) -> str:
    return f"crypt-{job.name}-{vol.disk}-{vol.part}"


def _pour(
    g: guestfs.GuestFS, job: DiskJob, devices: list[str], tarball: Path | None, stage: Path
) -> None:
    mounted = sorted(
        (v for v in job.volumes if v.fstype != "swap"), key=lambda v: len(v.mountpoint)
    )
    for vol in mounted:
        dev = f"/dev/{vol.lv}" if vol.lv else f"{devices[vol.disk]}{vol.part}"
        if vol.luks is not None:
            dev = f"/dev/mapper/{_luks_map(job, vol)}"
        if vol.mountpoint != "/":
            g.mkdir_p(vol.mountpoint)
        g.mount(dev, vol.mountpoint)
    if tarball is not None:
        g.tar_in(str(tarball), "/")
    root = stage / "root"
    for vol in job.volumes:
        if vol.fstype != "vfat":
            continue
        for path in sorted((root / vol.mountpoint.lstrip("/")).rglob("*")):
            target = "/" + str(path.relative_to(root))
            if path.is_dir():
                g.mkdir_p(target)
            else:
                g.upload(str(path), target)
    g.umount_all()


def _convert(outdir: Path, disk: DiskSpec) -> None:
    raw = outdir / f"{disk.stem}.img"
    argv = ["qemu-img", "convert", "-f", "raw", "-O", disk.format]
    argv += [*_CONVERT_OPTIONS.get(disk.format, []), str(raw), str(outdir / disk.filename)]
    _run(argv)
    raw.unlink()
