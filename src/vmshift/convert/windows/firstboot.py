"""Work Windows must do itself at its first boot on KVM, run once by a small service.

Layout in the guest (virt-v2v uses the same scheme, so admins know where to look):

    C:\\Program Files\\vmshift\\firstboot\\
        rhsrvany.exe | pvvxsvc.exe   the service wrapper: runs Parameters\\CommandLine
        firstboot.bat                the dispatcher
        scripts\\0001-NAME.bat ...   queued work, run in name order
        done\\                       scripts already run (moved here before they start)
        firstboot.log                what every script printed, with exit codes

The wrapper is registered in the SYSTEM hive under its own name (it reads its command line from
Services\\<its name>\\Parameters) as an automatic LocalSystem service. The dispatcher disables
the service when the queue is empty and reboots once, so the drivers and network settings the
scripts installed take effect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

from vmshift.convert.windows import netconfig, uninstall
from vmshift.errors import ConversionError
from vmshift.guest.registry import ExpandSz, Hive

if TYPE_CHECKING:
    from vmshift.convert.windows.context import WindowsGuest
    from vmshift.guest.registry import HiveEditor

TOOL_NAMES = ("rhsrvany.exe", "pvvxsvc.exe")
TOOL_ENV = "VMSHIFT_FIRSTBOOT_TOOL"
# Where virt-v2v and the virtio-win package put the wrappers.
TOOL_DIRS = ("/usr/share/virt-tools", "/usr/share/virtio-win")
GUEST_DIR = ("Program Files", "vmshift", "firstboot")
DISPLAY_NAME = "vmshift first boot"
POWERSHELL = "powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File"
CURRENT_VERSION = r"Microsoft\Windows NT\CurrentVersion"

SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_AUTO_START = 2
SERVICE_ERROR_NORMAL = 1


def find_tool(option: str | None, virtio_win: str | None, environ: Mapping[str, str]) -> Path:
    """The service wrapper to install: given by option or environment, else a known place."""
    given = option or environ.get(TOOL_ENV)
    if given:
        path = Path(given)
        if not path.is_file():
            source = "--firstboot-tool" if option else TOOL_ENV
            raise ConversionError(f"{source} {given}: no such file")
        _check_pe(path)
        return path
    dirs = [environ[d] for d in ("VIRT_TOOLS_DATA_DIR",) if environ.get(d)]
    dirs += list(TOOL_DIRS)
    if virtio_win and Path(virtio_win).is_dir():
        dirs.append(virtio_win)
    for directory in dirs:
        for name in TOOL_NAMES:
            candidate = Path(directory) / name
            if candidate.is_file():
                _check_pe(candidate)
                return candidate
    raise ConversionError(
        f"the guest needs first-boot work, but no {' or '.join(TOOL_NAMES)} was found "
        f"(looked in {', '.join(dirs)})",
        hint=(
            f"install one (Fedora's mingw32-srvany or the virtio-win package ship it), "
            f"or point --firstboot-tool FILE or {TOOL_ENV} at it"
        ),
    )


def _check_pe(path: Path) -> None:
    with path.open("rb") as f:
        if f.read(2) != b"MZ":
            raise ConversionError(f"{path}: not a Windows executable (no MZ header)")


def dispatcher(win_dir: str, service: str) -> str:
    """The batch file the service runs: each queued script once, logged, then a reboot."""
    lines = [
        "@echo off",
        "rem vmshift first boot: run each script in scripts\\ once, in name order",
        "rem (.ps1 with PowerShell, anything else with cmd).",
        "rem A script moves to done\\ before it starts: one that hangs or reboots the",
        "rem machine is not started again at the next boot.",
        "setlocal EnableExtensions EnableDelayedExpansion",
        f'set "here={win_dir}"',
        'set "log=%here%\\firstboot.log"',
        'if not exist "%here%\\done" mkdir "%here%\\done"',
        'call :run >> "%log%" 2>&1',
        "exit /b 0",
        "",
        ":run",
        'set "ran=0"',
        'pushd "%here%"',
        "echo === %date% %time% vmshift first boot",
        'for /f "delims=" %%s in (\'dir /b /on /a-d "%here%\\scripts\\*" 2^>nul\') do (',
        '  set "ran=1"',
        # !var! is expanded per iteration; %var% once for the whole loop.
        "  echo --- !date! !time! %%s",
        '  move /y "%here%\\scripts\\%%s" "%here%\\done\\%%s" >nul',
        '  if /i "%%~xs"==".ps1" (',
        f'    {POWERSHELL} "%here%\\done\\%%s"',
        "  ) else (",
        # A child cmd: a script that says "exit" instead of "exit /b" ends only itself.
        '    cmd /c ""%here%\\done\\%%s""',
        "  )",
        "  echo --- %%s exit code !errorlevel!",
        ")",
        "popd",
        "echo === %date% %time% queue empty: disabling the first-boot service",
        f"sc config {service} start= disabled",
        "if !ran!==1 (",
        "  echo === rebooting so that the new drivers and settings take effect",
        '  shutdown /r /t 10 /c "vmshift: first boot configuration done, restarting"',
        ")",
        "exit /b 0",
    ]
    return "\r\n".join(lines) + "\r\n"


def script_file_name(index: int, name: str) -> str:
    """NNNN-name.bat, or .ps1 for a queued name that says it is a PowerShell script."""
    stem, dot, ext = name.rpartition(".")
    suffix = ".ps1" if dot and ext.lower() == "ps1" else ".bat"
    if dot and ext.lower() in ("ps1", "bat", "cmd"):
        name = stem
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:48] or "script"
    return f"{index:04d}-{slug}{suffix}"


def to_batch(text: str) -> bytes:
    """Batch files are read in the OEM code page, which the host cannot know: keep to ASCII."""
    crlf = re.sub(r"\r?\n", "\r\n", text)
    return crlf.encode("ascii", errors="replace")


def install(guest: WindowsGuest) -> None:
    with guest.read_hive("SOFTWARE") as software:
        drive = _system_drive(software)
        uninstallers = _uninstall_scripts(guest, software)
    with guest.read_hive("SYSTEM") as system:
        network = _network_scripts(guest, system)
    # The driver step's scripts first: the NIC settings need the virtio-net driver installed.
    scripts = [*guest.firstboot_scripts, *uninstallers, *network]
    if not scripts:
        return
    tool = find_tool(guest.opts.firstboot_tool, guest.opts.virtio_win, guest.opts.environ)
    service = tool.stem.lower()
    win_dir = str(PureWindowsPath(drive + "\\", *GUEST_DIR))
    _write_files(guest, tool, win_dir, service, scripts)
    with guest.edit_hive("SYSTEM") as editor:
        _register(guest, editor, tool, win_dir, service)


def _write_files(
    guest: WindowsGuest, tool: Path, win_dir: str, service: str, scripts: list[tuple[str, str]]
) -> None:
    g = guest.g
    guest_dir = guest.mkdir("/".join(("", *GUEST_DIR)))
    scripts_dir = guest.mkdir(f"{guest_dir}/scripts")
    try:
        g.upload(str(tool), f"{guest_dir}/{tool.name}")
        g.write(f"{guest_dir}/firstboot.bat", to_batch(dispatcher(win_dir, service)))
        first = _next_index(g.ls(scripts_dir))
        for offset, (name, text) in enumerate(scripts):
            path = f"{scripts_dir}/{script_file_name(first + offset, name)}"
            g.write(path, to_batch(text))
            guest.note("firstboot", f"queued {name}", path)
    except RuntimeError as exc:
        raise ConversionError(f"cannot write the first-boot files in {guest_dir}: {exc}") from exc
    guest.note("firstboot", f"installed the first-boot service wrapper {tool.name}", guest_dir)


def _register(
    guest: WindowsGuest, system: HiveEditor, tool: Path, win_dir: str, service: str
) -> None:
    key = rf"{guest.ccs}\Services\{service}"
    system.ensure_key(key)
    system.set_value(key, "Type", SERVICE_WIN32_OWN_PROCESS)
    system.set_value(key, "Start", SERVICE_AUTO_START)
    system.set_value(key, "ErrorControl", SERVICE_ERROR_NORMAL)
    system.set_value(key, "ImagePath", ExpandSz(f'"{win_dir}\\{tool.name}"'))
    system.set_value(key, "ObjectName", "LocalSystem")
    system.set_value(key, "DisplayName", DISPLAY_NAME)
    system.set_value(key, "Description", "Runs the scripts vmshift queued, once, then reboots")
    params = rf"{key}\Parameters"
    system.set_value(params, "CommandLine", f'cmd.exe /c "{win_dir}\\firstboot.bat"')
    system.set_value(params, "PWD", win_dir)
    guest.note("firstboot", f"registered service {service}", rf"HKLM\SYSTEM\{key}")


def _system_drive(software: Hive) -> str:
    root = software.get_str(CURRENT_VERSION, "SystemRoot") or ""
    return root[:2].upper() if re.match(r"[A-Za-z]:", root) else "C:"


def _next_index(names: list[str]) -> int:
    """One past the highest script number already queued (a guest converted twice)."""
    numbers = [int(n[:4]) for n in names if re.match(r"\d{4}-", n)]
    return max(numbers, default=0) + 1


def _uninstall_scripts(guest: WindowsGuest, software: Hive) -> list[tuple[str, str]]:
    scripts = []
    for u in uninstall.find(software):
        if not u.usable:
            guest.warn(f"{u.name} has no silent uninstaller: uninstall it after first boot")
            continue
        if u.command and not u.command.isascii():
            guest.warn(f"{u.name}: its uninstaller path is not ASCII; uninstall it by hand")
            continue
        scripts.append((uninstall.script_name(u), uninstall.script(u)))
    return scripts


def _network_scripts(guest: WindowsGuest, system: Hive) -> list[tuple[str, str]]:
    configs = netconfig.static_configs(system, guest.ccs)
    found = netconfig.adapters(system, guest.ccs) if configs else []
    restores, warnings = netconfig.plan(configs, found, guest.vm.nics)
    for warning in warnings:
        guest.warn(warning)
    return [
        (f"restore-ip-{(r.mac or 'virtio').replace(':', '')}", netconfig.restore_script(r))
        for r in restores
    ]
