"""Drawing for the terminal (rich). Library code never prints; the CLI calls these."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from vmshift.blockio.progress import Event, StageEvent, WarningEvent
from vmshift.model.inspection import InspectionReport, LinuxDetails, OperatingSystem, WindowsDetails
from vmshift.model.vm import CpuFeature, SourceVM


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _linux_tables(linux: LinuxDetails) -> list[RenderableType]:
    kernels = Table(title="Kernels", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("version", "virtio_blk", "virtio_net", "virtio_scsi", "initramfs has virtio_blk"):
        kernels.add_column(col)
    for k in linux.kernels:
        kernels.add_row(
            k.version, k.virtio_blk, k.virtio_net, k.virtio_scsi, _yes_no(k.initramfs_virtio_blk)
        )
    boot = linux.bootloader
    out: list[RenderableType] = [
        kernels,
        _kv_table("Bootloader", [("kind", boot.kind), ("config", boot.config or "-")]),
    ]
    if linux.network_configs:
        net = Table(title="Network configuration", box=box.SIMPLE_HEAD, title_justify="left")
        net.add_column("file")
        net.add_column("kind")
        net.add_column("interfaces")
        for cfg in linux.network_configs:
            net.add_row(cfg.path, cfg.kind, ", ".join(cfg.interfaces) or "-")
        out.append(net)
    return out


def _windows_tables(win: WindowsDetails) -> list[RenderableType]:
    rows = [
        ("system root", win.systemroot),
        ("build", win.build or "-"),
        ("control set", win.current_control_set),
        ("hibernated", _yes_no(win.hibernated)),
        ("fast startup", _yes_no(win.fast_startup)),
    ]
    drivers = Table(title="Boot-start drivers", box=box.SIMPLE_HEAD, title_justify="left")
    drivers.add_column("service")
    drivers.add_column("group")
    drivers.add_column("image")
    drivers.add_column("file present")
    for d in win.boot_drivers:
        drivers.add_row(d.name, d.group or "-", d.image_path or "-", _yes_no(d.file_present))
    return [_kv_table("Windows", rows), drivers]


def os_renderable(os: OperatingSystem, *, show_apps: bool) -> RenderableType:
    version = f"{os.major_version}.{os.minor_version}"
    rows = [
        ("root", os.root),
        ("type", os.type),
        ("distro", os.distro),
        ("product", os.product_name),
        ("version", version),
        ("arch", os.arch),
        ("hostname", os.hostname),
        ("packages", f"{os.package_format} / {os.package_manager}"),
        ("firmware", os.firmware),
        ("applications", str(len(os.applications))),
    ]
    title = f"{os.type} on {os.root}: {os.product_name}"
    parts: list[RenderableType] = [_kv_table(title, rows)]

    fs = Table(title="Filesystems", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("device", "mountpoint", "type", "size", "used"):
        fs.add_column(col)
    mounted = {dev: mp for mp, dev in os.mountpoints.items()}
    for f in os.filesystems:
        fs.add_row(
            f.device, mounted.get(f.device, "-"), f.type, human_size(f.size), human_size(f.used)
        )
    parts.append(fs)

    if os.linux is not None:
        parts += _linux_tables(os.linux)
    if os.windows is not None:
        parts += _windows_tables(os.windows)

    foreign = Table(title="Foreign hypervisor software", box=box.SIMPLE_HEAD, title_justify="left")
    foreign.add_column("hypervisor")
    foreign.add_column("name")
    foreign.add_column("found by")
    for sw in os.foreign_software:
        foreign.add_row(sw.kind, sw.name, sw.evidence)
    parts.append(
        foreign if os.foreign_software else Text("No foreign hypervisor software found.\n")
    )

    if show_apps:
        apps = Table(title="Applications", box=box.SIMPLE_HEAD, title_justify="left")
        apps.add_column("name")
        apps.add_column("version")
        for app in os.applications:
            ver = app.version + (f"-{app.release}" if app.release else "")
            apps.add_row(app.name, ver)
        parts.append(apps)
    return Group(*parts)


def print_report(console: Console, report: InspectionReport, *, show_apps: bool) -> None:
    disks = ", ".join(f"{d.path} ({d.format}, {human_size(d.virtual_size)})" for d in report.disks)
    console.print(Text.assemble(("Disks: ", "bold"), disks), soft_wrap=True)
    for os in report.operating_systems:
        console.print(os_renderable(os, show_apps=show_apps))


class ProgressPrinter:
    """Shows pipeline events: rich bars, plain lines (--machine-readable), or nothing (-q).

    Events may arrive from copier threads; rich's Progress is thread-safe, and the plain
    printer writes whole lines.
    """

    def __init__(self, *, quiet: bool, machine_readable: bool, console: Console) -> None:
        self.quiet = quiet
        self.machine_readable = machine_readable
        self.console = console
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.last_percent: dict[str, int] = {}

    def __enter__(self) -> ProgressPrinter:
        if not self.quiet and not self.machine_readable:
            self.progress = Progress(
                TextColumn("{task.description}", markup=False),
                TextColumn("{task.percentage:>3.0f}%"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(elapsed_when_finished=True),
                console=self.console,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop redrawing the bars while the user is asked something on the terminal."""
        if self.progress is None:
            yield
            return
        self.progress.stop()
        try:
            yield
        finally:
            self.progress.start()

    def event(self, ev: Event) -> None:
        if self.quiet:
            return
        if isinstance(ev, WarningEvent):
            if self.machine_readable:
                print(f"warning {ev.message}", flush=True)
            else:
                # soft_wrap: a long line (a path) is not cut or folded at the console's width.
                self.console.print(f"vmshift: warning: {ev.message}", markup=False, soft_wrap=True)
            return
        if isinstance(ev, StageEvent):
            stamp = time.monotonic() - self.started
            if self.machine_readable:
                print(f"stage {ev.stage} {stamp:.1f} {ev.message}", flush=True)
            else:
                self.console.print(f"[{stamp:6.1f}] {ev.message}", markup=False, soft_wrap=True)
            return
        if self.machine_readable:
            percent = int(ev.done * 100 / ev.total) if ev.total else 100
            key = f"{ev.phase} {ev.disk}"
            if self.last_percent.get(key) != percent or ev.finished:
                self.last_percent[key] = percent
                print(f"{ev.phase} {ev.label} {ev.done} {ev.total} {percent}%", flush=True)
            return
        if self.progress is None:
            return
        # The check after a copy gets a bar of its own: "debian12-sda verify".
        key = ev.disk if ev.phase == "copy" else f"{ev.disk} {ev.phase}"
        task = self.tasks.get(key)
        if task is None:
            label = ev.label if ev.phase == "copy" else f"{ev.label} {ev.phase}"
            task = self.progress.add_task(label, total=ev.total)
            self.tasks[key] = task
        self.progress.update(task, completed=ev.done)


