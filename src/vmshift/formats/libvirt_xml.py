"""libvirt domain XML out: the converted guest's definition (-o libvirt, -o local).

The emitter builds the machine from GuestCaps, never from the source's devices: a VMware
guest's pvscsi disk becomes whatever bus the converted guest can boot from. Only the things a
user or the guest recognises survive from the source: name, memory, CPUs (and their model when
the target says it can run it), MAC addresses, networks, the VM generation id.

What the target can provide (secure boot, the source's CPU model) is decided by the target
(targets/platform.py) and handed in as flags: this module describes, it does not probe.
The parser for the other direction is libvirt_domain.py.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Sequence
from pathlib import Path

from lxml import etree

from vmshift.errors import TargetError
from vmshift.formats.genid import normalise_genid
from vmshift.formats.libvirt_domain import CPU_FEATURE_POLICIES, CPU_NAME
from vmshift.model.caps import GuestCaps
from vmshift.model.devnames import drive_letters
from vmshift.model.vm import CpuFeature, CpuModel, CpuTopology, Firmware, SourceVM
from vmshift.targets.base import NetworkMap

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"

# GuestCaps.block_bus -> libvirt's <target bus>.
_TARGET_BUS = {"virtio-blk": "virtio", "virtio-scsi": "scsi", "sata": "sata", "ide": "ide"}
# <target bus> -> the device name prefix users and guests expect for it.
_DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "usb": "sd", "ide": "hd", "fdc": "fd"}


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    elem = etree.SubElement(parent, tag, attrs)
    if text is not None:
        elem.text = text
    return elem


def effective_topology(vm: SourceVM) -> CpuTopology | None:
    """The source topology if it accounts for exactly vm.vcpus, adjusted or dropped if not.

    libvirt refuses a topology whose product differs from <vcpu>; sources get this wrong
    (a VMX with numvcpus=6 and coresPerSocket=4), so keep the cores and threads per socket
    and recompute the sockets, or fall back to libvirt's default of one core per socket.
    """
    topo = vm.topology
    if topo is None or vm.vcpus < 1:
        return None
    if topo.sockets * topo.cores * topo.threads == vm.vcpus:
        return topo
    per_socket = topo.cores * topo.threads
    if per_socket > 0 and vm.vcpus % per_socket == 0:
        return CpuTopology(vm.vcpus // per_socket, topo.cores, topo.threads)
    return None


def source_cpu_model(vm: SourceVM) -> CpuModel | None:
    """vm.cpu when it names a model a target could describe; None otherwise."""
    cpu = vm.cpu
    if cpu is None or cpu.model is None or CPU_NAME.fullmatch(cpu.model) is None:
        return None
    return cpu


def cpu_features(cpu: CpuModel) -> list[CpuFeature]:
    """The features worth writing: well-formed names with a policy libvirt knows."""
    return [
        f
        for f in cpu.features
        if f.policy in CPU_FEATURE_POLICIES and CPU_NAME.fullmatch(f.name) is not None
    ]


def removable_bus(kind: str, machine: str) -> str:
    """Where an empty CD-ROM or floppy goes: q35 has no IDE controller, i440fx has one."""
    if kind == "floppy":
        return "fdc"
    return "sata" if machine == "q35" else "ide"


def domain_xml(
    vm: SourceVM,
    caps: GuestCaps,
    disks: Sequence[tuple[str | Path, str]],
    *,
    name: str,
    networks: NetworkMap,
    domain_type: str,
    os_type: str | None = None,
    uuid: str | None = None,
    cpu_model: bool = False,
    secure_boot: bool = False,
) -> str:
    """The libvirt <domain> for the converted guest; disks are (path, format) in boot order.

    domain_type is "kvm" or "qemu" (TCG); os_type ("linux", "windows") picks the clock.
    cpu_model: the target can run the source's CPU model (vm.cpu), so describe it instead of
    the default CPU. secure_boot: enforce UEFI secure boot (UEFI q35 guests only).
    """
    bus = _TARGET_BUS.get(caps.block_bus)
    if bus is None:
        raise TargetError(f"cannot describe disks on bus {caps.block_bus!r} in libvirt XML")
    if bus == "ide" and caps.machine == "q35":
        raise TargetError("IDE disks need machine type 'pc': q35 has no IDE controller")
    windows = os_type == "windows"
    kvm = domain_type == "kvm"
    uefi = caps.firmware is Firmware.UEFI
    if secure_boot and not (uefi and caps.machine == "q35"):
        raise TargetError("secure boot needs UEFI firmware and machine type q35")

    root = etree.Element("domain", type=domain_type)
    _sub(root, "name", name)
    _sub(root, "uuid", uuid or str(uuidlib.uuid4()))
    genid = normalise_genid(vm.genid) if vm.genid else None
    if genid is not None:
        # The same value the source showed the guest, so Windows does not think it was
        # cloned or restored from a snapshot (which resets Active Directory's state).
        _sub(root, "genid", genid)
    kib = str(-(-vm.memory // 1024))
    _sub(root, "memory", kib, unit="KiB")
    _sub(root, "currentMemory", kib, unit="KiB")
    _sub(root, "vcpu", str(vm.vcpus), placement="static")

    os_attrs = {"firmware": "efi"} if uefi else {}
    os_elem = _sub(root, "os", **os_attrs)
    _sub(os_elem, "type", "hvm", arch=caps.arch, machine=caps.machine)
    if uefi:
        # Without secure_boot, off: the source may have run unsigned kernels or drivers. With
        # it, libvirt picks a firmware with Microsoft's keys enrolled, which is what signed
        # Windows and shim-booted Linux guests were checked against at the source.
        state = "yes" if secure_boot else "no"
        fw = _sub(os_elem, "firmware")
        _sub(fw, "feature", enabled=state, name="enrolled-keys")
        _sub(fw, "feature", enabled=state, name="secure-boot")
    _sub(os_elem, "boot", dev="hd")

    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if caps.arch == "i686":
        _sub(features, "pae")
    if secure_boot:
        # Secure-boot OVMF keeps its variable store in SMM, out of the guest kernel's reach.
        _sub(features, "smm", state="on")
    if windows and kvm:
        # Hyper-V enlightenments need KVM; they keep Windows from burning CPU on spinlocks.
        hv = _sub(features, "hyperv", mode="custom")
        _sub(hv, "relaxed", state="on")
        _sub(hv, "vapic", state="on")
        _sub(hv, "spinlocks", state="on", retries="8191")

    model = source_cpu_model(vm) if cpu_model else None
    if model is not None:
        # The source's model as a minimum: the guest keeps the CPU it was installed on (and
        # licensed for), and the target may offer more. fallback='allow' lets libvirt use a
        # close model when the host's qemu spells this one differently.
        cpu = _sub(root, "cpu", mode="custom", match="minimum", check="none")
        _sub(cpu, "model", model.model, fallback="allow")
        if model.vendor is not None and CPU_NAME.fullmatch(model.vendor):
            _sub(cpu, "vendor", model.vendor)
    else:
        # host-model under KVM: guests built for x86-64-v2 and later (RHEL 9) do not boot on
        # libvirt's default CPU model. Under TCG "maximum" plays that role.
        cpu = _sub(root, "cpu", mode="host-model" if kvm else "maximum", check="none")
    topo = effective_topology(vm)
    if topo is not None:
        _sub(
            cpu,
            "topology",
            sockets=str(topo.sockets),
            dies="1",
            cores=str(topo.cores),
            threads=str(topo.threads),
        )
    if model is not None:
        for feature in cpu_features(model):
            _sub(cpu, "feature", policy=feature.policy, name=feature.name)

    # Windows keeps the hardware clock in local time; everything else in UTC.
    clock = _sub(root, "clock", offset="localtime" if windows else "utc")
    _sub(clock, "timer", name="rtc", tickpolicy="catchup")
    _sub(clock, "timer", name="pit", tickpolicy="delay")
    _sub(clock, "timer", name="hpet", present="no")
    if windows and kvm:
        _sub(clock, "timer", name="hypervclock", present="yes")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "restart")

    devices = _sub(root, "devices")
    used: dict[str, int] = {}

    def next_dev(target_bus: str) -> str:
        prefix = _DEV_PREFIX[target_bus]
        index = used.get(prefix, 0)
        used[prefix] = index + 1
        return prefix + drive_letters(index)

    if bus == "scsi":
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    for path, fmt in disks:
        source = str(path)
        block = source.startswith("/dev/")
        disk = _sub(devices, "disk", type="block" if block else "file", device="disk")
        _sub(disk, "driver", name="qemu", type=fmt)
        _sub(disk, "source", **({"dev": source} if block else {"file": source}))
        _sub(disk, "target", dev=next_dev(bus), bus=bus)
    for removable in vm.removables:
        rbus = removable_bus(removable.kind, caps.machine)
        drive = _sub(devices, "disk", type="file", device=removable.kind)
        _sub(drive, "driver", name="qemu", type="raw")
        _sub(drive, "target", dev=next_dev(rbus), bus=rbus)
        _sub(drive, "readonly")

    for nic in vm.nics:
        kind, target = networks.map(nic.mac, nic.network, nic.network_type)
        iface = _sub(devices, "interface", type=kind)
        if nic.mac:
            _sub(iface, "mac", address=nic.mac.lower())
        _sub(iface, "source", **{kind: target})
        _sub(iface, "model", type=caps.net_model)

    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if caps.virtio_serial:
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
    _sub(devices, "input", type="tablet", bus="usb")
    graphics = _sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    _sub(graphics, "listen", type="address", address="127.0.0.1")
    video = _sub(devices, "video")
    _sub(video, "model", type=caps.video)
    if caps.virtio_rng:
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="virtio" if caps.virtio_balloon else "none")

    return etree.tostring(root, pretty_print=True, encoding="unicode")
