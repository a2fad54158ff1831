"""A plan's [[source]] tables: the guests of a vCenter or ESXi connection chosen by name, folder,
glob or regex, as one GuestSpec each (`-i libvirt -ic URI VM`).

    [[source]]
    input-conn = "vpx://administrator%40vsphere.local@vc.example.com/DC/Cluster/esxi1?no_verify=1"
    input-password-file = "/root/vc.pw"
    folder = "prod/web"          # an inventory folder (under the datacenter's VM folder) and below
    glob = "web*"                # fnmatch on the VM's name
    regex = "^db[0-9]+$"         # re.search on the VM's name
    names = ["mail01"]           # exact names: each must exist
    exclude = ["web-old*"]       # globs (an exact name is one) taken out at the end

The folder narrows where VMs are looked for; names, glob and regex each add the VMs they match
(all of the folder when only folder is given). Templates are never chosen. A vpx:// URI names
one ESXi host, and only that host's VMs can be read through it, so only they are chosen. A VM
that a [[guest]] table already names on the same connection is left to that table (its
per-guest overrides win). The other keys of the table are `vmshift convert` options over the
plan's [[defaults]]; when the plan has a [storage] table and the [[source]] sets no
output-storage, a guest whose first disk is on a mapped datastore gets that output storage.
Each guest's source host (its per-source-host limit) is the ESXi host its VM runs on.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmshift.errors import ConfigError, VmshiftError
from vmshift.fleet.convert_line import guest_name, source_host, target_storage
from vmshift.fleet.plan import GuestSpec, Plan, SourceSelection, with_guests
from vmshift.sources.vsphere import connect, vpx_host
from vmshift.sources.vsphere_uri import VsphereUri, parse_vsphere_uri

# (flag, path) -> the password on the file's first line: cli.mode_options.read_password_file.
PasswordReader = Callable[[str, Path], str]
THUMBPRINT_OPTION = "vddk-thumbprint"


@dataclass(frozen=True)
class FoundVm:
    """What the selection needs to know of one VM of the inventory."""

    name: str
    folder: str  # its folder under the datacenter's VM folder ("" at the top): prod/web
    host: str | None  # the ESXi host it runs on (runtime.host), None if vSphere does not say
    datastore: str | None  # the datastore of its first disk
    template: bool = False


def where(plan: Plan, selection: SourceSelection) -> str:
    return f"{plan.path} [[source]] {selection.index}"


def expand_sources(plan: Plan, read_password: PasswordReader) -> Plan:
    """The plan with every [[source]] table's guests added; ConfigError/SourceError naming the
    table when one cannot be read or chooses nothing."""
    expanded: list[GuestSpec] = []
    for selection in plan.sources:
        expanded += select(plan, selection, read_password)
    return with_guests(plan, expanded)


def select(
    plan: Plan, selection: SourceSelection, read_password: PasswordReader
) -> list[GuestSpec]:
    """One [[source]] table's guests (not yet in the plan)."""
    here = where(plan, selection)
    conn = str(selection.options["input-conn"])
    try:
        uri = parse_vsphere_uri(conn)
    except VmshiftError as exc:
        raise ConfigError(f"{here}: {exc.message}") from None
    pw_file = selection.options.get("input-password-file")
    if pw_file is None:
        raise ConfigError(f"{here}: input-password-file (the vSphere password) is missing")
    password = read_password("input-password-file", plan.directory / str(pw_file))
    with _session(uri, password, _thumbprint(selection)) as si:
        vms = inventory(si, uri)
    return specs(plan, selection, choose(vms, selection, here))


def specs(plan: Plan, selection: SourceSelection, chosen: list[FoundVm]) -> list[GuestSpec]:
    """The GuestSpecs of the chosen VMs, but those a [[guest]] table already converts."""
    conn = selection.options["input-conn"]
    return [_spec(plan, selection, vm) for vm in chosen if not _named(plan, conn, vm.name)]


def choose(vms: list[FoundVm], selection: SourceSelection, here: str) -> list[FoundVm]:
    """The VMs a selection takes, in inventory order; ConfigError when it takes none or a
    name it lists does not exist."""
    try:
        pattern = re.compile(selection.regex) if selection.regex is not None else None
    except re.error as exc:
        raise ConfigError(
            f"{here}: regex {selection.regex!r} is not a regular expression: {exc}"
        ) from None
    scope = [vm for vm in vms if not vm.template]
    if selection.folder is not None:
        folder = _folder(selection.folder)
        scope = [vm for vm in scope if vm.folder == folder or vm.folder.startswith(folder + "/")]
    known = {vm.name for vm in scope}
    missing = [n for n in selection.names if n not in known]
    if missing:
        inside = f" in folder {selection.folder!r}" if selection.folder is not None else ""
        raise ConfigError(f"{here}: no VM named {', '.join(missing)}{inside}")
    only_folder = not (selection.names or selection.glob or selection.regex)
    chosen = [
        vm
        for vm in scope
        if only_folder
        or vm.name in selection.names
        or (selection.glob is not None and fnmatch.fnmatchcase(vm.name, selection.glob))
        or (pattern is not None and pattern.search(vm.name) is not None)
    ]
    chosen = [
        vm for vm in chosen if not any(fnmatch.fnmatchcase(vm.name, x) for x in selection.exclude)
    ]
    if not chosen:
        raise ConfigError(f"{here}: chooses no VM ({_criteria(selection)})")
    return chosen


