"""The pure parts of the initramfs fast path: cpio members, path resolution, module closure."""

from __future__ import annotations

import stat

from vmshift.convert.linux.initramfs_append import resolve
from vmshift.formats.cpio import CpioEntry, directory, newc_archive, read_archive, regular, symlink
from vmshift.formats.kmod import closure, parse_modules_dep, paths_by_name

MERGED_USR = {
    e.path: e
    for e in (
        symlink("lib", "usr/lib"),
        symlink("bin", "usr/bin"),
        directory("usr"),
        directory("usr/lib"),
        directory("usr/lib/modules"),
        symlink("usr/sbin/modprobe", "/bin/kmod"),
        regular("usr/bin/kmod", b"\x7fELF"),
        symlink("loop", "loop2"),
        symlink("loop2", "loop"),
    )
}


def test_newc_round_trip_keeps_types_and_contents() -> None:
    entries = [directory("etc"), regular("etc/x", b"abc", 0o600), symlink("lib", "usr/lib")]
    out: list[CpioEntry] = []
    data = newc_archive(entries)
    assert len(data) % 512 == 0
    end = read_archive(data, 0, out)
    assert [(e.path, e.mode, e.data) for e in out] == [
        ("etc", stat.S_IFDIR | 0o755, b""),
        ("etc/x", stat.S_IFREG | 0o600, b"abc"),
        ("lib", stat.S_IFLNK | 0o777, b"usr/lib"),
    ]
    assert data[end:].strip(b"\0") == b""


def test_paths_resolve_through_the_images_symlinks() -> None:
    # A directory entry "lib" in the appended archive would replace merged-/usr's link.
    assert resolve(MERGED_USR, "lib/modules/6.1/modules.dep") == "usr/lib/modules/6.1/modules.dep"
    assert resolve(MERGED_USR, "sbin/x") == "sbin/x"
    assert resolve(MERGED_USR, "usr/sbin/modprobe") == "usr/bin/kmod"
    assert resolve(MERGED_USR, "./usr/../lib/a") == "usr/lib/a"
    assert resolve(MERGED_USR, "loop/a") is None


def test_module_closure_follows_modules_dep() -> None:
    deps = parse_modules_dep(
        "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko "
        "kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio.ko:\n"
        "kernel/drivers/net/virtio-net.ko.xz: kernel/drivers/net/failover.ko.xz\n"
    )
    names = paths_by_name(deps)
    assert names["virtio_net"] == "kernel/drivers/net/virtio-net.ko.xz"
    assert closure(deps, [names["virtio_blk"]]) == {
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
    }
    assert closure(deps, [names["virtio_net"]]) == {
        "kernel/drivers/net/virtio-net.ko.xz",
        "kernel/drivers/net/failover.ko.xz",
    }