def print_source_vm(console: Console, vm: SourceVM) -> None:
    topology = (
        f" ({vm.topology.sockets} sockets x {vm.topology.cores} cores x {vm.topology.threads})"
        if vm.topology
        else ""
    )
    cpu = vm.cpu
    rows = [
        ("name", vm.name),
        ("origin", vm.origin),
        ("source", vm.source_file or "-"),
        ("VM genid", vm.genid or "-"),
        ("memory", human_size(vm.memory)),
        ("vCPUs", f"{vm.vcpus}{topology}"),
        ("CPU vendor", (cpu.vendor if cpu else None) or "-"),
        ("CPU model", (cpu.model if cpu else None) or "-"),
        ("CPU features", ", ".join(_cpu_feature(f) for f in cpu.features) if cpu else "-"),
        ("features", ", ".join(vm.features) or "-"),
        ("firmware", str(vm.firmware)),
        ("UEFI secure boot", "yes" if vm.secure_boot else "no"),
        ("guest OS hint", vm.os_hint or "-"),
    ]
    console.print(_kv_table("Source guest", rows))
    disks = Table(title="Disks", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("name", "controller", "bus:unit", "format", "size", "file"):
        disks.add_column(col)
    for d in vm.disks:
        ctl = d.controller + (f" ({d.controller_model})" if d.controller_model else "")
        disks.add_row(
            d.name, ctl, f"{d.bus}:{d.unit}", d.endpoint.format,
            human_size(d.endpoint.virtual_size), d.endpoint.uri,
        )  # fmt: skip
    console.print(disks)
    if vm.removables:
        rem = Table(title="Removable drives", box=box.SIMPLE_HEAD, title_justify="left")
        for col in ("kind", "controller", "bus:unit", "media"):
            rem.add_column(col)
        for r in vm.removables:
            rem.add_row(r.kind, r.controller, f"{r.bus}:{r.unit}", r.source_path or "-")
        console.print(rem)
    nics = Table(title="Network interfaces", box=box.SIMPLE_HEAD, title_justify="left")
    for col in ("model", "MAC", "network"):
        nics.add_column(col)
    for n in vm.nics:
        nics.add_row(n.model, n.mac or "(generated)", f"{n.network_type} {n.network or '-'}")
    console.print(nics)


def _cpu_feature(feature: CpuFeature) -> str:
    return feature.name if feature.policy == "require" else f"{feature.name} ({feature.policy})"
