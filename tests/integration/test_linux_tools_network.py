"""tools_removal and network steps on built guests, in a real appliance (two launches).

Phony guests have no runnable binaries, so there only the file edits are checked (and that a
missing dpkg/rpm is a warning, not a failure); package removal itself runs on the real Debian
guest, where open-vm-tools is really installed.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.guests.manifest import BuiltGuest
from vmshift.blockio.imageinfo import ImageInfo, probe_image
from vmshift.convert.linux import context, network, tools_removal
from vmshift.convert.linux.context import LinuxGuest, family_of
from vmshift.guest.inspect import inspect_session, mount_os
from vmshift.guest.session import open_session
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import Firmware, Nic, SourceVM

pytestmark = pytest.mark.slow

DEBIAN_MAC = "00:50:56:12:34:56"
RHEL_MACS = ("00:50:56:aa:bb:02", "00:50:56:aa:bb:01")  # keyfile ens192's first, ifcfg eth0's next
REAL_MAC = "00:50:56:1a:2b:3c"  # what the real guest's VMX says


@dataclass
class Result:
    """What one guest looked like after the two steps ran."""

    guest: LinuxGuest
    files: dict[str, str | None] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # unit link -> target, after
    dangling: list[str] = field(default_factory=list)  # unit links that point nowhere, after
    seconds: dict[str, float] = field(default_factory=dict)


def _overlay(image: Path, tmp: Path) -> ImageInfo:
    overlay = tmp / f"{image.stem}.overlay.qcow2"
    backing = probe_image(image).format
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", backing, str(overlay)],
        check=True,
    )
    return probe_image(overlay)


def _vm(*macs: str) -> SourceVM:
    nics = tuple(Nic(mac, "vmxnet3", "VM Network") for mac in macs)
    return SourceVM("test", 1 << 30, 1, None, Firmware.BIOS, disks=(), nics=nics)


def _convert(g: object, os: OperatingSystem, vm: SourceVM, reads: list[str]) -> Result:
    import time

    mount_os(g, os.mountpoints, readonly=False)
    guest = LinuxGuest(g=g, os=os, vm=vm, family=family_of(os))
    result = Result(guest)
    started = time.monotonic()
    tools_removal.remove_foreign_software(guest)
    result.seconds["tools_removal"] = time.monotonic() - started
    assert os.linux is not None
    guest.kernel = os.linux.kernels[0]  # what the kernel step would have chosen
    started = time.monotonic()
    network.preserve_interface_names(guest)
    result.seconds["network"] = time.monotonic() - started
    for path in reads:
        result.files[path] = guest.read(path)
    for directory in guest.glob("/etc/systemd/system/*.wants"):
        for name in guest.g.ls(directory):
            path = f"{directory}/{name}"
            if guest.g.is_symlink(path):
                result.links[path] = guest.g.readlink(path)
                if tools_removal._dangling(guest.g, path):
                    result.dangling.append(path)
    guest.g.umount_all()
    return result


# --- phony Debian and RHEL, one appliance ----------------------------------------------------

RHEL_IFCFG = "/etc/sysconfig/network-scripts/ifcfg-eth0"
RHEL_REPO = "/etc/yum.repos.d/vmware-tools.repo"
RPM_STUB_DB = "/var/lib/vmshift-stub/rpm-packages"  # what the phony guest's rpm stub removes from


@pytest.fixture(scope="module")
def phony(
    linux_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Result]]:
    tmp = tmp_path_factory.mktemp("phony")
    # Debian first: its fstab names /dev/sda1.
    images = [_overlay(linux_guests[n].disks[0], tmp) for n in ("debian", "rhel")]
    with open_session(images, readonly=False) as session:
        oses = {os.distro: os for os in inspect_session(session)}
        g = session.g
        results = {
            "debian": _convert(
                g,
                oses["debian"],
                _vm(DEBIAN_MAC),
                ["/etc/systemd/network/10-vmshift-ens192.link", "/var/lib/dpkg/status"],
            )
        }
        # Things VMware and Xen leave on RHEL-family guests, for the file edits.
        mount_os(g, oses["rhel"].mountpoints, readonly=False)
        repo = "[vmware-tools]\nname=VMware Tools\nenabled=1\n"
        repo += "baseurl=https://packages.vmware.com/tools/esx/7.0/rhel9/x86_64\n"
        g.mkdir_p("/etc/yum.repos.d")
        g.mkdir_p("/etc/modprobe.d")
        g.write(RHEL_REPO, repo.encode())
        g.write("/etc/modprobe.d/xenpv.conf", b"alias eth0 xennet\nalias scsi_hostadapter xenblk\n")
        g.umount_all()
        results["rhel"] = _convert(
            g,
            oses["rhel"],
            _vm(*RHEL_MACS),
            [
                "/etc/systemd/network/10-vmshift-eth0.link",
                "/etc/systemd/network/10-vmshift-ens192.link",
                RHEL_REPO,
                "/etc/modprobe.d/xenpv.conf",
                context.BACKUP_ROOT + "/etc/modprobe.d/xenpv.conf",
                RHEL_IFCFG,
                RPM_STUB_DB,
            ],
        )
        yield results


def test_phony_debian(phony: dict[str, Result]) -> None:
    result = phony["debian"]
    link = result.files["/etc/systemd/network/10-vmshift-ens192.link"]
    assert link is not None
    assert f"[Match]\nMACAddress={DEBIAN_MAC}\n\n[Link]\nName=ens192\n" in link
    # Purged by the guest's dpkg (a stub in the phony guest: tests/guests/stub_tools.py).
    assert "Package: open-vm-tools\n" not in (result.files["/var/lib/dpkg/status"] or "x")
    assert "Package: systemd\n" in (result.files["/var/lib/dpkg/status"] or "")
    assert [c.what for c in result.guest.changes if c.step == "tools_removal"] == [
        "removed package open-vm-tools"
    ]
    assert result.guest.warnings == []


def test_phony_rhel(phony: dict[str, Result]) -> None:
    result = phony["rhel"]
    files = result.files
    # Bound by the MACs in ifcfg-eth0 (HWADDR) and the keyfile (mac-address), not by order.
    assert f"MACAddress={RHEL_MACS[1]}\n\n[Link]\nName=eth0\n" in (
        files["/etc/systemd/network/10-vmshift-eth0.link"] or ""
    )
    assert f"MACAddress={RHEL_MACS[0]}\n\n[Link]\nName=ens192\n" in (
        files["/etc/systemd/network/10-vmshift-ens192.link"] or ""
    )
    assert (files[RHEL_REPO] or "").startswith("[vmware-tools]\nenabled=0\nname=VMware Tools\n")
    assert files["/etc/modprobe.d/xenpv.conf"] == (
        "alias eth0 virtio_net\nalias scsi_hostadapter virtio_blk\n"
    )
    assert files[context.BACKUP_ROOT + "/etc/modprobe.d/xenpv.conf"] == (
        "alias eth0 xennet\nalias scsi_hostadapter xenblk\n"
    )
    assert (files[RHEL_IFCFG] or "").startswith("TYPE=Ethernet")  # untouched
    stub_db = files[RPM_STUB_DB] or ""
    assert "open-vm-tools" not in stub_db and "xe-guest-utilities" not in stub_db
    assert "NetworkManager " in stub_db
    assert result.guest.warnings == []


# --- the real Debian guest -------------------------------------------------------------------

WANTS = "/etc/systemd/system/multi-user.target.wants"
MASKED = "/etc/systemd/system/vmshift-test-masked.service"


@pytest.fixture(scope="module")
def real(real_debian: BuiltGuest, tmp_path_factory: pytest.TempPathFactory) -> Result:
    tmp = tmp_path_factory.mktemp("real")
    with open_session([_overlay(real_debian.disks[0], tmp)], readonly=False) as session:
        (os,) = inspect_session(session)
        g = session.g
        mount_os(g, os.mountpoints, readonly=False)
        # A link that an earlier removal left dangling, and a masked unit that must stay.
        g.ln_s("/lib/systemd/system/vmware-tools.service", f"{WANTS}/vmware-tools.service")
        g.ln_s("/dev/null", MASKED)
        g.umount_all()
        result = _convert(g, os, _vm(REAL_MAC), ["/etc/systemd/network/10-vmshift-ens192.link"])
        mount_os(g, os.mountpoints, readonly=False)
        status = g.command(["/bin/sh", "-c", "dpkg -s open-vm-tools 2>&1; exit 0"])
        result.files["dpkg -s"] = status.strip()
        result.files["masked"] = g.readlink(MASKED)
        result.files["policy-rc.d"] = str(g.exists(tools_removal.POLICY_RC_D))
        g.umount_all()
        return result


@pytest.mark.realguest
def test_real_debian(real: Result) -> None:
    files = real.files
    # Purged: dpkg keeps no record of it, not even its configuration files.
    assert "package 'open-vm-tools' is not installed" in (files["dpkg -s"] or "")
    assert [c.what for c in real.guest.changes if c.step == "tools_removal"] == [
        "removed package open-vm-tools",
        "removed link to a missing unit: vmware-tools.service",
    ]
    assert real.dangling == []
    assert f"{WANTS}/open-vm-tools.service" not in real.links
    assert f"{WANTS}/networking.service" in real.links
    assert files["masked"] == "/dev/null"
    assert files["policy-rc.d"] == "0"  # ours was temporary
    link = files["/etc/systemd/network/10-vmshift-ens192.link"] or ""
    assert f"[Match]\nMACAddress={REAL_MAC}\n\n[Link]\nName=ens192\n" in link
    assert real.guest.warnings == []
    print(f"timings: {real.seconds}")
