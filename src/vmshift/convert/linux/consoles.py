"""Consoles and X: what a Xen, VMware or VirtualBox guest shows its screen and console on.

Xen guests run their console on xvc0 (old PV kernels) or hvc0: on KVM the console is the serial
port ttyS0, so gettys (inittab, systemd's serial-getty@ links), securetty and the kernel's
console= move there. X configured for the VMware, VirtualBox or Xen framebuffer driver gets the
modesetting driver (or, where the guest's X lacks it, no Driver line so X picks one itself);
settings that pin the old device (BusID, VendorName, BoardName) are commented out with it.

The text transforms are pure and unit-tested in tests/unit/test_linux_devmap.py.
"""

from __future__ import annotations

import re

from vmshift.convert.linux import devices
from vmshift.convert.linux.context import LinuxGuest

STEP = "consoles"

_XEN_TTY = re.compile(r"(?<![\w/])(?:xvc0|hvc0)(?!\w)")
_XEN_CONSOLE_ARG = re.compile(r"(?<![\w.-])console=(?:xvc0|hvc0)(?:,[\w.]*)?(?![\w.])")
_TTYS0_ARG = re.compile(r"(?<![\w.-])console=ttyS0(?![\w])")
_COMMENT = re.compile(r"^\s*#")

INITTAB = "/etc/inittab"
SECURETTY = "/etc/securetty"
GETTY_WANTS = "/etc/systemd/system/getty.target.wants"
X_CONFIGS = ("/etc/X11/xorg.conf", "/etc/X11/XF86Config", "/etc/X11/XF86Config-4")
X_SNIPPETS = ("/etc/X11/xorg.conf.d/*.conf",)
# X drivers that only drive another hypervisor's display device.
FOREIGN_X_DRIVERS = frozenset({"vmware", "vmwgfx", "vboxvideo", "vboxvga"})
MODESETTING = (
    "/usr/lib/xorg/modules/drivers/modesetting_drv.so",
    "/usr/lib64/xorg/modules/drivers/modesetting_drv.so",
    "/usr/lib/x86_64-linux-gnu/xorg/modules/drivers/modesetting_drv.so",
)


def fix(guest: LinuxGuest) -> None:
    """Move Xen consoles to ttyS0 and other hypervisors' X drivers to ones KVM can drive."""
    for path in devices.kernel_cmdline_files(guest):
        devices.edit(guest, path, cmdline_consoles, STEP, "console=hvc0/xvc0 -> console=ttyS0")
    for path in devices.grubenv_files(guest):
        devices.edit_grubenv(
            guest, path, cmdline_consoles, STEP, "console=hvc0/xvc0 -> console=ttyS0 (kernelopts)"
        )
    devices.edit(guest, INITTAB, inittab_consoles, STEP, "getty on xvc0/hvc0 moved to ttyS0")
    devices.edit(guest, SECURETTY, securetty_ttys0, STEP, "root may log in on ttyS0 as on hvc0")
    _systemd_gettys(guest)
    _x_drivers(guest)


# --- pure text transforms ------------------------------------------------------------------


def cmdline_consoles(text: str) -> str:
    """console=hvc0 / console=xvc0 -> console=ttyS0; dropped instead on a line that already
    has a console=ttyS0, so the serial console is not declared twice."""
    pattern = _XEN_CONSOLE_ARG.pattern
    out = []
    for line in text.splitlines(keepends=True):
        if not _XEN_CONSOLE_ARG.search(line):
            out.append(line)
        elif _TTYS0_ARG.search(line):
            out.append(re.sub(rf"[ \t]+{pattern}|{pattern}[ \t]*", "", line))
        else:
            out.append(_XEN_CONSOLE_ARG.sub("console=ttyS0", line))
    return "".join(out)


def inittab_consoles(text: str) -> str:
    """Gettys on xvc0/hvc0 run on ttyS0 instead; where inittab already has a ttyS0 getty they
    are commented out (two gettys on one port fight over it)."""
    active = [line for line in text.splitlines() if not _COMMENT.match(line)]
    has_ttys0 = any(re.search(r"(?<![\w/])ttyS0(?!\w)", line) for line in active)
    out = []
    for line in text.splitlines(keepends=True):
        if _COMMENT.match(line) or not _XEN_TTY.search(line):
            out.append(line)
        else:
            out.append("#" + line if has_ttys0 else _XEN_TTY.sub("ttyS0", line))
    return "".join(out)


