"""-i libvirt -ip FILE: the password for a libvirt daemon that asks for a login, as virt-v2v
reads it (the file's first line). The daemon is a private libvirtd whose socket requires SASL
(SCRAM-SHA-256 against its own sasldb); the runs go through the real command line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import vmshift
from tests.integration.libvirt_fixture import PrivateLibvirtd, private_libvirtd

USER, PASSWORD = "v2v", "pa ss:word"
GUEST = "guarded"


@pytest.fixture(scope="module")
def daemon() -> Iterator[PrivateLibvirtd]:
    with private_libvirtd((USER, PASSWORD)) as server:
        disk = server.root / f"{GUEST}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
        conn = server.connect()
        conn.defineXML(
            f"""<domain type='qemu'><name>{GUEST}</name><memory unit='MiB'>128</memory>
            <os><type arch='x86_64'>hvm</type></os><devices>
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
            <source file='{disk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"""
        )
        conn.close()
        yield server


def uri(server: PrivateLibvirtd) -> str:
    return server.uri.replace("://", f"://{USER}@", 1)


def print_source(server: PrivateLibvirtd, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    argv = ["convert", "-i", "libvirt", "-ic", uri(server), GUEST, "--print-source", *extra]
    return vmshift(argv, timeout=120)


def test_ip_logs_in(daemon: PrivateLibvirtd, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(f"{PASSWORD}\nnot part of it\n")
    proc = print_source(daemon, "-ip", pw)
    assert proc.returncode == 0, proc.stderr
    assert GUEST in proc.stdout and "128.0 MiB" in proc.stdout and "vda" in proc.stdout


@pytest.mark.parametrize("password", [None, "wrong"])
def test_without_the_right_password_one_line(
    daemon: PrivateLibvirtd, tmp_path: Path, password: str | None
) -> None:
    extra: list[str | Path] = []
    if password is not None:
        pw = tmp_path / "pw"
        pw.write_text(password)
        extra = ["-ip", pw]
    proc = print_source(daemon, *extra)
    assert proc.returncode == 1, proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vmshift: error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"vmshift: error: {uri(daemon)}: cannot connect to libvirt: ")
    assert "Traceback" not in proc.stderr
    if password is not None:
        assert "the password in -ip" in proc.stderr
