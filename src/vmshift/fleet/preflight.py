"""`vmshift plan check`: a preflight of every guest of a plan, nothing copied, no appliance.

Per guest, in a few threads at once, each with a time limit:
    source      reachable (a refused connection is "unreachable"), the guest found and powered
                off (Source.open refuses a running libvirt domain or a powered-on vSphere VM;
                a `NAME.vmx.lck` directory beside a .vmx means VMware has it open)
    disks       the first sector of every disk endpoint read (a local file, or NBD via libnbd)
    target      Target.check(vm): the output's options, storage and the name free there
    networks    every source NIC mapped by the guest's -n/-b (or --mac, or its profile's)
    datastores  with a [storage] table: every datastore of the guest's disks mapped
then, per target storage, the sum of its guests' used data against the free space there.

The caller (cli/plan_check_cmd.py) turns a GuestSpec into a GuestSetup (a Source and a Target
made from the guest's `vmshift convert` arguments by the convert command's own code), since
the library does not import cli/.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmshift.blockio.progress import Event, StageEvent
from vmshift.errors import SourceError, VmshiftError
from vmshift.fleet.plan import GuestSpec, Plan, with_guests
from vmshift.fleet.preflight_space import Use, allocated, space_findings
from vmshift.fleet.vsphere_select import PasswordReader, datastore_of, select
from vmshift.model.vm import DiskEndpoint, Nic, SourceVM
from vmshift.sources.base import ReportingSource, Source
from vmshift.targets.base import NetworkMap, Target

PARALLEL = 4  # guests checked at once
TIMEOUT = 300.0  # seconds for one guest's checks
SECTOR = 512
PLAN = "(plan)"  # Finding.guest of what concerns no single guest


@dataclass(frozen=True)
class Finding:
    guest: str  # the guest's plan name, "[[source]] N", or PLAN
    check: str  # options, source, powered off, disks, target, networks, datastores, space
    ok: bool
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GuestSetup:
    """A guest's `vmshift convert` arguments made into the pieces the checks use."""

    source: Source
    target: Target
    networks: NetworkMap  # -n/-b/--mac over its profile's
    input_mode: str  # -i, "vsphere" for -i libvirt -ic esx:// or vpx://
    output: str  # -o, aliases resolved
    output_storage: str | None = None
    output_conn: str | None = None
    preallocated: bool = False
    vmx_local: bool = False  # -i vmx of a local file (not -it ssh)


Prepare = Callable[[GuestSpec], GuestSetup]


@dataclass
class GuestResult:
    findings: list[Finding] = field(default_factory=list)
    use: Use | None = None


def check_plan(
    plan: Plan,
    prepare: Prepare,
    read_password: PasswordReader,
    *,
    parallel: int = PARALLEL,
    timeout: float = TIMEOUT,
    workdir: Path | None = None,
) -> list[Finding]:
    """Every finding about the plan's active guests ([[source]] tables expanded first), the
    passing ones too (ok=True); the problems are those with ok=False."""
    findings: list[Finding] = []
    expanded: list[GuestSpec] = []
    for selection in plan.sources:
        label = f"[[source]] {selection.index}"
        try:
            expanded += select(plan, selection, read_password)
        except VmshiftError as exc:
            findings.append(Finding(label, *classify(exc.message)))
    try:
        plan = with_guests(plan, expanded)
    except VmshiftError as exc:
        return [*findings, Finding(PLAN, "options", False, exc.message)]
    guests = plan.active()
    results = run_bounded(
        guests,
        lambda spec: check_guest(plan, spec, prepare, workdir),
        parallel=parallel,
        timeout=timeout,
    )
    for spec in guests:
        result = results.get(spec.name)
        if result is None:
            findings.append(Finding(spec.name, "source", False, f"no answer in {timeout:g} s"))
            continue
        findings += result.findings
    uses = [r.use for r in results.values() if r is not None and r.use is not None]
    findings += [
        Finding(PLAN, "space", ok, text) for ok, text in space_findings(uses, plan.directory)
    ]
    return findings


def problems(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if not f.ok]


