"""A vSphere disk with no flat file (vSAN, VVols), read through the VM's export lease.

The datastore's /folder service can only serve files, and such a disk has none holding its
data, so the disk is downloaded the way `govc export.ovf` and the vSphere client's "Export OVF
Template" do: VirtualMachine.ExportVm() makes an HttpNfcLease; once it is `ready`, its
info.deviceUrl names one URL per disk (`*` standing for the server we talk to), served to our
API session (its cookie). The answer is spooled into the run's work directory after a
free-space check, while HttpNfcLeaseProgress() keeps the lease alive (vSphere drops a lease
that is silent for its timeout, 5 minutes by default); HttpNfcLeaseComplete() ends it, and on
any failure or interrupt HttpNfcLeaseAbort() does, with the partial file removed.

ESXi serves a streamOptimized VMDK, but the format is not assumed: qemu-img says what arrived,
and only a self-contained VMDK (sparse or streamOptimized) or a raw image of the disk's
capacity is used; a descriptor naming other files or an image with a backing file is refused,
since qemu would open files on this host that the server named.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from vmshift.blockio.imageinfo import probe_image
from vmshift.blockio.progress import CopyProgress, EventSink, StageEvent
from vmshift.errors import DiskImageError, EnvironmentProblem, SourceError
from vmshift.model.vm import DiskEndpoint
from vmshift.sources import vsphere_meta as meta

log = logging.getLogger(__name__)

KEEPALIVE = 30.0  # seconds between HttpNfcLeaseProgress calls (the brief's bound: a minute)
READY_TIMEOUT = 600.0  # a lease initializing for longer than this is given up
POLL = 0.2
HTTP_TIMEOUT = 60.0  # a download that stalls this long fails
CHUNK = 1 << 20
# A disk's VMDK holds at most its capacity plus metadata: grain tables take 1/8192 of it, and
# incompressible grains of a streamOptimized VMDK grow by a marker and sector padding (< 1/100).
_SLACK_DIVISOR = 64
_SLACK = 64 << 20
_DEVICE_KEY = re.compile(r"/([A-Za-z]+)(\d+):(\d+)$")  # /vm-42/VirtualLsiLogicController0:1


@dataclass(frozen=True)
class Server:
    """How the download reaches the server: the API session's host, TLS choice and cookie."""

    host: str
    port: int
    context: ssl.SSLContext
    cookie: str  # vmware_soap_session="..."


@dataclass(frozen=True)
class Export:
    """One disk to download through the lease, and how to name it."""

    disk: meta.VsphereDisk
    dest: Path  # the file in the work directory that receives it
    label: str  # [datastore] path, for messages
    progress_name: str  # CopyProgress.disk: "sda-export"
    progress_label: str  # CopyProgress.label: "guest-sda-export"
    unreadable: str  # why the flat file could not be read; leads a lease failure's message


def export_disk(vm: Any, job: Export, server: Server, events: EventSink) -> DiskEndpoint:
    """Download job.disk through a new export lease of vm; return the local image's endpoint."""
    from pyVmomi import vmodl

    events(StageEvent("source", f"downloading {job.label} through the VM's export lease"))
    started = time.monotonic()
    try:
        lease = vm.ExportVm()
    except vmodl.MethodFault as exc:
        raise SourceError(f"{job.unreadable}; no export lease either: {_fault(exc)}") from None
    try:
        _wait_ready(lease, job)
        url, announced = _device_url(lease, job)
        _check_space(job, announced or _bound(job.disk.capacity))
        fetched = _download(lease, url, server, job, events=events, announced=announced)
        lease.HttpNfcLeaseComplete()
    except BaseException:
        with contextlib.suppress(Exception):
            lease.HttpNfcLeaseAbort()
        job.dest.unlink(missing_ok=True)
        raise
    try:
        fmt, size = _usable(job)
    except BaseException:
        job.dest.unlink(missing_ok=True)
        raise
    log.info(
        "%s: %d bytes downloaded through the export lease in %.1f s: a %s image of %d bytes",
        job.label, fetched, time.monotonic() - started, fmt, size,
    )  # fmt: skip
    return DiskEndpoint(str(job.dest), fmt, size)


def _fault(exc: Any) -> str:
    return str(getattr(exc, "msg", None) or type(exc).__name__)


def _wait_ready(lease: Any, job: Export) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while (state := str(lease.state)) == "initializing":
        if time.monotonic() > deadline:
            raise SourceError(
                f"{job.unreadable}; the export lease was not ready within {READY_TIMEOUT:.0f} s"
            )
        time.sleep(POLL)
    if state == "error":
        raise SourceError(f"{job.unreadable}; the export lease failed: {_fault(lease.error)}")
    if state != "ready":
        raise SourceError(f"{job.unreadable}; the export lease is {state}, not ready")


