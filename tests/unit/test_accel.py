from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import vmshift
from vmshift.guest import accel

CPU_NO_VIRT = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 sse sse2 hypervisor\n"
CPU_VMX = "processor\t: 0\nflags\t\t: fpu vme vmx sse sse2\n"


def test_cpu_flags() -> None:
    assert accel.cpu_has_virtualisation(CPU_VMX)
    assert accel.cpu_has_virtualisation(CPU_VMX.replace("vmx", "svm"))
    assert not accel.cpu_has_virtualisation(CPU_NO_VIRT)
    # "vmx" must be a whole flag, not part of another name.
    assert not accel.cpu_has_virtualisation("flags\t: avx512_vmxfoo\n")


@pytest.fixture
def unforced() -> Iterator[None]:
    """No accelerator forced before or after the test."""
    accel.force(None)
    yield
    accel.force(None)


def test_a_forced_accelerator_is_not_probed(
    unforced: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel, "_probe_qemu_kvm", lambda: pytest.fail("probed"))
    for value, name in (("tcg", "tcg"), (" KVM ", "kvm")):
        accel.force(value)
        assert accel.detect_accelerator() == accel.Accelerator(name, "set by VMSHIFT_ACCEL")
    # The library does not read the variable itself: the CLI hands its value over.
    monkeypatch.setenv("VMSHIFT_ACCEL", "tcg")
    accel.force(None)
    assert accel._detect().reason != "set by VMSHIFT_ACCEL"


def test_an_unknown_accelerator_is_refused(unforced: None) -> None:
    with pytest.raises(ValueError, match=r"^VMSHIFT_ACCEL=hvf: expected one of kvm, tcg$"):
        accel.force("hvf")


def test_the_cli_refuses_an_unknown_accelerator_in_one_line() -> None:
    proc = vmshift(["inspect", "/nonexistent.img"], env={**os.environ, "VMSHIFT_ACCEL": "hvf"})
    assert proc.returncode == 2
    assert proc.stderr == "vmshift: error: VMSHIFT_ACCEL=hvf: expected one of kvm, tcg\n"


def test_this_machine_is_judged_consistently(
    unforced: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without vmx/svm the answer is TCG whatever /dev/kvm says, and no probe is attempted."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    probes: list[bool] = []
    monkeypatch.setattr(accel, "_probe_qemu_kvm", lambda: probes.append(True))
    result = accel._detect()
    if not accel.cpu_has_virtualisation(cpuinfo) or not Path("/dev/kvm").exists():
        assert result.name == "tcg"
        assert probes == []
    else:
        assert probes == [True]


def test_failed_probe_means_tcg(unforced: None, monkeypatch: pytest.MonkeyPatch) -> None:
    real_read = Path.read_text

    def fake_read(self: Path, *args: object, **kwargs: object) -> str:
        return CPU_VMX if str(self) == "/proc/cpuinfo" else real_read(self)

    monkeypatch.setattr(Path, "read_text", fake_read)
    monkeypatch.setattr(Path, "exists", lambda self: True)
    monkeypatch.setattr("vmshift.guest.accel.os.access", lambda *a: True)
    monkeypatch.setattr(
        accel, "_probe_qemu_kvm", lambda: "qemu with KVM failed: failed to set MSR 0x10a"
    )
    result = accel._detect()
    assert result.name == "tcg"
    assert "MSR" in result.reason


def test_real_probe_rejects_kvm_on_a_machine_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if accel.cpu_has_virtualisation(cpuinfo):
        pytest.skip("this machine may really have KVM")
    # Run qemu's probe anyway: on a CPU without vmx/svm it must fail (abort, error or hang).
    assert accel._probe_qemu_kvm() is not None