def run_bounded(
    specs: Sequence[GuestSpec],
    check: Callable[[GuestSpec], GuestResult],
    *,
    parallel: int,
    timeout: float,
) -> dict[str, GuestResult | None]:
    """check(spec) for every spec, `parallel` at once, each given `timeout` seconds: a guest
    still busy then is left to finish on its own (its result None) while the rest go on."""
    results: dict[str, GuestResult | None] = {}
    lock = threading.Lock()
    queue = list(reversed(specs))

    def one(spec: GuestSpec, box: list[GuestResult]) -> None:
        try:
            box.append(check(spec))
        except Exception as exc:  # a bug in a check must not lose the other guests' findings
            box.append(GuestResult([Finding(spec.name, "source", False, f"check failed: {exc!r}")]))

    def slot() -> None:
        while True:
            with lock:
                if not queue:
                    return
                spec = queue.pop()
            box: list[GuestResult] = []
            worker = threading.Thread(target=one, args=(spec, box), daemon=True)
            worker.start()
            worker.join(timeout)
            with lock:
                results[spec.name] = box[0] if box else None

    slots = [threading.Thread(target=slot, daemon=True) for _ in range(max(1, parallel))]
    for thread in slots:
        thread.start()
    for thread in slots:
        thread.join()
    return results


class _WouldDownload(SourceError):
    """open() was about to download a disk through an export lease: not in a preflight."""


def _no_downloads(event: Event) -> None:
    if isinstance(event, StageEvent) and event.stage == "source":
        raise _WouldDownload(event.message)


def check_guest(
    plan: Plan, spec: GuestSpec, prepare: Prepare, workdir: Path | None = None
) -> GuestResult:
    """One guest's findings and what it would take at its target storage."""
    result = GuestResult()
    add = result.findings.append
    try:
        setup = prepare(spec)
    except VmshiftError as exc:
        add(Finding(spec.name, "options", False, exc.message))
        return result
    if setup.vmx_local:
        lock = vmx_lock(plan.directory / spec.args[0])
        if lock is not None:
            add(Finding(spec.name, "powered off", False,
                        f"{lock} exists: VMware has the VM open (running?)"))  # fmt: skip
    if isinstance(setup.source, ReportingSource):
        setup.source.report_to(_no_downloads)
    with tempfile.TemporaryDirectory(prefix="vmshift-check-", dir=workdir) as tmp:
        try:
            try:
                vm = setup.source.open(Path(tmp))
            except _WouldDownload as exc:
                add(Finding(spec.name, "disks", True, f"not read here: {exc.message}"))
                return result
            except VmshiftError as exc:
                add(Finding(spec.name, *classify(exc.message)))
                return result
            if not any(f.check == "powered off" for f in result.findings):
                add(Finding(spec.name, "powered off", True, "powered off"))
            add(Finding(spec.name, "source", True, f"{vm.source_file or vm.name}: reachable"))
            result.findings += _checks(plan, spec, setup, vm)
            result.use = used(spec, setup, vm)
        finally:
            setup.source.close()
    return result


def _checks(plan: Plan, spec: GuestSpec, setup: GuestSetup, vm: SourceVM) -> list[Finding]:
    out: list[Finding] = []
    bad = []
    for disk in vm.disks:
        try:
            read_first_sector(disk.endpoint)
        except VmshiftError as exc:
            bad.append(f"{disk.name or disk.endpoint.uri}: {exc.message}")
    text = "; ".join(bad) or f"{len(vm.disks)} disk(s) readable"
    out.append(Finding(spec.name, "disks", not bad, text))
    try:
        setup.target.check(vm)
        out.append(Finding(spec.name, "target", True, "name free"))
    except VmshiftError as exc:
        out.append(Finding(spec.name, "target", False, exc.message))
    finally:
        setup.target.abort()  # check() may hold the output name's lock
    lost = unmapped_nics(vm.nics, setup.networks)
    if lost:
        shown = ", ".join(_nic(n) for n in lost)
        out.append(Finding(spec.name, "networks", False, f"not mapped (give -n/-b): {shown}"))
    else:
        out.append(Finding(spec.name, "networks", True, f"{len(vm.nics)} NIC(s) mapped"))
    if plan.storage:
        stores = source_datastores(setup, spec, vm)
        missing = unmapped_datastores(stores, plan.storage)
        if missing:
            text = f"not in [storage]: {', '.join(missing)}"
        else:
            text = f"mapped: {', '.join(stores)}" if stores else "no datastore"
        out.append(Finding(spec.name, "datastores", not missing, text))
    return out