def _criteria(selection: SourceSelection) -> str:
    parts = [
        f"{key} {value!r}"
        for key, value in (
            ("folder", selection.folder),
            ("glob", selection.glob),
            ("regex", selection.regex),
        )
        if value is not None
    ]
    if selection.names:
        parts.append(f"names {', '.join(selection.names)}")
    if selection.exclude:
        parts.append(f"exclude {', '.join(selection.exclude)}")
    return "; ".join(parts)


def _folder(text: str) -> str:
    """A folder as the selection compares it: prod/web (no slashes around it)."""
    return "/".join(p for p in text.split("/") if p)


def _named(plan: Plan, conn: str, name: str) -> bool:
    """A [[guest]] table already converts this VM from this connection."""
    return any(g.option("input-conn") == conn and g.args[:1] == (name,) for g in plan.guests)


def _spec(plan: Plan, selection: SourceSelection, vm: FoundVm) -> GuestSpec:
    options: dict[str, Any] = {**plan.defaults, **selection.options}
    options.setdefault("input", "libvirt")
    if (
        plan.storage
        and "output-storage" not in selection.options
        and vm.datastore is not None
        and vm.datastore in plan.storage
    ):
        options["output-storage"] = plan.storage[vm.datastore]
    args = (vm.name,)
    return GuestSpec(
        name=guest_name(options, args),
        options=options,
        args=args,
        source_host=vm.host or source_host(options, args),
        target_storage=target_storage(options),
    )


def _thumbprint(selection: SourceSelection) -> str | None:
    values = selection.options.get("input-options") or []
    for text in values if isinstance(values, list) else [values]:
        key, _, value = str(text).partition("=")
        if key == THUMBPRINT_OPTION:
            return value
    return None


@contextlib.contextmanager
def _session(uri: VsphereUri, password: str, thumbprint: str | None) -> Iterator[Any]:
    si = connect(uri, password, thumbprint)
    try:
        yield si
    finally:
        from pyVim.connect import Disconnect

        with contextlib.suppress(Exception):
            Disconnect(si)


def inventory(si: Any, uri: VsphereUri) -> list[FoundVm]:
    """The VMs the connection can read: every VM of an ESXi host, the named host's for vpx://."""
    from pyVmomi import vim

    content = si.RetrieveContent()
    if uri.scheme == "vpx":
        vms = list(vpx_host(content, uri).vm)
    else:
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        vms = list(view.view)
        view.Destroy()
    folders: dict[str, str] = {}
    return [_found(vm, folders) for vm in vms]


def _found(vm: Any, folders: dict[str, str]) -> FoundVm:
    config = vm.config
    datastore = None
    if config is not None:
        for device in config.hardware.device:
            name = getattr(getattr(device, "backing", None), "fileName", None)
            if type(device).__name__.endswith("VirtualDisk") and name:
                datastore = datastore_of(str(name))
                break
    host = vm.runtime.host
    return FoundVm(
        name=str(vm.name),
        folder=_folder_path(vm.parent, folders),
        host=str(host.name) if host is not None else None,
        datastore=datastore,
        template=bool(config is not None and config.template),
    )


def _folder_path(folder: Any, cache: dict[str, str]) -> str:
    """The path of a VM's folder under its datacenter's VM folder (cached per folder)."""
    if folder is None:  # a vApp's VM has no folder
        return ""
    key = str(folder._moId)
    if key not in cache:
        names: list[str] = []
        entity = folder
        while entity is not None and not hasattr(entity.parent, "hostFolder"):
            names.append(str(entity.name))
            entity = entity.parent
        cache[key] = "/".join(reversed(names))  # the datacenter's vmFolder itself is left out
    return cache[key]


def datastore_of(path: str) -> str | None:
    """The datastore a vSphere/VMX file path names: `[datastore1] dir/x.vmdk` or
    `/vmfs/volumes/datastore1/dir/x.vmdk`; None for any other path."""
    match = re.match(r"^\[([^\]]+)\]", path.strip())
    if match:
        return match.group(1)
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[:2] == ["vmfs", "volumes"]:
        return parts[2]
    return None
