"""-i libvirt -ic esx://... or vpx://... GUEST: a VM on an ESXi host or in vCenter.

The description comes from the vSphere API (pyvmomi): the same SourceVM the VMX source makes.
The disks are read over the datastore's HTTPS file service (`/folder/PATH-flat.vmdk?dcPath=&
dsName=`) by nbdkit with https_plugin.py (several connections per disk), which serves each one
on a unix socket in the work directory as an NBD export: inspection and conversion read only
the blocks they touch, through the pipeline's copy-on-write overlay, and the copy skips what the
converted overlay knows is free. The session cookie reaches nbdkit in a 0600 file, never on a
command line, and is kept alive and renewed for as long as the disks are read.

A disk with no flat file (vSAN, VVols) is downloaded through the VM's export lease instead
(vsphere_export.py). Refused in one line: a powered-on VM, a VM with snapshots (its disks are
delta files with no flat data behind them).

A --resume opens the source again on the kept work directory: nbdkit serves each disk on the
same socket (vsphere-N.sock), and identity() (the VM's UUIDs, its configuration's change stamp,
its disk files' sizes and modification times from the datastore browser) must be as it was.
A VM with a disk read through an export lease is not resumable (open() would download it again).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import logging
import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from vmshift.blockio.progress import EventSink, discard
from vmshift.errors import DiskImageError, SourceError, UsageError
from vmshift.model.devnames import scsi_disk_name
from vmshift.model.vm import DiskEndpoint, SourceDisk, SourceVM
from vmshift.sources import vsphere_export
from vmshift.sources import vsphere_meta as meta
from vmshift.sources.base import SourceOptions
from vmshift.sources.nbdkit import NbdkitServers, export_size
from vmshift.sources.vsphere_session import KEEPALIVE, SessionKeeper, write_cookie
from vmshift.sources.vsphere_uri import VsphereUri, parse_vsphere_uri

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # an unreachable host fails in seconds, not minutes
THUMBPRINT_OPTION = "vddk-thumbprint"
# https_plugin tries a failed read again after 1, 2, 4, 8, 16 and 30 s: a minute in all.
RETRIES = 6
RETRY_DELAY = 1
CONNECTIONS = 4  # HTTPS connections per disk: an ESXi host throttles each one
HTTPS_PLUGIN = Path(__file__).with_name("https_plugin.py")


class VsphereSource:
    def __init__(self, opts: SourceOptions, keepalive: float = KEEPALIVE) -> None:
        if len(opts.args) != 1:
            raise UsageError("-ic esx://... and vpx://... take exactly one argument: the VM's name")
        if opts.conn is None:
            raise UsageError("-ic: an esx:// or vpx:// URI is needed")
        self._name = opts.args[0]
        self._uri = parse_vsphere_uri(opts.conn)
        if opts.password is None:
            raise UsageError(f"-ic {opts.conn}: a password is needed: give -ip FILE")
        self._password = opts.password
        self._thumbprint = opts.options.get(THUMBPRINT_OPTION)
        self._si: Any = None
        self._keepalive = keepalive
        self._keeper: SessionKeeper | None = None
        self._servers = NbdkitServers()
        self._downloaded: dict[str, int] = {}  # disks read through an export lease
        self._events: EventSink = discard  # the run's, for the export lease's downloads
        self._vm: Any = None  # the VM being read, for its export lease
        self._disks: list[meta.VsphereDisk] = []

    # -- connecting ----------------------------------------------------------------------

    def _connect(self) -> Any:
        return connect(self._uri, self._password, self._thumbprint)

    def _plugin_verify(self) -> str:
        """How https_plugin checks the server: the CAs, nothing, or the pinned fingerprint."""
        if self._thumbprint is not None:
            wanted = self._thumbprint.replace(":", "").lower()
            return f"{'sha1' if len(wanted) == 40 else 'sha256'}:{wanted}"
        return "none" if self._uri.no_verify else "ca"

    def _tls_context(self, where: str) -> ssl.SSLContext:
        return tls_context(self._uri, self._thumbprint, where)

    # -- the VM --------------------------------------------------------------------------

    def _find(self, content: Any) -> Any:
        from pyVmomi import vim

        uri = self._uri
        candidates: list[Any]
        if uri.scheme == "esx":
            view = content.viewManager.CreateContainerView(
                content.rootFolder, [vim.VirtualMachine], True
            )
            candidates = list(view.view)
            view.Destroy()
        else:
            candidates = list(self._vpx_host(content).vm)
        for vm in candidates:
            if vm.name == self._name:
                return vm
        close = difflib.get_close_matches(self._name, [vm.name for vm in candidates], n=3)
        hint = f"did you mean: {', '.join(close)}?" if close else None
        raise SourceError(f"{self._name}: no such VM on {uri.scheme}://{uri.server}", hint=hint)

    def _vpx_host(self, content: Any) -> Any:
        return vpx_host(content, self._uri)

    def open(self, workdir: Path) -> SourceVM:
        from pyVmomi import vmodl

        self._si = self._connect()
        where = f"{self._uri.scheme}://{self._uri.server}/{self._name}"
        cookie = workdir / "vsphere-cookie"
        write_cookie(cookie, self._si)
        try:
            vm = self._read(workdir, where)
        except (OSError, http.client.HTTPException, vmodl.MethodFault) as exc:
            message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
            raise SourceError(f"{where}: the vSphere API failed: {message}") from exc
        # The disks are read from now until close(): keep the session (and the cookie) alive.
        self._keeper = SessionKeeper(self._si, self._connect, cookie, self._keepalive)
        self._keeper.start()
        return vm

    def _read(self, workdir: Path, where: str) -> SourceVM:
        content = self._si.RetrieveContent()
        vm = self._vm = self._find(content)
        state = str(vm.runtime.powerState)
        if state != "poweredOff":
            raise SourceError(f"{where}: the VM is {state}", hint="shut the guest down first")
        # rootSnapshot is what vSphere fills in; govmomi's simulator keeps only the layout.
        if vm.rootSnapshot or (vm.layoutEx is not None and vm.layoutEx.snapshot):
            names = _snapshot_names(vm.snapshot.rootSnapshotList)
            raise SourceError(
                f"{where}: the VM has snapshots ({', '.join(names)}); its disks are deltas",
                hint="delete or consolidate the snapshots in vSphere first",
            )
        config = vm.config
        devices = list(config.hardware.device)
        portgroups = {
            net.key: net.name for net in vm.network if hasattr(net, "key")
        }  # distributed port groups
        warnings: list[str] = []
        datacenter = _datacenter_of(vm)
        self._disks = meta.disks(devices)
        endpoints = [
            self._expose(disk, datacenter, workdir, index) for index, disk in enumerate(self._disks)
        ]
        if not endpoints:
            raise SourceError(f"{where}: the VM has no disks")
        return SourceVM(
            name=vm.name,
            memory=config.hardware.memoryMB << 20,
            vcpus=config.hardware.numCPU,
            topology=meta.topology(config),
            firmware=meta.firmware(config),
            disks=tuple(endpoints),
            removables=meta.removables(devices),
            nics=meta.nics(devices, portgroups),
            origin="vmware",
            os_hint=config.guestId or None,
            source_file=where,
            genid=meta.genid(config, where, warnings),
            secure_boot=meta.secure_boot(config),
            warnings=tuple(warnings),
            extra={"vmware.uuid": config.uuid or "", "vmware.hw_version": config.version or ""},
        )

    # -- the disks -----------------------------------------------------------------------

    def _expose(
        self, disk: meta.VsphereDisk, datacenter: str, workdir: Path, index: int
    ) -> SourceDisk:
        uri = self._uri
        query = urlencode({"dcPath": datacenter, "dsName": disk.datastore})
        url = f"https://{uri.host}:{uri.port}/folder/{quote(disk.flat_path)}?{query}"
        label = f"[{disk.datastore}] {disk.path}"
        cookie = workdir / "vsphere-cookie"  # written by open(), renewed by the SessionKeeper
        sock = workdir / f"vsphere-{index}.sock"
        # https_plugin.py reads the file over up to CONNECTIONS HTTPS connections at once,
        # replacing a connection that failed, and tries a failed read again (a reset, a 5xx,
        # a timeout) with growing waits: a bad moment costs a retry, not the copy.
        plugin = [
            "python", str(HTTPS_PLUGIN), f"url={url}", f"cookie-file={cookie}",
            f"connections={CONNECTIONS}", "timeout=60", f"verify={self._plugin_verify()}",
            f"retries={RETRIES}", f"retry-delay={RETRY_DELAY}",
        ]  # fmt: skip
        nbd_uri = self._servers.serve(sock, plugin, label, count_reads=True)
        try:
            size = export_size(sock, f"{label}: {disk.flat_path}")
            if size < disk.capacity:
                raise DiskImageError(
                    f"{label}: {disk.flat_path} holds {size} bytes, the disk {disk.capacity}",
                    hint="a vSAN or VVol disk has no flat file to read over HTTPS",
                )
            endpoint = DiskEndpoint(nbd_uri, "raw", disk.capacity)
        except SourceError as unreadable:
            # No flat file (vSAN, VVols): the VM's export lease serves the disk instead.
            self._servers.retire(sock)
            endpoint = self._exported(disk, workdir, index, label, str(unreadable))
        return SourceDisk(
            endpoint=endpoint,
            controller=disk.controller,
            bus=disk.bus,
            unit=disk.unit,
            controller_model=disk.controller_model,
            name=scsi_disk_name(index),
        )

    def _exported(
        self, disk: meta.VsphereDisk, workdir: Path, index: int, label: str, unreadable: str
    ) -> DiskEndpoint:
        """The disk downloaded into workdir through the VM's export lease (vsphere_export)."""
        uri = self._uri
        name = scsi_disk_name(index)
        job = vsphere_export.Export(
            disk, workdir / f"vsphere-{index}-export.img", label,
            f"{name}-export", f"{self._name}-{name}-export", unreadable,
        )  # fmt: skip
        server = vsphere_export.Server(
            uri.host, uri.port, self._tls_context(f"{uri.scheme}://{uri.server}"),
            self._si._stub.cookie.split(";", 1)[0],
        )  # fmt: skip
        endpoint = vsphere_export.export_disk(self._vm, job, server, self._events)
        self._downloaded[label] = job.dest.stat().st_size
        return endpoint

    def identity(self) -> tuple[str, ...] | None:
        """ReopenableSource.identity(): the VM's UUIDs and configuration stamp, and for each
        disk the size and modification time of its files (descriptor and flat file) as the
        datastore browser reports them; None when a disk came through an export lease."""
        if self._downloaded or self._vm is None:
            return None
        from pyVim.task import WaitForTask
        from pyVmomi import vim, vmodl

        where = f"{self._uri.scheme}://{self._uri.server}/{self._name}"
        config = self._vm.config
        found = [
            f"vm {config.uuid} {config.instanceUuid}",
            f"config {config.changeVersion} {config.modified}",
        ]
        details = vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True, modification=True)
        try:
            stores = {ds.name: ds for ds in self._vm.datastore}
            for disk in self._disks:
                folder, _, name = disk.path.rpartition("/")
                names = [name, disk.flat_path.rpartition("/")[2]]
                spec = vim.host.DatastoreBrowser.SearchSpec(matchPattern=names, details=details)
                task = stores[disk.datastore].browser.SearchDatastore_Task(
                    datastorePath=f"[{disk.datastore}] {folder}", searchSpec=spec
                )
                WaitForTask(task)
                for file in sorted(task.info.result.file, key=lambda f: str(f.path)):
                    found.append(
                        f"[{disk.datastore}] {folder}/{file.path} {file.fileSize} "
                        f"{file.modification}"
                    )
        except (KeyError, OSError, http.client.HTTPException, vmodl.MethodFault) as exc:
            message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
            raise SourceError(f"{where}: cannot list the VM's disk files: {message}") from exc
        return tuple(found)

    def datastores(self) -> tuple[str, ...]:
        """After open(): the datastores the VM's disks are on, in disk order, once each."""
        return tuple(dict.fromkeys(disk.datastore for disk in self._disks))

    def committed(self) -> int | None:
        """After open(): the bytes the VM's files take on its datastores as vSphere counts
        them (summary.storage.committed); None when vSphere does not say."""
        storage = getattr(getattr(self._vm, "summary", None), "storage", None)
        value = getattr(storage, "committed", None)
        return int(value) if value else None

    def report_to(self, sink: EventSink) -> None:
        """Send the progress of what open() downloads (export leases) to the run's sink."""
        self._events = sink

    def fetched(self) -> dict[str, int]:
        """Bytes read from the datastore per disk (complete once closed)."""
        return {**self._servers.fetched(), **self._downloaded}  # exported: the download

    def lost(self) -> SourceError | None:
        """Why the disks stopped being readable, when the reads ended in failure after every
        retry (the host went away mid-run): the error to show instead of what the reader of
        the failed blocks made of them."""
        where = f"{self._uri.scheme}://{self._uri.server}/{self._name}"
        retried = f"each read was tried {RETRIES + 1} times over about a minute"
        return self._servers.lost(where, retried)

    def close(self) -> None:
        self._servers.close()
        if self._keeper is not None:
            self._keeper.stop()
            self._si = self._keeper.si
            self._keeper = None
        if self._si is not None:
            from pyVim.connect import Disconnect

            with contextlib.suppress(Exception):
                Disconnect(self._si)
            self._si = None


