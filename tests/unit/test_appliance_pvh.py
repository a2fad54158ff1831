"""The fast appliance start: an uncompressed PVH kernel beside libguestfs's own appliance, a
slim initrd, and a root whose /init replays only the devices the appliance uses."""

from __future__ import annotations

import lzma
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from vmshift.formats.bzimage import KernelImageError, has_pvh_entry, vmlinux
from vmshift.formats.cpio import CpioEntry, newc_archive, read_archive, regular
from vmshift.formats.initramfs import InitramfsError
from vmshift.formats.kmod import modinfo
from vmshift.guest import session
from vmshift.guest.appliance import (
    PREFIX,
    UDEV_REPLAY_USED,
    pvh_appliance,
    quick_init,
    slim_initrd,
)


def elf_kernel(pvh: bool) -> bytes:
    """A 64-bit ELF with one PT_NOTE segment holding a Xen note (type 18 = PVH entry, or 5)."""
    desc = struct.pack("<I", 0x1000000)
    note = struct.pack("<III", 4, len(desc), 18 if pvh else 5) + b"Xen\0" + desc
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), len(note), 4)
    return bytes(header) + phdr + note + b"\0" * 256


def bzimage(kernel: bytes) -> bytes:
    """setup (1 sector + the boot sector) and an xz payload, as the boot protocol lays it out."""
    packed = lzma.compress(kernel, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    setup = bytearray(1024)
    setup[0x1F1] = 1
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    struct.pack_into("<II", setup, 0x248, 16, len(packed))
    return bytes(setup) + b"\0" * 16 + packed


def test_the_kernel_comes_out_of_the_bzimage_with_its_pvh_note() -> None:
    kernel = elf_kernel(pvh=True)
    assert vmlinux(bzimage(kernel)) == kernel
    assert has_pvh_entry(kernel)
    assert not has_pvh_entry(elf_kernel(pvh=False))
    with pytest.raises(KernelImageError, match="not a bzImage"):
        vmlinux(b"MZ" + b"\0" * 1024)


def _libguestfs_cache(root: Path, kernel: bytes) -> Path:
    built = root / ".guestfs-0" / "appliance.d"
    built.mkdir(parents=True)
    (built / "kernel").write_bytes(bzimage(kernel))
    (built / "initrd").write_bytes(b"initrd")
    (built / "root").write_bytes(b"root")
    return built


def test_a_fixed_appliance_is_made_once_per_kernel(tmp_path: Path) -> None:
    built = _libguestfs_cache(tmp_path, elf_kernel(pvh=True))
    first = pvh_appliance(str(tmp_path), 0)
    assert first is not None and first.name.startswith(PREFIX)
    assert (first / "kernel").read_bytes() == elf_kernel(pvh=True)
    assert (first / "initrd").resolve() == (built / "initrd").resolve()
    assert (first / "root").resolve() == (built / "root").resolve()
    assert (first / "README.fixed").is_file()
    assert pvh_appliance(str(tmp_path), 0) == first
    # libguestfs rebuilt its appliance with another kernel: a new copy, the old one removed.
    (built / "kernel").write_bytes(bzimage(elf_kernel(pvh=True) + b"\1"))
    second = pvh_appliance(str(tmp_path), 0)
    assert second is not None and second != first and not first.exists()


def test_touching_the_appliance_does_not_make_a_new_copy(tmp_path: Path) -> None:
    """libguestfs touches its appliance at every ordinary launch (virt-v2v's, say): the copy
    is named by content, so it is kept, not made again (a 60+ MB write and an xz unpack)."""
    built = _libguestfs_cache(tmp_path, elf_kernel(pvh=True))
    first = pvh_appliance(str(tmp_path), 0)
    assert first is not None
    made = (first / "kernel").stat().st_mtime_ns
    for part in ("kernel", "initrd", "root"):
        os.utime(built / part, ns=(1, 1))
    assert pvh_appliance(str(tmp_path), 0) == first
    assert (first / "kernel").stat().st_mtime_ns == made


def module(name: str, depends: str, *extra: str) -> bytes:
    """A 64-bit ELF with the .modinfo section a kernel module carries (and its name table);
    extra: more key=value strings (alias=..., softdep=...)."""
    strings = ("license=GPL", f"depends={depends}", *extra, f"name={name}")
    info = "".join(f"{kv}\0" for kv in strings).encode()
    names = b"\0.modinfo\0.shstrtab\0"
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    shoff = 64 + len(info) + len(names)
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)  # e_shentsize, e_shnum, e_shstrndx

    def section(name_at: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, offset, size, 0, 0, 1, 0)

    return (
        bytes(header) + info + names + bytes(64)
        + section(1, 64, len(info)) + section(10, 64 + len(info), len(names))
    )  # fmt: skip


def supermin_initrd(modules: dict[str, str]) -> bytes:
    """An initrd laid out as supermin makes it: /init, the .ko files, /modules listing them."""
    files = [
        regular(f"{name}.ko", module(name.replace("-", "_"), deps))
        for name, deps in modules.items()
    ]
    listing = "".join(f"{name}.ko\n" for name in modules).encode()
    return newc_archive(
        [regular("init", b"\x7fELF init", 0o755), *files, regular("modules", listing)]
    )