def _device_url(lease: Any, job: Export) -> tuple[str, int]:
    """The URL serving job's disk, and its size when the lease states it (else 0)."""
    disk = job.disk
    keys = []
    for device in lease.info.deviceUrl or []:
        keys.append(str(device.key))
        match = _DEVICE_KEY.search(str(device.key))
        if not device.disk or match is None or match[1] not in meta.CONTROLLERS:
            continue
        where = (meta.CONTROLLERS[match[1]][0], int(match[2]), int(match[3]))
        if where == (disk.controller, disk.bus, disk.unit):
            return str(device.url), int(device.fileSize or 0)
    raise SourceError(
        f"{job.unreadable}; the export lease has no URL for {disk.controller.value} "
        f"{disk.bus}:{disk.unit} (it has: {', '.join(keys) or 'none'})"
    )


def _bound(capacity: int) -> int:
    """The most a VMDK of a disk of this capacity can hold."""
    return capacity + capacity // _SLACK_DIVISOR + _SLACK


def _check_space(job: Export, need: int) -> None:
    st = os.statvfs(job.dest.parent)
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise EnvironmentProblem(
            f"{job.dest.parent}: not enough free space to download {job.label} through the "
            f"export lease: need {-(-need >> 20)} MiB, {free >> 20} MiB free",
            hint="point --workdir (or TMPDIR) at a filesystem with more room",
        )


def _download(
    lease: Any, url: str, server: Server, job: Export, *, events: EventSink, announced: int
) -> int:
    parts = urlsplit(url)
    host, port = parts.hostname or "*", parts.port or 443
    if host == "*":  # the server we talk to, on the port we talk to it (as govc does)
        host, port = server.host, server.port
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPSConnection(host, port, context=server.context, timeout=HTTP_TIMEOUT)
    done = 0
    try:
        try:
            conn.request("GET", path, headers={"Cookie": server.cookie})
            answer = conn.getresponse()
            if answer.status != 200:
                raise SourceError(
                    f"{job.label}: the export lease's URL {url} answered {answer.status} "
                    f"{answer.reason}"
                )
            length = answer.getheader("Content-Length")
            total = int(length) if length and length.isdigit() else 0
            if total:
                _check_space(job, total)
            done = _spool(answer, lease, job, total or announced, events)
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(
                f"{job.label}: the download through the export lease failed after {done} "
                f"bytes: {str(exc) or type(exc).__name__}"
            ) from None
    finally:
        conn.close()
    return done


def _spool(answer: Any, lease: Any, job: Export, expected: int, events: EventSink) -> int:
    """Write the answer to job.dest; expected is its size if the server said it, else 0."""
    from pyVmomi import vmodl

    cap = _bound(job.disk.capacity)
    estimate = expected or job.disk.capacity  # for the percentages
    done = 0
    kept = time.monotonic()
    with job.dest.open("xb") as out:
        while chunk := answer.read(CHUNK):
            done += len(chunk)
            if done > cap:
                raise SourceError(
                    f"{job.label}: the export lease sent more than {cap} bytes, more than a disk "
                    f"of {job.disk.capacity} bytes can take"
                )
            try:
                out.write(chunk)
            except OSError as exc:
                raise EnvironmentProblem(
                    f"{job.dest}: cannot write the download of {job.label}: {exc.strerror}",
                    hint="point --workdir (or TMPDIR) at a filesystem with more room",
                ) from None
            if time.monotonic() - kept >= KEEPALIVE:
                try:
                    lease.HttpNfcLeaseProgress(min(99, done * 100 // estimate))
                except vmodl.MethodFault as exc:
                    raise SourceError(
                        f"{job.label}: the export lease ended during the download: {_fault(exc)}"
                    ) from None
                kept = time.monotonic()
            events(CopyProgress(job.progress_name, job.progress_label, done, max(estimate, done)))
    events(CopyProgress(job.progress_name, job.progress_label, done, done, finished=True))
    return done


def _usable(job: Export) -> tuple[str, int]:
    """The downloaded image's format and virtual size, refused unless self-contained."""
    with job.dest.open("rb") as f:
        head = f.read(512)
    # Before qemu opens it: a VMDK descriptor, or a sparse header whose capacity is 0 (its
    # embedded descriptor counts), makes qemu open the extent files it names on this host.
    if head.startswith(b"# Disk DescriptorFile") or (
        head[:4] == b"KDMV" and (len(head) < 20 or struct.unpack_from("<Q", head, 12)[0] == 0)
    ):
        raise DiskImageError(f"{job.label}: the export lease served a VMDK that names other files")
    info = probe_image(job.dest)
    capacity = job.disk.capacity
    if info.backing_file:
        raise DiskImageError(
            f"{job.label}: the export lease served an image with a backing file "
            f"({info.backing_file}); vmshift reads only self-contained images"
        )
    if info.format == "vmdk" and head[:4] != b"KDMV":
        raise DiskImageError(f"{job.label}: the export lease served a VMDK that names other files")
    if info.format not in ("vmdk", "raw"):
        raise DiskImageError(
            f"{job.label}: the export lease served a {info.display_format} image; vmshift "
            "reads a VMDK or raw data from it"
        )
    if info.virtual_size < capacity or (info.format == "raw" and info.virtual_size != capacity):
        raise DiskImageError(
            f"{job.label}: the export lease served an image of {info.virtual_size} bytes for a "
            f"disk of {capacity}: the download is incomplete",
        )
    return info.format, info.virtual_size
