"""-i disk: one or more disk images of one guest, no metadata.

Memory, CPUs and the NIC are defaults a user can override (--memory, --vcpus, --name);
firmware is decided from the guest itself by inspection.
"""

from __future__ import annotations

from pathlib import Path

from vmshift.blockio.imageinfo import probe_image
from vmshift.errors import UsageError
from vmshift.model.devnames import scsi_disk_name
from vmshift.model.vm import Controller, DiskEndpoint, Firmware, Nic, SourceDisk, SourceVM
from vmshift.sources.base import SourceOptions

DEFAULT_MEMORY = 2 << 30
DEFAULT_VCPUS = 2


def _guest_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".qcow2", ".img", ".raw", ".vmdk", ".vhdx", ".vhd", ".vdi", ".qcow"):
        name = name.removesuffix(suffix)
    return name or "guest"


class DiskSource:
    def __init__(self, opts: SourceOptions) -> None:
        if not opts.args:
            raise UsageError("-i disk needs at least one disk image")
        self.opts = opts

    def open(self, workdir: Path) -> SourceVM:
        disks = []
        for index, arg in enumerate(self.opts.args):
            info = probe_image(Path(arg))
            if self.opts.input_format and self.opts.input_format != info.format:
                raise UsageError(
                    f"{arg}: -if {self.opts.input_format} given, but the image is {info.format}"
                )
            endpoint = DiskEndpoint(str(Path(arg).resolve()), info.format, info.virtual_size)
            disks.append(
                SourceDisk(endpoint=endpoint, controller=Controller.UNKNOWN, unit=index,
                           name=scsi_disk_name(index))
            )  # fmt: skip
        first = Path(self.opts.args[0])
        return SourceVM(
            name=self.opts.name or _guest_name(first),
            memory=self.opts.memory or DEFAULT_MEMORY,
            vcpus=self.opts.vcpus or DEFAULT_VCPUS,
            topology=None,
            firmware=Firmware.UNKNOWN,
            disks=tuple(disks),
            nics=(Nic(mac=None, model="virtio", network="default"),),
            origin="disk",
            source_file=str(first),
        )

    def close(self) -> None:
        pass
