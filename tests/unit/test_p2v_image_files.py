"""The boot image's own files (p2v/image_files.py): the GRUB menu's kernel command line, and
the shell scripts parse."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vmshift.p2v.image_files import POWER, UDHCPC, grub_cfg, init_script, power_script
from vmshift.p2v.settings import cmdline_words


def test_the_menu_passes_the_words_whole() -> None:
    words = cmdline_words('p2v.server=conv p2v.name="web 01" p2v.password=it\'s')
    cfg = grub_cfg(words).splitlines()
    plain = "    linux /boot/vmlinuz 'p2v.server=conv' 'p2v.name=web 01' 'p2v.password=it'\\''s'"
    serial = plain.replace("vmlinuz ", "vmlinuz console=tty0 console=ttyS0,115200 ")
    assert [line for line in cfg if line.startswith("    linux ")] == [plain, serial]
    assert cfg.count("    initrd /boot/initrd.img") == 2
    assert "set default=0" in cfg


def test_no_words_no_trailing_blank() -> None:
    assert "    linux /boot/vmlinuz" in grub_cfg([]).splitlines()


@pytest.mark.parametrize(
    ("name", "text"),
    [("init", init_script()), ("udhcpc", UDHCPC), ("poweroff", power_script("poweroff"))],
)
def test_the_scripts_parse(tmp_path: Path, name: str, text: str) -> None:
    assert "__UDHCPC__" not in text and "__LOG__" not in text  # placeholders filled in
    script = tmp_path / name
    script.write_text(text)
    proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_power_wrapper_runs_busybox_s() -> None:
    assert power_script("reboot").splitlines()[-1] == 'exec busybox reboot "$@"'
    assert "{name}" in POWER
