"""The Target contract: check early, make output disks, then describe the guest.

    target = LocalTarget(opts)
    target.check(vm)                  # before any slow work: options, directory, pool, name
    outs = target.setup(vm, disks)    # one OutputDisk per source disk, under temporary names
    ...the pipeline copies into outs[i].path...
    result = target.finalize(vm, inspection, caps, outs)   # rename into place, write XML ...
    target.abort()                    # on any failure: remove what setup/finalize made

abort() must leave nothing that looks like a complete guest. Errors are TargetError naming
the option or path at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import SourceVM


@dataclass(frozen=True)
class NetworkMap:
    """--network/--bridge/--mac mappings. Keys: source network name, or MAC (lower case).

    As in virt-v2v there is one default per kind of source connection: `--network OUT` for
    NICs on a source network, `--bridge OUT` for NICs on a source bridge. A NIC whose own kind
    has no default takes the other kind's, so a single default still covers every NIC.
    """

    networks: dict[str, str] = field(default_factory=dict)  # in network -> out network
    bridges: dict[str, str] = field(default_factory=dict)  # in network -> out bridge
    macs: dict[str, tuple[str, str]] = field(default_factory=dict)  # mac -> (type, name)
    default_network: str | None = None  # --network OUT
    default_bridge: str | None = None  # --bridge OUT

    def map(self, mac: str | None, network: str | None, kind: str = "network") -> tuple[str, str]:
        """The (type, name) a source NIC connects to on the target; kind is the source NIC's
        connection type (Nic.network_type)."""
        return self.lookup(mac, network, kind) or ("network", "default")

    def lookup(
        self, mac: str | None, network: str | None, kind: str = "network"
    ) -> tuple[str, str] | None:
        """Like map(), but None when no mapping (not even a default) covers the NIC.

        A source name is matched in both tables whatever the NIC's kind: sources disagree on
        what a connection is (virt-v2v calls every OVF connection a bridge)."""
        if mac and mac.lower() in self.macs:
            return self.macs[mac.lower()]
        if network is not None and network in self.networks:
            return ("network", self.networks[network])
        if network is not None and network in self.bridges:
            return ("bridge", self.bridges[network])
        defaults = [("network", self.default_network), ("bridge", self.default_bridge)]
        if kind == "bridge":
            defaults.reverse()
        for out_type, name in defaults:
            if name is not None:
                return (out_type, name)
        return None


@dataclass(frozen=True)
class TargetOptions:
    storage: str | None = None  # -os
    conn: str | None = None  # -oc
    format: str = "raw"  # -of
    allocation: str = "sparse"  # -oa: sparse or preallocated
    name: str | None = None  # -on
    networks: NetworkMap = field(default_factory=NetworkMap)
    qemu_boot: bool = False
    rhv_data_domain_type: str | None = None  # --rhv-data-domain-type: nfs, iscsi or fc
    # --domain-type: kvm or qemu (TCG) for the guest on the target. None: kvm, except that
    # -o libvirt asks the target's libvirtd what it can run. Never this host's accelerator:
    # what vmshift writes describes the target, not the conversion host.
    domain_type: str | None = None
    # -o null: the directory its copy is written to and thrown away (None: the temporary
    # directory, tempfile's choice).
    discard_dir: Path | None = None


@dataclass(frozen=True)
class OutputDisk:
    path: Path  # where the copier writes (a temporary name until finalize)
    final_path: Path  # where it ends up
    format: str  # raw or qcow2
    preallocated: bool
    virtual_size: int


@dataclass(frozen=True)
class TargetResult:
    name: str
    description: str  # one line for the user: where the guest now is
    files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()  # about the target, e.g. file ownership the user must fix
    # The libvirt domain XML describing the guest, for targets that write one (--verify-boot
    # boots the guest from it).
    domain_xml: str | None = None
    boot_script: Path | None = None  # -o qemu: the script that boots the guest
    # Where --verify-boot saves the console of a guest that did not come up; None: beside the
    # first file (-o rhv: the -os directory, not inside an image directory of the domain).
    console_dir: Path | None = None


class Target(Protocol):
    def check(self, vm: SourceVM) -> None: ...

    def setup(self, vm: SourceVM, sizes: list[int]) -> list[OutputDisk]: ...

    def finalize(
        self, vm: SourceVM, os: OperatingSystem, caps: GuestCaps, disks: list[OutputDisk]
    ) -> TargetResult: ...

    def abort(self) -> None: ...
