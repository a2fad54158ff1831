"""An oVirt/RHV export storage domain: found, checked and (for HOST:/PATH) mounted for -o rhv.

    -os /mnt/export          a mounted export domain: the directory holding <SD_UUID>/,
                             or <SD_UUID>/ itself
    -os nfs.example:/export  mounted on a private directory for the run, unmounted after

A run killed with SIGKILL cannot unmount: its mount point (`vmshift-export-XXXXXXXX` in the
temporary directory) has an owner stamp beside it (`...XXXXXXXX.owner`; inside, the mount would
hide it), and the next run that mounts an export domain unmounts and removes those of dead
runs, saying so. Never with rmtree: that would walk into the mounted export.

RHV imports what it finds under <SD_UUID>/master/vms and <SD_UUID>/images, as vdsm:kvm
(36:36): files it cannot read as that user fail the import late and obscurely, so ownership is
settled here, before any slow work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import TargetError
from vmshift.formats.vdsm import DomainMetadata, parse_domain_metadata
from vmshift.process import CommandFailed, Owner, run
from vmshift.targets.writable import probe_file

log = logging.getLogger(__name__)

VDSM_UID = 36
VDSM_GID = 36
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NFS_SPEC = re.compile(r"^(?P<host>[^/:\s][^:\s]*|\[[0-9a-fA-F:]+\]):(?P<path>/\S*)$")
MOUNT_TIMEOUT = 120.0
MOUNT_PREFIX = "vmshift-export-"
OWNER_SUFFIX = ".owner"


def _stamp(mountpoint: Path) -> Path:
    return mountpoint.with_name(mountpoint.name + OWNER_SUFFIX)


def sweep_dead_mounts(parent: Path | None) -> list[str]:
    """Unmount and remove the export-domain mount points under parent (default: the temporary
    directory) of runs that died; one line for the user per mount removed."""
    base = parent if parent is not None else Path(tempfile.gettempdir())
    said = []
    for stamp in sorted(base.glob(f"{MOUNT_PREFIX}*{OWNER_SUFFIX}")):
        mnt = stamp.with_name(stamp.name.removesuffix(OWNER_SUFFIX))
        try:
            if stamp.stat().st_uid != os.getuid():
                continue
            owner = Owner.parse(stamp.read_text())
        except (OSError, ValueError):
            continue
        if owner.state() != "dead":
            continue
        if os.path.ismount(mnt):
            try:
                run(["umount", str(mnt)], timeout=MOUNT_TIMEOUT)
            except CommandFailed as exc:
                log.warning("could not unmount %s (run %d died): %s", mnt, owner.pid, exc)
                continue
        try:
            mnt.rmdir()  # empty once unmounted; never removed with what it holds
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove %s (run %d died): %s", mnt, owner.pid, exc.strerror)
            continue
        stamp.unlink(missing_ok=True)
        said.append(f"unmounted and removed {mnt}: left by run {owner.pid} that was killed")
    return said


def is_nfs_spec(storage: str) -> bool:
    return NFS_SPEC.match(storage) is not None


@dataclass(frozen=True)
class Ownership:
    """Who the files written to the domain belong to, and what to tell the user about it."""

    chown_to: tuple[int, int] | None  # (uid, gid) to give every file to; None: leave as made
    warning: str | None = None


class ExportDomain:
    """The export domain named by -os; close() unmounts what open() mounted."""

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self._mountpoint: Path | None = None
        self.root = Path()  # <SD_UUID>/
        self.metadata = DomainMetadata("", "", 0, "")
        self.ownership = Ownership(None)
        self.swept: list[str] = []  # killed runs' mounts that open() removed, one line each

    @property
    def sd_uuid(self) -> str:
        return self.metadata.sd_uuid

    def open(self) -> None:
        """Mount (for HOST:/PATH), find <SD_UUID>/, check it is a writable export domain."""
        try:
            top = self._mount() if is_nfs_spec(self.storage) else Path(self.storage)
            self.root = self._find_domain(top)
            self.metadata = self._read_metadata()
            for sub in ("images", "master/vms"):
                self._check_dir(self.root / sub)
            self.ownership = self._settle_ownership()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._mountpoint is None:
            return
        mnt, self._mountpoint = self._mountpoint, None
        try:
            run(["umount", str(mnt)], timeout=MOUNT_TIMEOUT)
        except CommandFailed as exc:
            # The conversion's result does not depend on this; leave the mount for the user.
            log.warning("-os %s: could not unmount %s: %s", self.storage, mnt, exc)
            return
        with contextlib.suppress(OSError):
            mnt.rmdir()
            _stamp(mnt).unlink()

    def _mount(self) -> Path:
        if os.geteuid() != 0:
            raise TargetError(
                f"-os {self.storage}: mounting an NFS export domain needs root",
                hint="mount it yourself and give the mount point to -os",
            )
        self.swept += sweep_dead_mounts(None)
        mnt = Path(tempfile.mkdtemp(prefix=MOUNT_PREFIX))
        _stamp(mnt).write_text(Owner.this_process().stamp())
        try:
            # retry=0: a wrong host or path fails now instead of after two minutes of retries.
            run(
                ["mount", "-t", "nfs", "-o", "retry=0", self.storage, str(mnt)],
                timeout=MOUNT_TIMEOUT,
            )
        except CommandFailed as exc:
            mnt.rmdir()
            _stamp(mnt).unlink(missing_ok=True)
            reason = exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else str(exc)
            raise TargetError(
                f"-os {self.storage}: cannot mount the NFS export domain: {reason}",
                hint="check the host name, the export path and that this host may mount it",
            ) from exc
        self._mountpoint = mnt
        log.info("-os %s: mounted on %s", self.storage, mnt)
        return mnt

    def _find_domain(self, top: Path) -> Path:
        what = f"-os {self.storage}"
        if not top.is_dir():
            raise TargetError(f"{what}: no such directory")
        if (top / "dom_md" / "metadata").is_file():
            return top
        try:
            children = sorted(p for p in top.iterdir() if UUID_RE.match(p.name) and p.is_dir())
        except OSError as exc:
            raise TargetError(f"{what}: cannot list: {exc.strerror}") from exc
        domains = [p for p in children if (p / "dom_md" / "metadata").is_file()]
        if not domains:
            raise TargetError(
                f"{what}: not an export storage domain (no <SD_UUID>/dom_md/metadata in it)",
                hint="give the export domain's mount point, as RHV created it",
            )
        if len(domains) > 1:
            names = ", ".join(p.name for p in domains)
            raise TargetError(
                f"{what}: holds several storage domains ({names})",
                hint=f"name one: -os {top / domains[0].name}",
            )
        return domains[0]

    def _read_metadata(self) -> DomainMetadata:
        path = self.root / "dom_md" / "metadata"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise TargetError(f"{path}: cannot read: {exc.strerror}") from exc
        meta = parse_domain_metadata(text, str(path))
        if not meta.is_export:
            raise TargetError(
                f"{path}: CLASS={meta.domain_class}: this is not an export storage domain "
                "(CLASS=Backup)",
                hint="-o rhv writes to an export domain; RHV then imports from it",
            )
        if meta.sd_uuid != self.root.name:
            raise TargetError(
                f"{path}: SDUUID={meta.sd_uuid} does not match its directory {self.root.name}"
            )
        return meta

    def _check_dir(self, path: Path) -> None:
        if not path.is_dir():
            raise TargetError(f"{path}: missing: not an export storage domain as RHV lays it out")
        if not os.access(path, os.W_OK | os.X_OK):
            raise TargetError(
                f"{path}: not writable by this user",
                hint="run as root, or as a user the export allows to write (vdsm, uid 36)",
            )

    def _settle_ownership(self) -> Ownership:
        """Make a probe file the way the disks will be made, and see who owns it."""
        images = self.root / "images"
        with probe_file(images, str(images)) as probe:
            st = probe.stat()
            if (st.st_uid, st.st_gid) == (VDSM_UID, VDSM_GID):
                return Ownership(None)  # e.g. NFS all_squash to 36:36: nothing to do
            if os.geteuid() == 0:
                try:
                    os.chown(probe, VDSM_UID, VDSM_GID)
                except OSError as exc:
                    raise TargetError(
                        f"{self.root}: cannot give files to vdsm:kvm (36:36), as RHV needs: "
                        f"{exc.strerror}",
                        hint="an NFS export with root_squash does this: export it with "
                        "all_squash,anonuid=36,anongid=36 (or no_root_squash)",
                    ) from exc
                return Ownership((VDSM_UID, VDSM_GID))
            return Ownership(
                None,
                warning=f"{self.root}: the files are owned by uid {st.st_uid} gid {st.st_gid}, "
                "not vdsm:kvm (36:36) as RHV needs to import them; run as root, or "
                "chown -R 36:36 the new files before importing",
            )

    def shown(self, path: Path) -> Path:
        """path as the user names it: HOST:/PATH/... for a domain this run mounted."""
        if self._mountpoint is None:
            return path
        return Path(f"{self.storage.rstrip('/')}/{path.relative_to(self._mountpoint)}")

    def chown(self, path: Path) -> None:
        """Give path (not following symlinks) to vdsm:kvm when ownership says so."""
        if self.ownership.chown_to is None:
            return
        uid, gid = self.ownership.chown_to
        try:
            os.lchown(path, uid, gid)
        except OSError as exc:
            raise TargetError(
                f"{path}: cannot give it to vdsm:kvm (36:36): {exc.strerror}"
            ) from exc