def _members(archive: bytes) -> dict[str, CpioEntry]:
    entries: list[CpioEntry] = []
    read_archive(archive, 0, entries, keep=len(archive))
    return {e.path: e for e in entries}


def test_modinfo_reads_a_module_s_depends() -> None:
    info = modinfo(module("sd_mod", "scsi_mod,t10-pi"))
    assert info["depends"] == ["scsi_mod,t10-pi"] and info["name"] == ["sd_mod"]
    with pytest.raises(ValueError):
        modinfo(b"\x7fELF\x02\x01" + b"\0" * 10)


def test_the_slim_initrd_leaves_out_the_modules_for_devices_the_appliance_lacks() -> None:
    initrd = supermin_initrd({
        "scsi_mod": "", "virtio_scsi": "scsi_mod", "libnvdimm": "", "nfit": "libnvdimm",
        "crc-itu-t": "", "failover": "", "net_failover": "failover", "ext4": "",
    })  # fmt: skip
    slim = _members(slim_initrd(initrd))
    assert (slim["modules"].data or b"").decode().split() == [
        "scsi_mod.ko",
        "virtio_scsi.ko",
        "ext4.ko",
    ]
    assert sorted(slim) == ["ext4.ko", "init", "modules", "scsi_mod.ko", "virtio_scsi.ko"]
    whole = _members(initrd)
    assert slim["init"].data == whole["init"].data and slim["init"].mode == whole["init"].mode
    assert slim["ext4.ko"].data == whole["ext4.ko"].data


def test_an_initrd_that_cannot_be_slimmed_is_kept_as_it_is(tmp_path: Path) -> None:
    # A module kept that needs one left out (a kernel built otherwise): not slimmed.
    needs_dropped = supermin_initrd({"libata": "", "sd_mod": "libata"})
    with pytest.raises(InitramfsError, match=r"sd_mod\.ko needs libata"):
        slim_initrd(needs_dropped)
    # A soft dependency by alias (ext4's "pre: crypto-crc32c") whose only provider is left out.
    soft = newc_archive([
        regular("init", b"x", 0o755),
        regular("crc8.ko", module("crc8", "", "alias=crypto-crc32c")),
        regular("ext4.ko", module("ext4", "", "softdep=pre: crypto-crc32c")),
        regular("modules", b"crc8.ko\next4.ko\n"),
    ])  # fmt: skip
    with pytest.raises(InitramfsError, match=r"ext4\.ko needs crypto-crc32c"):
        slim_initrd(soft)
    with pytest.raises(InitramfsError, match="not supermin's"):
        slim_initrd(newc_archive([regular("init", b"x", 0o755)]))
    built = _libguestfs_cache(tmp_path, elf_kernel(pvh=True))
    (built / "initrd").write_bytes(needs_dropped)
    made = pvh_appliance(str(tmp_path), 0)
    assert made is not None and (made / "kernel").read_bytes() == elf_kernel(pvh=True)
    assert (made / "initrd").resolve() == (built / "initrd").resolve()


def test_a_supermin_initrd_is_slimmed_in_the_fixed_appliance(tmp_path: Path) -> None:
    built = _libguestfs_cache(tmp_path, elf_kernel(pvh=True))
    (built / "initrd").write_bytes(supermin_initrd({"virtio_mem": "", "ext4": ""}))
    made = pvh_appliance(str(tmp_path), 0)
    assert made is not None and not (made / "initrd").is_symlink()
    assert sorted(_members((made / "initrd").read_bytes())) == ["ext4.ko", "init", "modules"]


def test_no_fixed_appliance_without_a_pvh_kernel_or_a_built_appliance(tmp_path: Path) -> None:
    assert pvh_appliance(str(tmp_path), 0) is None  # libguestfs never ran here
    _libguestfs_cache(tmp_path, elf_kernel(pvh=False))
    assert pvh_appliance(str(tmp_path), 0) is None
    assert not list((tmp_path / ".guestfs-0").glob(f"*{PREFIX}*"))


class FakeHandle:
    """What open_session asks of a libguestfs handle; launch fails with the fixed appliance."""

    launches: list[str | None] = []

    def __init__(self, python_return_dict: bool = True) -> None:
        self.path: str | None = None

    def set_backend_settings(self, settings: list[str]) -> None: ...
    def get_backend(self) -> str:
        return "direct"

    def config(self, *args: str) -> None: ...
    def get_path(self) -> str:
        return "/nonexistent"

    def get_cachedir(self) -> str:
        return "/nonexistent"

    def set_path(self, path: str) -> None:
        self.path = path

    def add_drive_opts(self, *args: Any, **kwargs: Any) -> None: ...
    def launch(self) -> None:
        FakeHandle.launches.append(self.path)
        if self.path is not None:
            raise RuntimeError("guestfsd did not start")

    def list_devices(self) -> list[str]:
        return ["/dev/sda"]

    def shutdown(self) -> None: ...
    def close(self) -> None: ...


