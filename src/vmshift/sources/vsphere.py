"""-i libvirt -ic esx://... or vpx://... GUEST: a VM on an ESXi host or in vCenter.

The description comes from the vSphere API (pyvmomi): the same SourceVM the VMX source makes.
The disks are read over the datastore's HTTPS file service (`/folder/PATH-flat.vmdk?dcPath=&
dsName=`) by nbdkit's curl plugin, which serves each one on a unix socket in the work directory
as an NBD export: inspection and conversion read only the blocks they touch, through the
pipeline's copy-on-write overlay, and the copy skips what the converted overlay knows is free.
The session cookie reaches nbdkit in a 0600 file, never on a command line.

Refused in one line: a powered-on VM, a VM with snapshots (its disks are delta files with no
flat data behind them), a disk with no flat file (vSAN, VVols).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import logging
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from vmshift.errors import DiskImageError, EnvironmentProblem, SourceError, UsageError
from vmshift.model.devnames import scsi_disk_name
from vmshift.model.vm import DiskEndpoint, SourceDisk, SourceVM
from vmshift.sources import vsphere_meta as meta
from vmshift.sources.base import SourceOptions
from vmshift.sources.vsphere_uri import VsphereUri, parse_vsphere_uri

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # an unreachable host fails in seconds, not minutes
NBDKIT_START = 30.0
THUMBPRINT_OPTION = "vddk-thumbprint"
RETRIES = 6  # nbdkit's retry filter: 1 + 2 + ... + 32 s of waiting at the most


class VsphereSource:
    def __init__(self, opts: SourceOptions) -> None:
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
        self._nbdkits: list[subprocess.Popen[bytes]] = []

    # -- connecting ----------------------------------------------------------------------

    def _connect(self) -> Any:
        from pyVim.connect import SmartConnect
        from pyVmomi import vim

        uri = self._uri
        where = f"{uri.scheme}://{uri.server}"
        try:
            with socket.create_connection((uri.host, uri.port), timeout=CONNECT_TIMEOUT):
                pass
        except OSError as exc:
            raise SourceError(f"{where}: cannot connect: {exc.strerror or exc}") from None
        context = self._tls_context(where)
        try:
            return SmartConnect(
                host=uri.host,
                port=uri.port,
                user=uri.user,
                pwd=self._password,
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

    def _tls_context(self, where: str) -> ssl.SSLContext:
        if self._thumbprint is None and not self._uri.no_verify:
            return ssl.create_default_context()
        if self._thumbprint is not None:
            wanted = self._thumbprint.replace(":", "").lower()
            digest = hashlib.sha1 if len(wanted) == 40 else hashlib.sha256
            actual = _thumbprint(self._uri, digest)
            if actual.replace(":", "").lower() != wanted:
                raise SourceError(
                    f"{where}: the server's certificate fingerprint is {actual}, "
                    f"not {self._thumbprint} (-io {THUMBPRINT_OPTION})"
                )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

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
        uri = self._uri
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

    def open(self, workdir: Path) -> SourceVM:
        from pyVmomi import vmodl

        self._si = self._connect()
        where = f"{self._uri.scheme}://{self._uri.server}/{self._name}"
        try:
            return self._read(workdir, where)
        except (OSError, http.client.HTTPException, vmodl.MethodFault) as exc:
            message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
            raise SourceError(f"{where}: the vSphere API failed: {message}") from exc

    def _read(self, workdir: Path, where: str) -> SourceVM:
        content = self._si.RetrieveContent()
        vm = self._find(content)
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
        endpoints = [
            self._expose(disk, datacenter, workdir, index)
            for index, disk in enumerate(meta.disks(devices))
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
        cookie = workdir / "vsphere-cookie"
        if not cookie.exists():
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self._si._stub.cookie.split(";", 1)[0])
        sock = workdir / f"vsphere-{index}.sock"
        # The retry filter reopens the HTTPS connection and repeats a failed read, waiting
        # 1, 2, 4 ... 32 s: a reset connection or a 5xx costs a retry, not the copy.
        argv = [
            "nbdkit", "--exit-with-parent", "--foreground", "--readonly", "-U", str(sock),
            "--filter=retry", "curl", f"url={url}", f"cookie=+{cookie}", "timeout=60",
            f"sslverify={'false' if uri.no_verify or self._thumbprint else 'true'}",
            f"retries={RETRIES}", "retry-delay=1", "retry-exponential=yes",
        ]  # fmt: skip
        log.info("serving %s: nbdkit curl %s", label, url)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise EnvironmentProblem("nbdkit is not installed", hint="install nbdkit") from None
        self._nbdkits.append(proc)
        _wait_for_socket(proc, sock, label)
        size = _export_size(sock, f"{label}: {disk.flat_path}")
        if size < disk.capacity:
            raise DiskImageError(
                f"{label}: {disk.flat_path} holds {size} bytes, the disk {disk.capacity}",
                hint="a vSAN or VVol disk has no flat file to read over HTTPS",
            )
        endpoint = DiskEndpoint(f"nbd+unix:///?socket={sock}", "raw", disk.capacity)
        return SourceDisk(
            endpoint=endpoint,
            controller=disk.controller,
            bus=disk.bus,
            unit=disk.unit,
            controller_model=disk.controller_model,
            name=scsi_disk_name(index),
        )

    def close(self) -> None:
        for proc in self._nbdkits:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
        self._nbdkits.clear()
        if self._si is not None:
            from pyVim.connect import Disconnect

            with contextlib.suppress(Exception):
                Disconnect(self._si)
            self._si = None


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


def _wait_for_socket(proc: subprocess.Popen[bytes], sock: Path, label: str) -> None:
    deadline = time.monotonic() + NBDKIT_START
    while not sock.exists():
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise SourceError(f"{label}: nbdkit could not serve the disk: {err or proc.returncode}")
        if time.monotonic() > deadline:
            raise SourceError(f"{label}: nbdkit did not start within {NBDKIT_START:.0f} s")
        time.sleep(0.05)


def _export_size(sock: Path, label: str) -> int:
    import nbd

    handle = nbd.NBD()
    try:
        handle.connect_unix(str(sock))
        return int(handle.get_size())
    except nbd.Error as exc:
        raise SourceError(
            f"{label}: cannot be read over HTTPS ({exc.string})",
            hint="a vSAN or VVol disk has no flat file to read; such disks are not supported yet",
        ) from None
    finally:
        with contextlib.suppress(nbd.Error):
            handle.shutdown()