def connect(uri: VsphereUri, password: str, thumbprint: str | None = None) -> Any:
    """A logged-in API session (ServiceInstance) to uri; SourceError naming the server when
    it cannot be reached or refuses the login. The caller disconnects it."""
    from pyVim.connect import SmartConnect
    from pyVmomi import vim

    where = f"{uri.scheme}://{uri.server}"
    try:
        with socket.create_connection((uri.host, uri.port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise SourceError(f"{where}: cannot connect: {exc.strerror or exc}") from None
    context = tls_context(uri, thumbprint, where)
    try:
        return SmartConnect(
            host=uri.host,
            port=uri.port,
            user=uri.user,
            pwd=password,
            sslContext=context,
            connectionPoolTimeout=int(CONNECT_TIMEOUT),
        )
    except vim.fault.InvalidLogin:
        raise SourceError(
            f"{where}: login failed for {uri.user}",
            hint="check the user in -ic and the password in -ip",
        ) from None
    except ssl.SSLCertVerificationError as exc:
        actual = _thumbprint(uri, hashlib.sha1)
        raise SourceError(
            f"{where}: the server's certificate is not trusted ({exc.verify_message})",
            hint=f"pin it with -io {THUMBPRINT_OPTION}={actual}, or add ?no_verify=1 to -ic",
        ) from None
    except (OSError, vim.fault.VimFault) as exc:
        raise SourceError(f"{where}: cannot log in: {exc}") from None


def tls_context(uri: VsphereUri, thumbprint: str | None, where: str) -> ssl.SSLContext:
    """The TLS context for uri: the CAs, nothing (?no_verify=1), or a pinned fingerprint."""
    if thumbprint is None and not uri.no_verify:
        return ssl.create_default_context()
    if thumbprint is not None:
        wanted = thumbprint.replace(":", "").lower()
        digest = hashlib.sha1 if len(wanted) == 40 else hashlib.sha256
        actual = _thumbprint(uri, digest)
        if actual.replace(":", "").lower() != wanted:
            raise SourceError(
                f"{where}: the server's certificate fingerprint is {actual}, "
                f"not {thumbprint} (-io {THUMBPRINT_OPTION})"
            )
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def vpx_host(content: Any, uri: VsphereUri) -> Any:
    """The HostSystem a vpx:// URI names (DATACENTER/[CLUSTER/]HOST)."""
    datacenters = {
        dc.name: dc for dc in content.rootFolder.childEntity if hasattr(dc, "hostFolder")
    }
    dc = datacenters.get(uri.datacenter or "")
    if dc is None:
        raise SourceError(
            f"-ic: no datacenter {uri.datacenter!r} on {uri.server} "
            f"(there are: {', '.join(datacenters) or 'none'})"
        )
    for compute in dc.hostFolder.childEntity:
        if uri.cluster is not None and compute.name != uri.cluster:
            continue
        for host in getattr(compute, "host", []):
            if host.name == uri.esx_host:
                return host
    place = "/".join(p for p in (uri.datacenter, uri.cluster, uri.esx_host) if p)
    raise SourceError(f"-ic: no host {place} on {uri.server}")


def _thumbprint(uri: VsphereUri, digest: Any) -> str:
    """The server certificate's fingerprint as vSphere shows it: AA:BB:..."""
    pem = ssl.get_server_certificate((uri.host, uri.port), timeout=CONNECT_TIMEOUT)
    der = ssl.PEM_cert_to_DER_cert(pem)
    hexed = digest(der).hexdigest().upper()
    return ":".join(hexed[i : i + 2] for i in range(0, len(hexed), 2))


def _snapshot_names(tree: list[Any]) -> list[str]:
    names: list[str] = []
    for node in tree:
        names.append(str(node.name))
        names.extend(_snapshot_names(list(node.childSnapshotList)))
    return names


def _datacenter_of(vm: Any) -> str:
    entity = vm.parent
    while entity is not None and not hasattr(entity, "hostFolder"):
        entity = entity.parent
    return str(entity.name) if entity is not None else "ha-datacenter"
