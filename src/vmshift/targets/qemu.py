"""-o qemu -os DIR: disks as DIR/NAME-sdX plus DIR/NAME.sh, a script that boots the guest.

The script is plain POSIX sh around one qemu-system-x86_64 command with the devices GuestCaps
asks for. Every path is quoted twice: for qemu (a ',' inside an option value is written ',,')
and then for the shell (shlex.quote), so no file or guest name can change the command.

    DIR/NAME.sh                 foreground; the serial console is this terminal
    DIR/NAME.sh --daemonize     background; console to DIR/NAME.console.log, pid in DIR/NAME.pid
    DIR/NAME.sh -snapshot ...   anything else is passed on to qemu

The guest has user-mode networking (qemu's built-in NAT): libvirt networks and bridges named
by --network/--bridge mean nothing to a bare qemu, and a bridge would need root.

Secure boot (GuestCaps.secure_boot) needs an OVMF build with Microsoft's keys enrolled and
SMM: found through the firmware descriptors only (a file name says too little), and run with
-machine ...,smm=on and the secure pflash. The source's CPU model is used when this qemu lists
it; the VM generation id becomes a vmgenid device.

--qemu-boot runs the script with --daemonize at the end of finalize: qemu detaches once the
guest is running, so the conversion finishes and reports where the console is. A failure to
boot is reported in the result, not raised: the converted disks are fine and must not be
removed by the abort that an error would trigger.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

from vmshift.errors import TargetError
from vmshift.formats.genid import normalise_genid
from vmshift.formats.libvirt_xml import cpu_features, effective_topology, source_cpu_model
from vmshift.model.caps import GuestCaps
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import CpuModel, Firmware, SourceVM
from vmshift.process import CommandFailed, run
from vmshift.targets.base import OutputDisk, TargetOptions, TargetResult
from vmshift.targets.local import OutputDirectory, output_name
from vmshift.targets.platform import cpu_model_decision, secure_boot_decision
from vmshift.targets.qemu_host import (
    FIRMWARE_DESCRIPTORS,
    QEMU,
    find_uefi_firmware,
    qemu_cpu_models,
)

# <feature policy> -> qemu's -cpu switch; "optional" has no qemu equivalent and is left out.
_CPU_SWITCH = {"force": "+", "require": "+", "disable": "-", "forbid": "-"}
_NET_DEVICE = {
    "virtio": "virtio-net-pci",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "rtl8139": "rtl8139",
}
_VGA_DEVICE = {"virtio": "virtio-vga", "qxl": "qxl-vga", "vga": "VGA", "cirrus": "cirrus-vga"}
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes


def script_accel(opts: TargetOptions) -> str:
    """The script's accelerator: kvm or tcg when --domain-type fixes it (kvm, or qemu for
    TCG), else "auto": the script picks KVM when it runs where KVM works, TCG elsewhere."""
    return {"kvm": "kvm", "qemu": "tcg"}.get(opts.domain_type or "", "auto")


# What an "auto" script runs first. qemu's own fallback (accel=kvm:tcg) is not enough: where
# /dev/kvm exists but the CPU cannot virtualise (nested setups), qemu with KVM aborts.
_AUTO_ACCEL = [
    "accel=tcg cpu=max",
    "if [ -w /dev/kvm ] && grep -qw -e vmx -e svm /proc/cpuinfo; then accel=kvm cpu=host; fi",
]


def qemu_value(text: str | Path) -> str:
    """Escape a value inside a qemu option list, where ',' separates options."""
    return str(text).replace(",", ",,")


def qemu_cpu(cpu: CpuModel) -> str:
    """-cpu MODEL,+feature,-feature for a source CPU model (source_cpu_model checked it)."""
    parts = [str(cpu.model)]
    parts += [_CPU_SWITCH[f.policy] + f.name for f in cpu_features(cpu) if f.policy in _CPU_SWITCH]
    return ",".join(parts)  # names are CPU_NAME-shaped: no ',' to escape


def qemu_script(
    vm: SourceVM,
    caps: GuestCaps,
    disks: Sequence[tuple[Path, str]],
    *,
    name: str,
    accel: str,
    directory: Path,
    uefi: tuple[Path, Path] | None = None,
    os_type: str | None = None,
    cpu_model: bool = False,
    secure_boot: bool = False,
) -> str:
    """The sh script; disks are (absolute path, format); uefi is (code, this guest's vars).

    cpu_model: this qemu knows the source's CPU model (vm.cpu), so ask for it. secure_boot:
    uefi is a secure-boot build; the machine gets SMM and the flash is locked to it.
    """
    if caps.block_bus == "ide" and caps.machine == "q35":
        raise TargetError("IDE disks need machine type 'pc': q35 has no IDE controller")
    if secure_boot and (uefi is None or caps.machine != "q35"):
        raise TargetError("secure boot needs UEFI firmware and machine type q35")
    q = shlex.quote
    model = source_cpu_model(vm) if cpu_model else None
    machine = f"{caps.machine},smm=on" if secure_boot else caps.machine
    args: list[str] = [
        "-no-user-config", "-nodefaults",
        "-name", q(f"guest={qemu_value(name)}"),
        "-machine", f"{machine},accel=" + ('"$accel"' if accel == "auto" else accel),
        "-cpu", q(qemu_cpu(model)) if model else _default_cpu(accel),
        "-m", str(-(-vm.memory // (1 << 20))),
    ]  # fmt: skip
    genid = normalise_genid(vm.genid) if vm.genid else None
    if genid is not None:
        args += ["-device", f"vmgenid,guid={genid},id=vmgenid0"]
    smp = str(vm.vcpus)
    topo = effective_topology(vm)
    if topo is not None:
        smp += f",sockets={topo.sockets},cores={topo.cores},threads={topo.threads}"
    args += ["-smp", smp, "-rtc", "base=localtime" if os_type == "windows" else "base=utc"]
    if uefi is not None:
        code, varstore = uefi
        if secure_boot:
            # Only code running in SMM may write the flash: the guest OS cannot change keys.
            args += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        args += ["-drive", q(f"if=pflash,format=raw,unit=0,readonly=on,file={qemu_value(code)}")]
        args += ["-drive", q(f"if=pflash,format=raw,unit=1,file={qemu_value(varstore)}")]

    cdroms = [r for r in vm.removables if r.kind == "cdrom"]
    sata_used = caps.block_bus == "sata" or (caps.machine == "q35" and cdroms)
    if sata_used:
        args += ["-device", "ahci,id=sata0"]
    if caps.block_bus == "virtio-scsi":
        args += ["-device", "virtio-scsi-pci,id=scsi0"]
    for i, (path, fmt) in enumerate(disks):
        drive = f"file={qemu_value(path)},format={fmt},if=none,id=disk{i}"
        device = f"{_disk_device(caps.block_bus, i)},bootindex={i + 1}"
        args += ["-drive", q(drive), "-device", device]
    cd_bus = "sata" if caps.machine == "q35" else "ide"
    first = len(disks) if caps.block_bus == cd_bus else 0
    for j, _ in enumerate(cdroms):
        bus = _port(cd_bus, first + j)
        args += [
            "-drive",
            f"if=none,id=cd{j},media=cdrom,readonly=on",
            "-device",
            f"ide-cd,drive=cd{j},{bus}",
        ]

    for i, nic in enumerate(vm.nics):
        device = f"{_NET_DEVICE.get(caps.net_model, 'virtio-net-pci')},netdev=net{i}"
        if nic.mac:
            device += f",mac={nic.mac.lower()}"
        args += ["-netdev", f"user,id=net{i}", "-device", q(device)]

    args += ["-device", _VGA_DEVICE.get(caps.video, "VGA")]
    args += ["-display", "none", "-vnc", "127.0.0.1:0,to=99"]
    args += ["-device", "qemu-xhci,id=usb", "-device", "usb-tablet,bus=usb.0"]
    if caps.virtio_rng:
        args += [
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=rng0",
        ]
    if caps.virtio_balloon:
        args += ["-device", "virtio-balloon-pci"]
    agent = directory / f"{name}.qga"
    if caps.virtio_serial and len(str(agent).encode()) < _MAX_SOCKET_PATH:
        args += [
            "-chardev",
            q(f"socket,id=qga0,path={qemu_value(agent)},server=on,wait=off"),
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        ]
    args += ["-serial", '"$serial"', '"$@"']

    pidfile = directory / f"{name}.pid"
    log = directory / f"{name}.console.log"
    floppies = sum(1 for r in vm.removables if r.kind == "floppy")
    lines = [
        "#!/bin/sh -",
        f"# Boot the guest {name!r}, converted by vmshift.",
        "#   this script              foreground; serial console on this terminal",
        "#   this script --daemonize  background; console log and pid file next to the disks",
        "# Other arguments are passed to qemu. Networking is qemu's user-mode NAT.",
    ]
    if floppies:
        lines.append(f"# The source had {floppies} floppy drive(s); they are left out.")
    lines += [
        "set -e",
        *(_AUTO_ACCEL if accel == "auto" else []),
        "serial=stdio",
        'if [ "${1-}" = --daemonize ]; then',
        "    shift",
        # -serial's legacy "file:" syntax takes the rest verbatim: no ',,' escaping here.
        f"    serial={q(f'file:{log}')}",
        f'    set -- -daemonize -pidfile {q(str(pidfile))} "$@"',
        "fi",
        f"exec {QEMU} \\",
    ]
    pairs = _pair_options(args)
    lines += [f"    {p} \\" for p in pairs[:-1]] + [f"    {pairs[-1]}", ""]
    return "\n".join(lines)


def _default_cpu(accel: str) -> str:
    return {"kvm": "host", "tcg": "max"}.get(accel, '"$cpu"')


def _pair_options(args: list[str]) -> list[str]:
    """Join each -option with its value, one per line, for a readable script."""
    out: list[str] = []
    for arg in args:
        if out and out[-1].startswith("-") and " " not in out[-1] and not arg.startswith("-"):
            out[-1] += " " + arg
        else:
            out.append(arg)
    return out


def _port(bus: str, index: int) -> str:
    if bus == "sata":
        return f"bus=sata0.{index}"
    return f"bus=ide.{index // 2},unit={index % 2}"


def _disk_device(block_bus: str, index: int) -> str:
    if block_bus == "virtio-blk":
        return f"virtio-blk-pci,drive=disk{index}"
    if block_bus == "virtio-scsi":
        return f"scsi-hd,drive=disk{index},bus=scsi0.0"
    if block_bus in ("sata", "ide"):
        return f"ide-hd,drive=disk{index},{_port(block_bus, index)}"
    raise TargetError(f"-o qemu cannot attach disks on bus {block_bus!r}")


def check_script(path: Path) -> None:
    try:
        run(["sh", "-n", str(path)], timeout=30)
    except CommandFailed as exc:
        raise TargetError(
            f"{path}: generated script has a syntax error: {exc.stderr.strip()}",
            hint="this is a bug in vmshift; please report it",
        ) from exc


class QemuTarget:
    def __init__(self, opts: TargetOptions) -> None:
        self._opts = opts
        self._out = OutputDirectory(opts, "-o qemu")

    @property
    def swept(self) -> list[str]:
        return self._out.swept

    def check(self, vm: SourceVM) -> None:
        if shutil.which(QEMU) is None:
            raise TargetError(f"-o qemu needs {QEMU}", hint="install qemu-system-x86")
        name = output_name(self._opts, vm)
        self._out.check(vm, [f"{name}.sh", f"{name}-VARS.fd"])

    def setup(self, vm: SourceVM, sizes: list[int]) -> list[OutputDisk]:
        if not self._out.name:
            self.check(vm)
        return self._out.setup(sizes)

    def finalize(
        self, vm: SourceVM, os: OperatingSystem, caps: GuestCaps, disks: list[OutputDisk]
    ) -> TargetResult:
        name = self._out.name
        directory = self._out.dir.absolute()
        secure = find_uefi_firmware(caps.machine, secure=True) if caps.secure_boot else None
        secure_boot, warnings = secure_boot_decision(
            caps,
            secure is not None,
            "no OVMF firmware descriptor offers secure boot with enrolled keys and SMM "
            f"(in {' or '.join(map(str, FIRMWARE_DESCRIPTORS))}; Debian: package ovmf)",
        )
        accel = script_accel(self._opts)
        cpu_model, cpu_warnings = self._cpu_model(vm, accel)
        warnings += cpu_warnings
        uefi = None
        if caps.firmware is Firmware.UEFI:
            found = secure if secure_boot else find_uefi_firmware(caps.machine)
            if found is None:
                raise TargetError(
                    "the guest needs UEFI, but no OVMF firmware was found",
                    hint="install ovmf (Debian) or edk2-ovmf",
                )
            code, template = found
            varstore = self._out.stage(f"{name}-VARS.fd", copy_of=template).absolute()
            uefi = (code, varstore)
        script_text = qemu_script(
            vm,
            caps,
            [(d.final_path.absolute(), d.format) for d in disks],
            name=name,
            accel=accel,
            directory=directory,
            uefi=uefi,
            os_type=os.type,
            cpu_model=cpu_model,
            secure_boot=secure_boot,
        )
        script = self._out.stage(f"{name}.sh", script_text, mode=0o755, check=check_script)
        finals = self._out.commit(disks)  # the script last: it is what looks finished
        files = (*finals, script, *([uefi[1]] if uefi else []))
        description = f"{script} (run it to boot the guest)"
        if self._opts.qemu_boot:
            description = f"{script}; {self._boot(script, directory / f'{name}.pid')}"
        return TargetResult(
            name=name, description=description, files=files, warnings=warnings, boot_script=script
        )

    def _cpu_model(self, vm: SourceVM, accel: str) -> tuple[bool, tuple[str, ...]]:
        model = source_cpu_model(vm)
        known = qemu_cpu_models() if model is not None else None
        runnable = known is not None and model is not None and model.model in known
        why_not = (
            f"{QEMU} -cpu help does not list it"
            if known is not None
            else f"{QEMU} -cpu help did not answer"
        )
        fallback = {"kvm": "-cpu host", "tcg": "-cpu max"}.get(
            accel, "-cpu host where KVM works, -cpu max elsewhere"
        )
        return cpu_model_decision(vm, runnable, why_not, fallback)

    def _boot(self, script: Path, pidfile: Path) -> str:
        try:
            run([str(script), "--daemonize"], timeout=120)
        except CommandFailed as exc:
            return f"booting it failed: {exc.message}"
        try:
            pid = pidfile.read_text().strip()
        except OSError:
            pid = "?"
        return (
            f"booted in the background (qemu pid {pid}; console in "
            f"{pidfile.with_suffix('.console.log')}; VNC on 127.0.0.1, display 0 or the next free)"
        )

    def abort(self) -> None:
        self._out.abort()

    def keep_for_resume(self) -> None:
        self._out.keep_for_resume()