def test_a_failed_fast_start_falls_back_to_the_usual_appliance(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class FakeModule:
        GuestFS = FakeHandle

    monkeypatch.setattr(session, "_import_guestfs", lambda: FakeModule)
    monkeypatch.setattr(session, "pvh_appliance", lambda cachedir, uid: tmp_path)
    image: Any = type("Image", (), {"path": tmp_path / "d.qcow2", "format": "qcow2"})()
    FakeHandle.launches = []
    with session.open_session([image]) as opened:
        assert opened.g.path is None
    assert FakeHandle.launches == [str(tmp_path), None]


def test_a_fixed_appliance_the_user_chose_is_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "README.fixed").write_text("the user's own\n")

    class UsersChoice(FakeHandle):
        def get_path(self) -> str:
            return f"/nonexistent:{tmp_path}"

    class FakeModule:
        GuestFS = UsersChoice

    def no_copy(cachedir: str, uid: int) -> Path:
        raise AssertionError("the user's appliance must not be replaced")

    monkeypatch.setattr(session, "_import_guestfs", lambda: FakeModule)
    monkeypatch.setattr(session, "pvh_appliance", no_copy)
    image: Any = type("Image", (), {"path": tmp_path / "d.qcow2", "format": "qcow2"})()
    FakeHandle.launches = []
    with session.open_session([image]) as opened:
        assert opened.g.path is None
    assert FakeHandle.launches == [None]


INIT = "#!/bin/bash\n$UDEVD --daemon #--debug\nudevadm trigger\nudevadm settle --timeout=600\n"


def test_quick_init_narrows_only_the_replay_of_every_device() -> None:
    quick = quick_init(INIT)
    assert quick == INIT.replace("\nudevadm trigger\n", f"\n{UDEV_REPLAY_USED}\n")
    assert "udevadm settle --timeout=600" in quick
    for unexpected in (INIT.replace("udevadm trigger\n", ""), INIT + "udevadm trigger\n"):
        with pytest.raises(ValueError, match="does not run 'udevadm trigger' once"):
            quick_init(unexpected)


def ext2_root(path: Path, init: str) -> None:
    """An ext2 image as supermin makes one (mke2fs, a random UUID) holding /init."""
    tree = path.parent / f"{path.name}.tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "init").write_text(init)
    (tree / "init").chmod(0o755)
    (tree / "etc" / "fstab").write_text("")
    path.unlink(missing_ok=True)
    subprocess.run(
        ["/usr/sbin/mke2fs", "-q", "-t", "ext2", "-d", str(tree), str(path), "4M"], check=True
    )
    shutil.rmtree(tree)


def debugfs_cat(image: Path, path: str) -> str:
    done = subprocess.run(
        ["/usr/sbin/debugfs", "-R", f"cat {path}", str(image)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_the_fixed_appliance_s_root_replays_only_the_devices_it_uses(tmp_path: Path) -> None:
    built = _libguestfs_cache(tmp_path, elf_kernel(pvh=True))
    ext2_root(built / "root", INIT)
    original = (built / "root").read_bytes()
    made = pvh_appliance(str(tmp_path), 0)
    assert made is not None
    copy = made / "root"
    assert copy.is_file() and not copy.is_symlink()
    assert debugfs_cat(copy, "/init") == quick_init(INIT)
    stat = subprocess.run(
        ["/usr/sbin/debugfs", "-R", "stat /init", str(copy)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Mode:  0755" in stat
    subprocess.run(["/usr/sbin/e2fsck", "-fn", str(copy)], capture_output=True, check=True)
    assert (built / "root").read_bytes() == original, "libguestfs's root was changed"
    assert sorted(p.name for p in made.iterdir()) == ["README.fixed", "initrd", "kernel", "root"]
    # supermin rebuilt its root (mke2fs: a new UUID) with the same kernel and initrd.
    ext2_root(built / "root", INIT)
    again = pvh_appliance(str(tmp_path), 0)
    assert again is not None and again != made and not made.exists()


def test_a_root_whose_init_is_not_as_expected_is_linked(tmp_path: Path) -> None:
    built = _libguestfs_cache(tmp_path, elf_kernel(pvh=True))
    ext2_root(built / "root", INIT.replace("udevadm trigger\n", "udevadm trigger --action=add\n"))
    made = pvh_appliance(str(tmp_path), 0)
    assert made is not None
    assert (made / "root").is_symlink() and (made / "root").resolve() == built / "root"


def test_a_debugfs_that_hangs_leaves_the_root_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _libguestfs_cache(tmp_path, elf_kernel(pvh=True))
    ext2_root(built / "root", INIT)

    def hangs(argv: list[str], **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(argv, kwargs.get("timeout") or 0)

    monkeypatch.setattr(subprocess, "run", hangs)
    made = pvh_appliance(str(tmp_path), 0)
    assert made is not None and (made / "root").is_symlink()
