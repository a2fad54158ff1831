"""govmomi's vSphere API simulator for the tests: built once from Debian's Go sources (cached like
the test guests), started with TLS on 127.0.0.1 and one login, stopped by closing its stdin.

VMs are registered through the real vSphere API (pyvmomi's CreateVM_Task) with the devices a
test asks for; their disks are the test guests' files, hard-linked into the simulator's
datastore directory (a symlink where a hard link cannot be made), never copied.

The simulator also answers VirtualMachine.ExportVm (vcsim_export.go): the lease serves, for a
disk that names an `export` image, that image (hard-linked into the simulator's exports
directory); `lease_records()` reads what became of every lease.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from tests.guests.cache import cached_dir, source_version

SOURCES = (Path(__file__).with_name("vcsim.go"), Path(__file__).with_name("vcsim_export.go"))
GOPATH_SYSTEM = Path("/usr/share/gocode")
# Inventory names of govmomi's models (simulator.ESX() and VPX() with one cluster, one host).
ESX_DATACENTER = "ha-datacenter"
VPX_PATH = ("DC0", "DC0_C0", "DC0_C0_H0")
DATASTORE = "LocalDS_0"


def build_vcsim() -> Path:
    """The simulator binary, built in GOPATH mode from golang-github-vmware-govmomi-dev."""
    go = shutil.which("go")
    if go is None or not (GOPATH_SYSTEM / "src/github.com/vmware/govmomi/simulator").is_dir():
        pytest.skip("needs golang-go and golang-github-vmware-govmomi-dev (make setup)")

    def build(out: Path) -> None:
        gopath = out / "gopath"
        (gopath / "src/vcsim").mkdir(parents=True)
        for source in SOURCES:
            name = "main.go" if source.name == "vcsim.go" else source.name
            shutil.copy(source, gopath / "src/vcsim" / name)
        env = {
            **os.environ,
            "GOPATH": f"{gopath}:{GOPATH_SYSTEM}",
            "GO111MODULE": "off",
            "GOCACHE": str(out / "gocache"),
            "GOFLAGS": "",
        }
        subprocess.run(
            [go, "build", "-o", str(out / "vcsim"), "vcsim"],
            env=env,
            cwd=gopath,
            check=True,
            capture_output=True,
        )
        shutil.rmtree(gopath)
        shutil.rmtree(out / "gocache", ignore_errors=True)

    return cached_dir("vcsim", source_version(__file__, *SOURCES), build) / "vcsim"


@dataclass(frozen=True)
class SimDisk:
    vmdk: Path  # a flat VMDK descriptor; its -flat.vmdk beside it
    controller: str = "pvscsi"  # pvscsi, lsilogic, sata
    # False: only the descriptor stays in the datastore, as on vSAN (no -flat.vmdk to read).
    flat: bool = True
    # What the VM's export lease serves for this disk (a streamOptimized VMDK, as ESXi does);
    # None: the lease fails naming the disk.
    export: Path | None = None


@dataclass(frozen=True)
class SimNic:
    mac: str
    network: str = "VM Network"  # must exist in the model (an unknown one crashes vcsim 0.24)
    model: str = "vmxnet3"


@dataclass(frozen=True)
class SimVm:
    name: str
    disks: tuple[SimDisk, ...]
    nics: tuple[SimNic, ...] = ()
    memory_mib: int = 1024
    vcpus: int = 2
    cores_per_socket: int = 1
    firmware: str = "bios"
    secure_boot: bool = False
    guest_id: str = "debian12_64Guest"
    extra_config: dict[str, str] = field(default_factory=dict)
    power_on: bool = False


@dataclass
class Simulator:
    kind: str  # esx or vpx
    url: str  # https://127.0.0.1:PORT/sdk
    user: str
    password: str
    proc: subprocess.Popen[bytes]
    exports_dir: Path
    datastore_dir: Path = Path()

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    def uri(self, *, no_verify: bool = True, user: str | None = None) -> str:
        """The -ic URI vmshift takes for this simulator."""
        who = quote(user or self.user, safe="")
        query = "?no_verify=1" if no_verify else ""
        if self.kind == "esx":
            return f"esx://{who}@127.0.0.1:{self.port}/{query}"
        return f"vpx://{who}@127.0.0.1:{self.port}/{'/'.join(VPX_PATH)}{query}"

    def connect(self) -> Any:
        from pyVim.connect import SmartConnect

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return SmartConnect(
            host="127.0.0.1", port=self.port, user=self.user, pwd=self.password, sslContext=context
        )

    def add_vm(self, spec: SimVm) -> None:
        """Put spec's disk files in the datastore and register the VM through the API."""
        from pyVim.task import WaitForTask
        from pyVmomi import vim

        folder = self.datastore_dir / spec.name
        folder.mkdir()
        for disk in spec.disks:
            for src in (disk.vmdk, flat_file(disk.vmdk)):
                _link(src, folder / src.name)
            if disk.export is not None:
                exported = self.exports_dir / DATASTORE / spec.name / disk.vmdk.name
                exported.parent.mkdir(parents=True, exist_ok=True)
                _link(disk.export, exported)
        si = self.connect()
        try:
            dc = si.RetrieveContent().rootFolder.childEntity[0]
            compute = dc.hostFolder.childEntity[0]
            devices = [*_disk_devices(vim, spec), *_nic_devices(vim, spec)]
            config = vim.vm.ConfigSpec(
                name=spec.name,
                memoryMB=spec.memory_mib,
                numCPUs=spec.vcpus,
                numCoresPerSocket=spec.cores_per_socket,
                guestId=spec.guest_id,
                firmware=spec.firmware,
                files=vim.vm.FileInfo(vmPathName=f"[{DATASTORE}] {spec.name}/{spec.name}.vmx"),
                bootOptions=vim.vm.BootOptions(efiSecureBootEnabled=spec.secure_boot),
                extraConfig=[
                    vim.option.OptionValue(key=k, value=v) for k, v in spec.extra_config.items()
                ],
                deviceChange=[
                    vim.vm.device.VirtualDeviceSpec(operation="add", device=d) for d in devices
                ],
            )
            task = dc.vmFolder.CreateVM_Task(config=config, pool=compute.resourcePool)
            WaitForTask(task)
            for disk in spec.disks:
                if not disk.flat:  # the simulator wants it to create the VM, not afterwards
                    (folder / flat_file(disk.vmdk).name).unlink()
            if spec.power_on:
                WaitForTask(task.info.result.PowerOnVM_Task())
        finally:
            from pyVim.connect import Disconnect

            Disconnect(si)

    def lease_records(self) -> dict[str, dict[str, Any]]:
        """Every export lease made so far: {id: {vm, state, progress, progress_calls}}, state
        one of initializing, ready, done (completed), aborted, error."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        url = self.url.replace("/sdk", "/vmshift/leases")
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            records: dict[str, dict[str, Any]] = json.load(answer)
        return records

    def snapshot(self, vm_name: str, snapshot_name: str) -> None:
        """Take a snapshot of a registered VM through the API."""
        from pyVim.connect import Disconnect
        from pyVim.task import WaitForTask
        from pyVmomi import vim

        si = self.connect()
        try:
            content = si.RetrieveContent()
            view = content.viewManager.CreateContainerView(
                content.rootFolder, [vim.VirtualMachine], True
            )
            vm = next(v for v in view.view if v.name == vm_name)
            view.Destroy()
            WaitForTask(vm.CreateSnapshot_Task(snapshot_name, "", False, False))
        finally:
            Disconnect(si)


def flat_file(descriptor: Path) -> Path:
    return descriptor.with_name(descriptor.stem + "-flat.vmdk")


def make_flat_vmdk(source: Path, fmt: str, out: Path) -> Path:
    """A monolithicFlat VMDK (descriptor + -flat data file) of source's disk, as ESXi stores
    disks; the data file is sparse, so this costs what the guest holds."""
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", fmt, "-O", "vmdk", "-o", "subformat=monolithicFlat",
         str(source), str(out)],
        check=True,
    )  # fmt: skip
    return out


def make_stream_vmdk(source: Path, fmt: str, out: Path) -> Path:
    """A streamOptimized VMDK of source's disk: what an ESXi export lease serves."""
    subprocess.run(
        ["qemu-img", "convert", "-q", "-f", fmt, "-O", "vmdk", "-o",
         "subformat=streamOptimized", str(source), str(out)],
        check=True,
    )  # fmt: skip
    return out


