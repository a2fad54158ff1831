"""-i ova: an OVA (a tar holding an OVF descriptor, manifests and disk images) as VMware's
ovftool and VirtualBox export it, a zip holding the same, the directory it was unpacked into,
or the .ovf in it. It reads what virt-v2v's -i ova reads.

Order of work, each step before the next touches any data:
1. list the archive and refuse members that could escape it (absolute names, `..`, links,
   devices) or be read ambiguously (duplicate names, GNU sparse members): ova_archive.py;
2. verify every manifest's checksums against the files they list, streaming the data (an OVA
   without a manifest is read all the same, with a logged warning: VirtualBox can omit it):
   ova_manifest.py;
3. parse the OVF (formats/ovf.py); every file it references must be in a manifest (when there
   is one);
4. expose each disk: ova_disks.py.

What vmshift reads past, as virt-v2v does (a manifest line it cannot parse, a file a manifest
lists that the OVA lacks, a wrong ovf:size on a sound image, an unparsable VM generation id),
goes to SourceVM.warnings, which the CLI prints.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

from vmshift.errors import SourceError, UsageError
from vmshift.formats.ovf import parse_ovf
from vmshift.formats.ovf_model import OvfDescriptor, OvfDiskAttachment, OvfFile
from vmshift.formats.ovf_xml import MAX_OVF_BYTES
from vmshift.model.devnames import scsi_disk_name
from vmshift.model.vm import Controller, SourceDisk, SourceVM
from vmshift.sources.base import SourceOptions
from vmshift.sources.ova_disks import expose
from vmshift.sources.ova_manifest import Checked, verify_manifests
from vmshift.sources.ova_package import Package, open_package, stored_names

log = logging.getLogger(__name__)


class OvaSource:
    """Reads an OVA file or unpacked OVA directory; see the module docstring."""

    def __init__(self, opts: SourceOptions) -> None:
        if len(opts.args) != 1:
            raise UsageError("-i ova takes one argument: the .ova file or its unpacked directory")
        self._path = Path(opts.args[0])

    def open(self, workdir: Path) -> SourceVM:
        pkg, ovf_name = open_package(self._path, workdir)
        base = posixpath.dirname(ovf_name)
        checked = verify_manifests(pkg)
        warnings = list(checked.warnings)
        if not checked.manifests:
            warnings.append(f"{pkg.label}: no manifest (.mf); checksums cannot be checked")
        elif ovf_name not in checked.listed:
            warnings.append(f"{pkg.label}: no manifest lists {ovf_name}")

        ovf_member = pkg.need(ovf_name, "the descriptor")
        if ovf_member.size > MAX_OVF_BYTES:
            raise SourceError(f"{pkg.label}: {ovf_name} is too large for an OVF descriptor")
        desc = parse_ovf(pkg.read(ovf_member, MAX_OVF_BYTES), path=f"{pkg.label}: {ovf_name}")
        warnings.extend(desc.warnings)
        if checked.manifests:
            for ref in desc.files:
                _check_listed(pkg, base, ref, checked, ovf_name=ovf_name, warnings=warnings)

        disks = tuple(
            _source_disk(pkg, base, att, index, workdir=workdir, warnings=warnings)
            for index, att in enumerate(desc.disks)
        )
        return _source_vm(desc, disks, str(self._path), checked, tuple(warnings))

    def close(self) -> None:
        """Nothing to stop: qemu reads the OVA itself, and workdir copies go with workdir."""


def _check_listed(
    pkg: Package, base: str, ref: OvfFile, checked: Checked, *, ovf_name: str, warnings: list[str]
) -> None:
    """Refuse a file the OVF references that is in the OVA but in no manifest: its data would
    go unverified. A VMware snapshot file standing in for the file a manifest lists (and the
    OVA lacks) is read with a warning, as virt-v2v reads it."""
    name, stored = stored_names(pkg, base, ref)
    for each in stored:
        if each in checked.listed or pkg.get(each) is None:
            continue
        if each != name and name in checked.absent and not ref.chunk_size:
            warnings.append(
                f"{pkg.label}: {each} is read for {name}, which a manifest lists but the OVA "
                f"lacks (a VMware snapshot file); its checksum cannot be checked"
            )
            continue
        raise SourceError(
            f"{pkg.label}: {each} is referenced by {ovf_name} but not listed in the manifest "
            f"{', '.join(checked.manifests)}",
            hint="the OVA is incomplete or was altered after export",
        )


def _source_disk(
    pkg: Package,
    base: str,
    att: OvfDiskAttachment,
    index: int,
    *,
    workdir: Path,
    warnings: list[str],
) -> SourceDisk:
    controller = att.controller
    kind = controller.kind if controller else Controller.UNKNOWN
    return SourceDisk(
        endpoint=expose(pkg, base, att.disk, index, workdir=workdir, warnings=warnings),
        controller=kind,
        bus=controller.bus if controller else 0,
        unit=att.unit,
        controller_model=controller.model if controller and kind is Controller.SCSI else None,
        name=scsi_disk_name(index),
    )


def _source_vm(
    desc: OvfDescriptor,
    disks: tuple[SourceDisk, ...],
    source_file: str,
    checked: Checked,
    warnings: tuple[str, ...],
) -> SourceVM:
    extra = {
        "ovf_version": str(desc.ovf_version),
        "ovf_producer": desc.producer,
        "manifest": "verified" if checked.manifests else "absent",
    }
    if desc.os_id is not None:
        extra["ovf_os_id"] = str(desc.os_id)
    return SourceVM(
        name=desc.name,
        memory=desc.memory,
        vcpus=desc.vcpus,
        topology=desc.topology,
        firmware=desc.firmware,
        disks=disks,
        removables=desc.removables,
        nics=desc.nics,
        origin="virtualbox" if desc.producer == "virtualbox" else "vmware",
        os_hint=desc.os_type or desc.os_description,
        source_file=source_file,
        genid=desc.genid,
        secure_boot=bool(desc.secure_boot),
        warnings=warnings,
        extra=extra,
    )
