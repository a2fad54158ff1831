"""VMX texts shared by the tests that need a plain VMware guest description."""

from __future__ import annotations

# A RHEL-style guest on pvscsi with a static-MAC vmxnet3 NIC on "VM Network" and a
# generated-MAC e1000 NIC on "Backup Network": two NICs so network mappings are exercised.
_TWO_NIC_VMX = """\
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "{name}"
guestOS = "rhel9-64"
memSize = "1024"
numvcpus = "2"
cpuid.coresPerSocket = "2"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.deviceType = "scsi-hardDisk"
scsi0:0.fileName = "{disk}"
ethernet0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "static"
ethernet0.address = "00:50:56:AB:CD:EF"
ethernet1.present = "TRUE"
ethernet1.virtualDev = "e1000"
ethernet1.networkName = "Backup Network"
ethernet1.addressType = "generated"
ethernet1.generatedAddress = "00:0c:29:12:34:56"
"""


def two_nic_vmx(name: str, disk: str) -> str:
    """A VMX naming one disk file, relative to the VMX's folder."""
    return _TWO_NIC_VMX.format(name=name, disk=disk)
