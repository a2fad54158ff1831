"""The vSphere API session behind a long read of a VM's disks.

nbdkit fetches the disks with the API session's cookie. vSphere ends a session that has been
idle for its timeout (30 minutes by default, less where an administrator set it), and a copy
of a big disk makes no API call at all: the reads would start failing half-way through. So
while the disks are being read, a thread makes a cheap API call (CurrentTime) every few
minutes, which keeps the session active; if the session was ended anyway (an administrator,
a vCenter restart), it logs in again with the same credentials and writes the new cookie to
the file nbdkit's cookie-script reads, which nbdkit re-reads once a minute.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmshift.sources.nbdkit import write_secret

log = logging.getLogger(__name__)

KEEPALIVE = 300.0  # seconds between API calls: well inside any idle timeout seen in practice
COOKIE_RENEW = 60  # nbdkit re-reads the cookie file at most this often (cookie-script-renew)


def write_cookie(path: Path, si: Any) -> None:
    """The session's cookie (`vmware_soap_session=...`), replaced atomically, mode 0600."""
    write_secret(path, str(si._stub.cookie).split(";", 1)[0])


class SessionKeeper:
    """Keeps one API session usable from start() to stop(); `si` is always the live one."""

    def __init__(
        self, si: Any, login: Callable[[], Any], cookie: Path, interval: float = KEEPALIVE
    ) -> None:
        self.si = si
        self.renewals = 0
        self._login = login
        self._cookie = cookie
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="vsphere-keepalive", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        from pyVmomi import vim

        while not self._stop.wait(self._interval):
            try:
                self.si.CurrentTime()
            except vim.fault.NotAuthenticated:
                self._renew()
            except Exception as exc:  # the host is away: nbdkit's retries deal with that
                log.info("vSphere keep-alive call failed: %s", exc)

    def _renew(self) -> None:
        try:
            si = self._login()
        except Exception as exc:
            log.warning("the vSphere session ended and logging in again failed: %s", exc)
            return
        write_cookie(self._cookie, si)
        self.si = si
        self.renewals += 1
        log.info("the vSphere session had ended: logged in again, nbdkit has the new cookie")
