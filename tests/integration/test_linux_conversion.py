"""Issue acceptance: the real Debian VMware guest converts and boots on virtio, network included.

Each conversion boots its result with --verify-boot, from what vmshift wrote (-o local's XML,
-o rhv's OVF, -o qemu's script), on a private libvirtd: the suite proves that what vmshift
writes boots, not a command line of its own."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift
from tests.export_domain import make_export_domain
from tests.guests.manifest import BuiltGuest
from tests.integration.libvirt_fixture import PrivateLibvirtd, private_libvirtd
from vmshift.guest.accel import detect_accelerator
from vmshift.verify.ovf_domain import ovf_domain_xml

pytestmark = [pytest.mark.slow, pytest.mark.realguest]

STATIC_ADDRESS = "192.0.2.10/24"
MAC = "00:50:56:1a:2b:3c"


def _convert(vmx: Path, outdir: Path, *output: str) -> tuple[list[str], dict[str, object]]:
    report = outdir.parent / f"{outdir.name}-report.json"
    proc = vmshift(
        ["convert", "-i", "vmx", vmx, *output, "-os", outdir, "-of", "qcow2",
         "--report", report, "--verify-boot"],
        timeout=2400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:] + _consoles(outdir)
    doc: dict[str, object] = json.loads(report.read_text())
    return proc.stdout.strip().splitlines()[-2:], doc


def _consoles(outdir: Path) -> str:
    """The tail of each console a failed boot check saved next to its output: the output
    directory goes with the test's, and a boot that fails only under the suite's load cannot
    be looked at afterwards."""
    return "".join(
        f"\n--- {log.name}, last lines:\n"
        + "\n".join(log.read_text(errors="replace").splitlines()[-60:])
        for log in sorted(outdir.rglob("*.verify-console.log"))
    )


# (conversion verdict, boot check verdict), --report document, output directory, source
# hashes taken before converting
Converted = tuple[list[str], dict[str, object], Path, dict[Path, str]]


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd() as server:
        yield server


@pytest.fixture(scope="module")
def conversions(real_debian: BuiltGuest, libvirtd: PrivateLibvirtd) -> dict[str, Future[Converted]]:
    """Convert the three real guests two at a time: each conversion and boot check runs in a
    single-threaded TCG qemu, so two keep both cores busy. The base and UEFI guests take the
    initramfs fast path (drivers appended); the LVM guest's lz4 image its fallback (a full
    update-initramfs, minutes under TCG). The LVM guest goes to -o qemu: its boot check runs the
    script vmshift wrote; the UEFI guest to -o rhv: its boot check boots the devices the OVF in
    the export domain names."""
    from tests.guests import debian_real

    guests = {
        "base": real_debian,
        "lvm": debian_real.build_real_debian_lvm(),
        "uefi": debian_real.build_real_debian_uefi(),
    }
    pool = ThreadPoolExecutor(max_workers=2)

    def run(name: str) -> Converted:
        guest = guests[name]
        sources = [guest.extra["vmx"], *guest.disks]
        before = {p: sha256(p) for p in sources}
        # In the daemon's tree: its uid (not root) must reach the output to boot it.
        outdir = libvirtd.root / f"conv-{name}"
        outdir.mkdir(mode=0o755)
        output = ["-o", "local", "--verify-boot-conn", libvirtd.uri]
        if name == "lvm":
            output = ["-o", "qemu"]
        if name == "uefi":  # outdir is the export domain's NFS mount point, as RHV sees it
            make_export_domain(outdir, owner=(36, 36))
            output = ["-o", "rhv", "--verify-boot-conn", libvirtd.uri]
        verdict, report = _convert(guest.extra["vmx"], outdir, *output)
        return verdict, report, outdir, before

    futures = {name: pool.submit(run, name) for name in guests}
    pool.shutdown(wait=False)
    return futures


def test_real_debian_boots_on_virtio_with_its_static_address(
    real_debian: BuiltGuest, conversions: dict[str, Future[Converted]]
) -> None:
    (verdict, booted), report, outdir, before = conversions["base"].result()
    assert verdict.startswith("vmshift: debian12-vmware configured with virtio drivers")
    # --verify-boot booted the XML below and saw the static address answer on the NIC that
    # keeps the source's MAC.
    assert booted.startswith("vmshift: debian12-vmware booted to its login prompt in "), booted
    assert f"{STATIC_ADDRESS.split('/', maxsplit=1)[0]} up ({MAC})" in booted, booted
    boot = report["boot"]
    assert isinstance(boot, dict)
    assert (boot["ok"], boot["outcome"]) == (True, "login")
    assert boot["static_addresses"] == {STATIC_ADDRESS.split("/", maxsplit=1)[0]: MAC}
    assert not list(outdir.glob("*.verify-console.log"))

    xml = (outdir / "debian12-vmware.xml").read_text().replace('"', "'")
    assert "<target dev='vda' bus='virtio'/>" in xml
    assert f"<mac address='{MAC}'/>" in xml
    assert "<model type='virtio'/>" in xml
    # The XML describes the target, which has KVM, whatever this host has.
    assert "<domain type='kvm'>" in xml

    changes = report["changes"]
    assert isinstance(changes, list)
    steps = {c["step"] for c in changes}
    assert {"tools_removal", "initramfs", "devices", "network", "bootloader"} <= steps
    paths = {c["path"] for c in changes}
    # MODULES=list: the virtio drivers must be named in the modules file, and the old image kept.
    assert "/etc/initramfs-tools/modules" in paths
    assert any(str(p).endswith(".vmshift-orig") for p in paths if p)
    # The fast path: the drivers were appended to the image, not rebuilt into it, and the guest
    # booted above from that image.
    initramfs = [c["what"] for c in changes if c["step"] == "initramfs"]
    assert any(w.startswith("appended ") and "virtio_blk" in w for w in initramfs), initramfs
    assert not any("rebuil" in w for w in initramfs), initramfs
    assert "/etc/fstab" in paths
    assert report["devices"]["virtio"] is True  # type: ignore[index]
    # open-vm-tools is gone from the output's package database.
    status, grub_cfg, regenerated = _look_into_output(outdir / "debian12-vmware-sda", outdir)
    assert b"Package: open-vm-tools\n" not in status
    assert b"Package: systemd\n" in status
    # grub.cfg was edited in place, not regenerated: it is what the guest's own update-grub
    # writes (run on a throwaway overlay of the output), but for what grub-probe sees of the
    # appliance's disks: the root's name (sdX there, GRUB_DISABLE_LINUX_UUID=true; vda1 on the
    # converted guest) and the BIOS disk numbers, which follow the order the appliance's
    # kernel happened to find its disks in.
    bootloader = [c["what"] for c in changes if c["step"] == "bootloader"]
    assert any(w.startswith("edited in place") for w in bootloader), bootloader
    assert "root=/dev/vda1 " in grub_cfg and "/dev/sda" not in grub_cfg
    assert _appliance_neutral(regenerated) == _appliance_neutral(grub_cfg)
    assert {p: sha256(p) for p in before} == before


def _appliance_neutral(grub_cfg: str) -> str:
    text = re.sub(r"root=/dev/[sv]d[a-z]+(\d+) ", r"root=/dev/DISK\1 ", grub_cfg)
    return re.sub(r"\b(hd|ahci)\d+,", r"\1N,", text)


def _look_into_output(disk: Path, scratch: Path) -> tuple[bytes, str, str]:
    """dpkg's status file and grub.cfg of a converted disk, and the grub.cfg the guest's own
    update-grub writes, run on a throwaway overlay so the output itself is not touched."""
    import guestfs

    overlay = scratch.parent / f"{disk.name}.look.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "qcow2", str(overlay)],
        check=True,
    )
    g = guestfs.GuestFS(python_return_dict=True)
    if not detect_accelerator().is_kvm:
        g.set_backend_settings(["force_tcg"])
    try:
        g.add_drive_opts(str(overlay), format="qcow2")
        g.launch()
        g.mount("/dev/sda1", "/")
        status = bytes(g.read_file("/var/lib/dpkg/status"))
        grub_cfg = bytes(g.read_file("/boot/grub/grub.cfg")).decode()
        g.command(["update-grub"])
        regenerated = bytes(g.read_file("/boot/grub/grub.cfg")).decode()
        return status, grub_cfg, regenerated
    finally:
        g.close()
        overlay.unlink()


@pytest.mark.parametrize("variant", ["lvm", "uefi"])
def test_real_debian_variants_boot_after_conversion(
    variant: str, conversions: dict[str, Future[Converted]]
) -> None:
    (verdict, booted), report, outdir, before = conversions[variant].result()
    assert "configured with virtio drivers" in verdict, verdict
    assert " booted to its login prompt in " in booted, booted
    changes = report["changes"]
    assert isinstance(changes, list)
    initramfs = [c["what"] for c in changes if c["step"] == "initramfs"]
    if variant == "lvm":  # -o qemu: the script booted, its NIC tapped by qemu's net filters
        # Its image is lz4 (COMPRESS=lz4): the initramfs fast path's fallback, a full rebuild.
        assert any("not appended to the image" in w and "lz4" in w for w in initramfs), initramfs
        assert any(w.startswith("rebuilt with update-initramfs for ") for w in initramfs), initramfs
        address = STATIC_ADDRESS.split("/", maxsplit=1)[0]
        assert f"{address} up ({MAC})" in booted, booted
        boot = report["boot"]
        assert isinstance(boot, dict)
        assert (boot["ok"], boot["static_addresses"]) == (True, {address: MAC})
        # The check's sockets lived in its work directory: none next to the output.
        assert not [p for p in outdir.iterdir() if p.is_socket()]
        assert not list(outdir.glob("*.verify-console.log"))
        script = (outdir / "debian12-vmware-lvm.sh").read_text()
        assert "virtio-blk-pci" in script
    else:  # -o rhv: what was booted is what the OVF in the export domain names
        assert any(w.startswith("appended ") for w in initramfs), initramfs
        (ovf,) = outdir.glob("*/master/vms/*/*.ovf")
        text = ovf.read_text()
        assert 'ovf:disk-interface="VirtIO"' in text
        assert "<BiosType>2</BiosType>" in text  # q35 with OVMF
        xml = ovf_domain_xml(ovf, ovf.parents[3]).replace('"', "'")
        assert "bus='virtio'" in xml
        assert "<os firmware='efi'>" in xml
        # Nothing but the guest in the domain: no console saved, no staging left.
        assert sorted(p.name for p in outdir.iterdir()) == [ovf.parents[3].name]
        assert not list(outdir.rglob("*.verify-console.log"))
    assert {p: sha256(p) for p in before} == before