def _nic(nic: Nic) -> str:
    where = f"{nic.network_type} {nic.network!r}" if nic.network else "no network"
    return f"{nic.mac or 'NIC'} ({where})"


def classify(message: str) -> tuple[str, bool, str]:
    """(check, ok, text) of a source that could not be opened."""
    if re.search(r"the VM is (poweredOn|suspended)|guest is running", message):
        return ("powered off", False, message)
    if "cannot connect" in message:
        return ("source", False, f"unreachable: {message}")
    return ("source", False, message)


def vmx_lock(vmx: Path) -> Path | None:
    """The `NAME.vmx.lck` directory VMware keeps beside a .vmx it has open, if there is one."""
    lock = vmx.with_name(vmx.name + ".lck")
    return lock if lock.exists() else None


def read_first_sector(endpoint: DiskEndpoint) -> bytes:
    """The first sector of a disk endpoint's data (a local file's first bytes, or the NBD
    export's); SourceError naming it when it cannot be read."""
    if endpoint.is_local:
        try:
            with Path(endpoint.uri).open("rb") as f:
                return f.read(SECTOR)
        except OSError as exc:
            raise SourceError(f"{endpoint.uri}: cannot read: {exc.strerror}") from None
    import nbd

    handle = nbd.NBD()
    try:
        handle.connect_uri(endpoint.uri)
        size = int(handle.get_size())
        return bytes(handle.pread(min(SECTOR, size), 0)) if size else b""
    except nbd.Error as exc:
        raise SourceError(f"{endpoint.uri}: cannot read: {exc.string}") from None
    finally:
        with contextlib.suppress(nbd.Error):
            handle.shutdown()


def unmapped_nics(nics: Iterable[Nic], networks: NetworkMap) -> list[Nic]:
    """The NICs no mapping covers: `IN:OUT` maps IN, a bare OUT maps every NIC, --mac one."""
    return [n for n in nics if networks.lookup(n.mac, n.network, n.network_type) is None]


def unmapped_datastores(stores: Iterable[str], storage: dict[str, str] | Any) -> list[str]:
    return [ds for ds in stores if ds not in storage]


def source_datastores(setup: GuestSetup, spec: GuestSpec, vm: SourceVM) -> list[str]:
    """The datastores a guest's disks are on: from the vSphere API, else from the paths (of a
    VMX on a datastore: `[ds] dir/x.vmdk`, /vmfs/volumes/ds/...)."""
    stores = getattr(setup.source, "datastores", None)
    if callable(stores):
        return list(stores())
    paths = [spec.args[0]] if setup.input_mode == "vmx" else []
    paths += [d.endpoint.uri for d in vm.disks if d.endpoint.is_local]
    found = [datastore_of(_path_of(p)) for p in paths]
    return list(dict.fromkeys(ds for ds in found if ds is not None))


def _path_of(text: str) -> str:
    """The path of an ssh://host/vmfs/... URI, or text itself."""
    if "://" in text:
        rest = text.split("://", 1)[1]
        return "/" + rest.split("/", 1)[1] if "/" in rest else ""
    return text


def used(spec: GuestSpec, setup: GuestSetup, vm: SourceVM) -> Use:
    """What the guest would take at its target storage: its disks' used data (the virtual
    size when the output is preallocated)."""
    virtual = sum(d.endpoint.virtual_size for d in vm.disks)
    size, how = virtual, "virtual size"
    reported = getattr(setup.source, "committed", None)
    committed = reported() if callable(reported) else None
    if setup.preallocated:
        how = "virtual size (preallocated output)"
    elif committed is not None:
        size, how = min(int(committed), virtual) or virtual, "vSphere committed storage"
    elif all(d.endpoint.is_local for d in vm.disks):
        size = sum(allocated(d.endpoint) for d in vm.disks)
        how = "allocated data"
    return Use(spec.target_storage, setup.output, setup.output_storage, setup.output_conn,
               size, how)  # fmt: skip