def securetty_ttys0(text: str) -> str:
    """Add ttyS0 where root could log in on a Xen console."""
    names = {line.strip() for line in text.splitlines()}
    if names & {"hvc0", "xvc0"} and "ttyS0" not in names:
        return text + ("" if text.endswith("\n") or not text else "\n") + "ttyS0\n"
    return text


_SECTION = re.compile(
    r'^(?P<head>[ \t]*Section[ \t]+"(?P<name>[^"]*)".*?)^(?P<tail>[ \t]*EndSection\b)',
    re.MULTILINE | re.DOTALL | re.IGNORECASE,
)
_DRIVER = re.compile(r'^([ \t]*Driver[ \t]+)"([^"]*)"', re.MULTILINE | re.IGNORECASE)
_PINNING = re.compile(r"^([ \t]*)(BusID|VendorName|BoardName)\b", re.MULTILINE | re.IGNORECASE)


def _foreign_driver(section: str, foreign: frozenset[str]) -> bool:
    m = _DRIVER.search(section)
    return m is not None and m[2].lower() in foreign


def x_devices(text: str, foreign: frozenset[str], driver: str | None) -> str:
    """Each Device section driven by a foreign driver gets `driver` (None: the Driver line is
    commented out and X chooses), and its BusID/VendorName/BoardName lines commented out."""

    def device(m: re.Match[str]) -> str:
        section = m[0]
        if m["name"].lower() != "device" or not _foreign_driver(section, foreign):
            return section
        if driver is None:
            section = _DRIVER.sub(lambda d: f"#{d[0]}", section)
        else:
            section = _DRIVER.sub(lambda d: f'{d[1]}"{driver}"', section)
        return _PINNING.sub(lambda p: f"{p[1]}#{p[2]}", section)

    return _SECTION.sub(device, text)


def only_foreign_devices(text: str, foreign: frozenset[str]) -> bool:
    """True for a snippet whose every section is a Device section forcing a foreign driver:
    such a file exists only to force that driver."""
    sections = list(_SECTION.finditer(text))
    return bool(sections) and all(
        s["name"].lower() == "device" and _foreign_driver(s[0], foreign) for s in sections
    )


# --- guest edits ---------------------------------------------------------------------------


def _systemd_gettys(guest: LinuxGuest) -> None:
    g = guest.g
    for tty in ("hvc0", "xvc0"):
        link = f"{GETTY_WANTS}/serial-getty@{tty}.service"
        try:
            if not g.is_symlink(link):
                continue
            target = str(g.readlink(link))
            new = f"{GETTY_WANTS}/serial-getty@ttyS0.service"
            if not g.exists(new) and not g.is_symlink(new):
                g.ln_s(target, new)
            g.rm(link)
        except RuntimeError as exc:
            guest.warn(f"cannot move the getty on {tty} to ttyS0: {exc}")
            continue
        guest.note(STEP, f"serial getty enabled on ttyS0 instead of {tty}", link)


def _x_drivers(guest: LinuxGuest) -> None:
    foreign = FOREIGN_X_DRIVERS
    if guest.vm.origin == "xen":
        foreign = foreign | {"fbdev"}  # xen-fbfront's framebuffer is gone on KVM
    driver = "modesetting" if devices.existing(guest, MODESETTING) else None
    what = f'Driver "{driver}"' if driver else "Driver line commented out (X picks one)"
    for path in devices.existing(guest, X_CONFIGS):
        devices.edit(
            guest, path, lambda t: x_devices(t, foreign, driver), STEP, f"X display: {what}"
        )
    for path in devices.existing(guest, (), X_SNIPPETS):
        text = devices.read(guest, path) or ""
        if only_foreign_devices(text, foreign):
            # X reads only *.conf: the backup is inert.
            guest.set_aside(path, STEP, "X snippet forcing a foreign driver")
        else:
            devices.edit(
                guest, path, lambda t: x_devices(t, foreign, driver), STEP, f"X display: {what}"
            )