@contextlib.contextmanager
def simulator(kind: str, user: str, password: str) -> Iterator[Simulator]:
    binary = build_vcsim()
    exports = Path(tempfile.mkdtemp(prefix="vcsim-exports-"))
    proc = subprocess.Popen(
        [str(binary), "-model", kind, "-user", user, "-password", password,
         "-exports", str(exports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    from pyVmomi import vim

    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"vcsim exited with {proc.wait()}")
        sim = Simulator(kind, json.loads(line)["url"], user, password, proc, exports)
        si = sim.connect()
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
        sim.datastore_dir = Path(next(d for d in view.view if d.name == DATASTORE).info.url)
        view.Destroy()
        from pyVim.connect import Disconnect

        Disconnect(si)
        yield sim
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(exports, ignore_errors=True)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        dst.symlink_to(src.resolve())


def _flat_size(descriptor: Path) -> int:
    return flat_file(descriptor).stat().st_size


def _disk_devices(vim: Any, spec: SimVm) -> list[Any]:
    devices: list[Any] = []
    controllers: dict[str, Any] = {}
    for unit, disk in enumerate(spec.disks):
        if disk.controller not in controllers:
            controllers[disk.controller] = _controller(vim, disk.controller, 1000 + unit)
            devices.append(controllers[disk.controller])
        size_kib = _flat_size(disk.vmdk) // 1024
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=f"[{DATASTORE}] {spec.name}/{disk.vmdk.name}",
            diskMode="persistent",
            thinProvisioned=True,
        )
        device = vim.vm.device.VirtualDisk(
            key=2000 + unit,
            controllerKey=controllers[disk.controller].key,
            unitNumber=unit,
            capacityInKB=size_kib,
            capacityInBytes=size_kib * 1024,
            backing=backing,
        )
        devices.append(device)
    return devices


def _nic_devices(vim: Any, spec: SimVm) -> list[Any]:
    cards = {"vmxnet3": vim.vm.device.VirtualVmxnet3, "e1000": vim.vm.device.VirtualE1000}
    network = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo
    return [
        cards[nic.model](
            key=4000 + n,
            addressType="manual",
            macAddress=nic.mac,
            backing=network(deviceName=nic.network),
        )
        for n, nic in enumerate(spec.nics)
    ]


def _controller(vim: Any, kind: str, key: int) -> Any:
    classes: dict[str, Any] = {
        "pvscsi": vim.vm.device.ParaVirtualSCSIController,
        "lsilogic": vim.vm.device.VirtualLsiLogicController,
        "sata": vim.vm.device.VirtualAHCIController,
    }
    cls = classes[kind]
    if kind == "sata":
        return cls(key=key, busNumber=0)
    return cls(key=key, busNumber=0, sharedBus="noSharing")
