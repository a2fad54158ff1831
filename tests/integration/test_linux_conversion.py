"""Issue acceptance: the real Debian VMware guest converts and boots on virtio, network included."""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import sha256, vmshift
from tests.guests.boot import boot_to_login
from tests.guests.manifest import BuiltGuest

pytestmark = [pytest.mark.slow, pytest.mark.realguest]

ROOT_PASSWORD = "vmshift"
STATIC_ADDRESS = "192.0.2.10/24"


def _convert(vmx: Path, outdir: Path, *extra: str) -> tuple[str, dict[str, object]]:
    report = outdir.parent / f"{outdir.name}-report.json"
    proc = vmshift(
        ["convert", "-i", "vmx", vmx, "-o", "local", "-os", outdir, "-of", "qcow2",
         "--report", report, *extra],
        timeout=2400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc: dict[str, object] = json.loads(report.read_text())
    return proc.stdout.strip().splitlines()[-1], doc


# verdict, --report document, output directory, source hashes taken before converting
Converted = tuple[str, dict[str, object], Path, dict[Path, str]]


@pytest.fixture(scope="module")
def conversions(
    real_debian: BuiltGuest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Future[Converted]]:
    """Convert the three real guests two at a time: each conversion spends minutes in a
    single-threaded TCG appliance (update-initramfs), so two keep both cores busy."""
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
        outdir = tmp_path_factory.mktemp(f"conv-{name}") / "out"
        outdir.mkdir()
        verdict, report = _convert(guest.extra["vmx"], outdir)
        return verdict, report, outdir, before

    futures = {name: pool.submit(run, name) for name in guests}
    pool.shutdown(wait=False)
    return futures


def test_real_debian_boots_on_virtio_with_its_static_address(
    real_debian: BuiltGuest, conversions: dict[str, Future[Converted]]
) -> None:
    verdict, report, outdir, before = conversions["base"].result()
    assert verdict.startswith("vmshift: debian12-vmware configured with virtio drivers")

    xml = (outdir / "debian12-vmware.xml").read_text().replace('"', "'")
    assert "<target dev='vda' bus='virtio'/>" in xml
    assert "<mac address='00:50:56:1a:2b:3c'/>" in xml
    assert "<model type='virtio'/>" in xml

    changes = report["changes"]
    assert isinstance(changes, list)
    steps = {c["step"] for c in changes}
    assert {"tools_removal", "initramfs", "devices", "network", "bootloader"} <= steps
    paths = {c["path"] for c in changes}
    # MODULES=list: the virtio drivers must be named in the modules file, and the old image kept.
    assert "/etc/initramfs-tools/modules" in paths
    assert any(str(p).endswith(".vmshift-orig") for p in paths if p)
    assert "/etc/fstab" in paths
    assert report["devices"]["virtio"] is True  # type: ignore[index]

    result = boot_to_login(
        outdir / "debian12-vmware-sda",
        disk_bus="virtio-blk",
        nic_model="virtio-net-pci",
        mac="00:50:56:1a:2b:3c",
        command="ip -br addr; dpkg -s open-vm-tools >/dev/null 2>&1 && echo TOOLS-PRESENT",
        password=ROOT_PASSWORD,
        timeout=900,
    )
    assert result.reached_login, result.tail()
    output = result.command_output or ""
    iface = next(line for line in output.splitlines() if line.startswith("ens192 "))
    assert "UP" in iface
    assert STATIC_ADDRESS in iface
    assert "TOOLS-PRESENT" not in output
    assert {p: sha256(p) for p in before} == before


@pytest.mark.parametrize("variant", ["lvm", "uefi"])
def test_real_debian_variants_boot_after_conversion(
    variant: str, conversions: dict[str, Future[Converted]]
) -> None:
    verdict, _report, outdir, before = conversions[variant].result()
    assert "configured with virtio drivers" in verdict, verdict
    xml_path = next(outdir.glob("*.xml"))
    xml = xml_path.read_text().replace('"', "'")
    assert "bus='virtio'" in xml
    uefi = variant == "uefi"
    assert ("<os firmware='efi'>" in xml) == uefi
    disk = next(p for p in outdir.iterdir() if p.suffix != ".xml")
    result = boot_to_login(
        disk,
        disk_bus="virtio-blk",
        nic_model="virtio-net-pci",
        firmware="uefi" if uefi else "bios",
        timeout=900,
    )
    assert result.reached_login, result.tail()
    assert {p: sha256(p) for p in before} == before
