"""What a .vmx says about the hardware, read as VMware and virt-v2v read it: firmware defaults to
BIOS, the generation id's two signed halves, NICs without a network name, secure boot.

Expected generation ids are facts from virt-v2v's documentation and test data, worked by hand
from the bytes the guest sees (docs/convert.md), not computed by the code under test."""

from __future__ import annotations

import pytest

from vmshift.formats.vmx import VmxFile, parse_vmx
from vmshift.model.vm import Firmware, Nic
from vmshift.sources import vmx_hardware as hw
from vmshift.targets.base import NetworkMap


def vmx(*lines: str) -> VmxFile:
    return parse_vmx("\n".join(lines) + "\n", path="g.vmx")


# ---- firmware -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ((), Firmware.BIOS),  # no key: VMware boots BIOS
        (('firmware = "bios"',), Firmware.BIOS),
        (('firmware = "efi"',), Firmware.UEFI),
        (('firmware = "EFI"',), Firmware.UEFI),
    ],
)
def test_firmware(lines: tuple[str, ...], expected: Firmware) -> None:
    warnings: list[str] = []
    assert hw.firmware(vmx(*lines), warnings) is expected
    assert warnings == []


def test_unknown_firmware_is_bios_with_a_warning() -> None:
    warnings: list[str] = []
    assert hw.firmware(vmx('firmware = "csm"'), warnings) is Firmware.BIOS
    assert warnings == ['g.vmx: unknown firmware = "csm", assuming BIOS as VMware does']


# ---- generation id --------------------------------------------------------------------------

# virt-v2v's docs/vm-generation-id-across-hypervisors.txt: VMGENID.EXE in the Windows guest
# prints low:high = 8987940a09512cc5:e81510634ff550b9, i.e. guest memory holds
# c5 2c 51 09 0a 94 87 89 b9 50 f5 4f 63 10 15 e8; qemu byte-swaps the first three fields of
# the guid it is given, so the guid that puts those bytes there is:
DOC_GENID = "09512cc5-940a-8987-b950-f54f631015e8"
# virt-v2v's tests/test-i-vmx-7.vmx and its .expected --print-source output.
TEST7_GENID = "2f0de9ad-5b7c-f4de-d53f-23b1115d28b9"


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        ("-8536691797830587195", "-1723453263670062919", DOC_GENID),
        ("-802103094701856339", "-5104727847056752683", TEST7_GENID),
        # The same halves written unsigned (2**64 - n) or in hex mean the same bytes.
        ("9910052275878964421", "16723290810039488697", DOC_GENID),
        ("0x8987940a09512cc5", "0xe81510634ff550b9", DOC_GENID),
    ],
)
def test_genid(low: str, high: str, expected: str) -> None:
    warnings: list[str] = []
    assert hw.genid(vmx(f'vm.genid = "{low}"', f'vm.genidX = "{high}"'), warnings) == expected
    assert warnings == []


def test_no_genid() -> None:
    warnings: list[str] = []
    assert hw.genid(vmx('displayName = "g"'), warnings) is None
    assert warnings == []


@pytest.mark.parametrize(
    ("lines", "shown"),
    [
        (('vm.genid = "12"',), 'vm.genid = "12", no vm.genidX'),
        (('vm.genid = "x"', 'vm.genidX = "1"'), 'vm.genid = "x", vm.genidX = "1"'),
        (
            ('vm.genid = "1"', f'vm.genidX = "{1 << 64}"'),
            f'vm.genid = "1", vm.genidX = "{1 << 64}"',
        ),
    ],
)
def test_unusable_genid_is_a_warning(lines: tuple[str, ...], shown: str) -> None:
    warnings: list[str] = []
    assert hw.genid(vmx(*lines), warnings) is None
    assert warnings == [f"g.vmx: {shown}: not a generation id; the guest will get a new one"]


# ---- NICs -----------------------------------------------------------------------------------


def test_nics_named_as_virt_v2v_names_them() -> None:
    nics = hw.nics(
        vmx(
            'ethernet0.present = "TRUE"',
            'ethernet0.connectionType = "bridged"',
            'ethernet0.virtualDev = "e1000e"',
            'ethernet0.addressType = "generated"',
            'ethernet0.generatedAddress = "00:0c:29:00:00:01"',
            'ethernet1.present = "TRUE"',
            'ethernet1.connectionType = "bridged"',
            'ethernet1.networkName = "DMZ"',
            'ethernet2.present = "TRUE"',
            'ethernet2.connectionType = "nat"',
            'ethernet3.present = "TRUE"',
            'ethernet3.connectionType = "custom"',
            'ethernet3.vnet = "vmnet8"',
        )
    )
    assert nics == (
        Nic(mac="00:0c:29:00:00:01", model="e1000e", network="ethernet0", network_type="bridge"),
        Nic(mac=None, model="vlance", network="DMZ", network_type="bridge"),
        Nic(mac=None, model="vlance", network="ethernet2", network_type="network"),
        Nic(mac=None, model="vlance", network="vmnet8", network_type="network"),
    )


def test_bridge_mapping_reaches_a_bridged_nic_without_a_network_name() -> None:
    (nic,) = hw.nics(vmx('ethernet0.present = "TRUE"', 'ethernet0.connectionType = "bridged"'))
    networks = NetworkMap(bridges={"ethernet0": "br0"})
    assert networks.map(nic.mac, nic.network, nic.network_type) == ("bridge", "br0")
