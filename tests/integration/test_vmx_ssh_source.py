"""-i vmx -it ssh against a real OpenSSH server on 127.0.0.1 (tests/sshd_fixture.py), with the
VMs laid out as on ESXi (.../vmfs/volumes/datastore1/GUEST/) in a temporary directory: what
--print-source reads compared with -i vmx on the same files, the disks' bytes through nbdkit's
ssh plugin, every refusal in one line, one conversion of the phony RHEL guest, and the
datastore's files unchanged afterwards."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import print_source_row as row
from tests.conftest import sha256, vmshift
from tests.guests.manifest import BuiltGuest
from tests.integration.test_vmx_source import edit_text, make_vmdk, snapshot
from tests.sshd_fixture import Sshd, client_env, private_sshd
from tests.vmx_samples import two_nic_vmx
from tests.vsphere.simulator import flat_file, make_flat_vmdk
from vmshift.model.vm import SourceVM
from vmshift.sources.base import SourceOptions
from vmshift.sources.vmx import VmxSource

pytestmark = pytest.mark.skipif(
    shutil.which("nbdkit") is None or shutil.which("qemu-img") is None,
    reason="needs nbdkit and qemu-img",
)

MIB = 1 << 20
PASSWORD = "ssh s3cret-7f2c"
QUICK = 15.0  # every refusal comes within seconds
# The second disk of the conversion's guest: no filesystem, so conversion never touches it and
# the output must hold exactly its bytes.
DATA = {0: (0x5A, MIB), 5 * MIB: (0xC3, 3 * MIB)}
WEB01_EXTRA = [
    'firmware = "efi"',
    'uefi.secureBoot.enabled = "TRUE"',
    'vm.genid = "-8536691797830587195"',
    'vm.genidX = "-1723453263670062919"',
    'sata0.present = "TRUE"',
    'sata0:0.present = "TRUE"',
    'sata0:0.fileName = "web01_1.vmdk"',
    'ide1:0.present = "TRUE"',
    'ide1:0.deviceType = "cdrom-image"',
    'ide1:0.fileName = "/vmfs/volumes/datastore1/iso/rhel9.iso"',
]


def esxi_disk(path: Path, size: int, data: dict[int, tuple[int, int]]) -> Path:
    """A disk as ESXi keeps it: a `vmfs` descriptor whose one VMFS extent is NAME-flat.vmdk."""
    make_vmdk(path, size, "monolithicFlat", data)
    edit_text(path, 'createType="monolithicFlat"', 'createType="vmfs"')
    edit_text(path, f'FLAT "{flat_file(path).name}" 0', f'VMFS "{flat_file(path).name}"')
    return path


def shift_extent(path: Path, sectors: int) -> None:
    """Move a monolithicFlat disk's data `sectors` into its flat file, as a FLAT extent with an
    offset says: nbdkit must then serve just that range."""
    flat = flat_file(path)
    data = flat.read_bytes()
    flat.write_bytes(b"\xee" * sectors * 512 + data)
    edit_text(path, f'FLAT "{flat.name}" 0', f'FLAT "{flat.name}" {sectors}')


def write_vm(datastore: Path, name: str, disk: str, extra: Sequence[str] = ()) -> Path:
    vm = datastore / name
    vm.mkdir(parents=True, exist_ok=True)
    vmx = vm / f"{name}.vmx"
    vmx.write_text(two_nic_vmx(name, disk) + "".join(f"{line}\n" for line in extra))
    return vmx


def hashes(root: Path) -> dict[Path, str]:
    return {p: sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def run_vmshift(argv: list[str | Path], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """vmshift without the user's ssh-agent, on a terminal wide enough that the --print-source
    tables are never cut."""
    return vmshift(argv, timeout=timeout, env={**client_env(), "COLUMNS": "400"})


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with private_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def datastore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/vmfs/volumes/datastore1 with small VMs: web01 (an ESXi vmfs disk and a flat disk whose
    extent starts 1 MiB into its file), a snapshot, a sparse disk and a two-extent disk."""
    root = tmp_path_factory.mktemp("esxi") / "vmfs" / "volumes" / "datastore1"
    web01 = write_vm(root, "web01", "web01.vmdk", WEB01_EXTRA).parent
    esxi_disk(web01 / "web01.vmdk", 16 * MIB, {0: (0xAB, MIB), 9 * MIB: (0x17, 64 * 1024)})
    make_vmdk(web01 / "web01_1.vmdk", 8 * MIB, "monolithicFlat", {MIB: (0xCD, MIB)})
    shift_extent(web01 / "web01_1.vmdk", 2048)
    snap = write_vm(root, "snap", "snap-000001.vmdk").parent
    esxi_disk(snap / "snap.vmdk", 4 * MIB, {})
    snapshot(snap / "snap.vmdk", snap / "snap-000001.vmdk")
    sparse = write_vm(root, "sparse", "sparse.vmdk").parent
    make_vmdk(sparse / "sparse.vmdk", 4 * MIB, "monolithicSparse")
    split = write_vm(root, "split", "split.vmdk").parent
    extents = []
    for n in (1, 2):
        with (split / f"split-f00{n}.vmdk").open("wb") as f:
            f.truncate(2 * MIB)
        extents.append(f'RW 4096 FLAT "split-f00{n}.vmdk" 0')
    (split / "split.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="twoGbMaxExtentFlat"\n\n' + "\n".join(extents) + "\n"
    )
    return root


@pytest.fixture(scope="module")
def unchanged(datastore: Path) -> Iterator[None]:
    """The datastore's files, byte for byte, after every test of the module that uses it."""
    before = hashes(datastore)
    yield
    assert hashes(datastore) == before, "a source file changed"


def comparable(out: str) -> list[list[str]]:
    """--print-source's lines as words, without what differs by design between the local and
    the SSH source: the source row, the disks' format and file, the tables' rules."""
    lines = []
    for line in out.splitlines():
        words = line.split()
        if not words or words[0] == "source" or set(line.strip()) <= {"─"}:
            continue
        if re.fullmatch(r"sd[a-z]+", words[0]):
            words = [w for w in words[:-1] if w not in ("raw", "vmdk")]
        lines.append(words)
    return lines


def test_print_source_over_ssh_reads_what_the_local_vmx_says(
    sshd: Sshd, datastore: Path, unchanged: None
) -> None:
    vmx = datastore / "web01" / "web01.vmx"
    local = run_vmshift(["convert", "-i", "vmx", vmx, "--print-source"])
    assert local.returncode == 0, local.stderr
    remote = run_vmshift(
        ["convert", "-i", "vmx", "-it", "ssh", sshd.uri(vmx), *sshd.options(), "--print-source"]
    )
    assert remote.returncode == 0, remote.stderr
    assert remote.stderr == local.stderr == ""
    assert comparable(remote.stdout) == comparable(local.stdout)
    assert row(remote.stdout, "source") == sshd.uri(vmx)
    assert row(remote.stdout, "firmware") == "uefi"
    assert row(remote.stdout, "VM genid") == "09512cc5-940a-8987-b950-f54f631015e8"
    disks = [line.split() for line in remote.stdout.splitlines() if line.split()[:1] == ["sda"]]
    assert disks and disks[0][4] == "raw" and disks[0][-1].startswith("nbd+unix:///?socket=")
    assert "/vmfs/volumes/datastore1/iso/rhel9.iso" in remote.stdout


def _nbdkit_cmdlines(sock_dir: Path) -> list[str]:
    """The command lines of the nbdkit processes serving sockets in sock_dir."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(a.decode(errors="replace") for a in argv)
        if argv[0].endswith(b"nbdkit") and str(sock_dir) in text:
            found.append(text)
    return found


def test_the_disks_bytes_come_through_nbdkit_ssh(
    sshd: Sshd, datastore: Path, unchanged: None, tmp_path: Path
) -> None:
    """Each disk is an nbd+unix export in the work directory holding exactly the data qemu reads
    from the local VMDK (the second disk's extent starts 1 MiB into its file); the password
    reaches nbdkit in a 0600 file, never on its command line."""
    vm = datastore / "web01"
    options = {"ssh-identity": str(sshd.identity), "ssh-known-hosts": str(sshd.known_hosts)}
    opts = SourceOptions(
        args=(sshd.uri(vm / "web01.vmx"),), transport="ssh", options=options, password=PASSWORD
    )
    work = tmp_path / "work"
    work.mkdir()
    source = VmxSource(opts)
    try:
        guest: SourceVM = source.open(work)
        assert [d.endpoint.virtual_size for d in guest.disks] == [16 * MIB, 8 * MIB]
        for disk, local in zip(guest.disks, ("web01.vmdk", "web01_1.vmdk"), strict=True):
            assert disk.endpoint.uri.startswith(f"nbd+unix:///?socket={work}/")
            same = subprocess.run(
                ["qemu-img", "compare", "-f", "raw", "-F", "vmdk", disk.endpoint.uri, vm / local],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert same.returncode == 0, same.stdout + same.stderr
        password_file = work / "ssh-password"
        assert password_file.read_text() == PASSWORD
        assert password_file.stat().st_mode & 0o777 == 0o600
        cmdlines = _nbdkit_cmdlines(work)
        assert len(cmdlines) == 2
        assert all(f"password=+{password_file}" in c for c in cmdlines)
        assert not any(PASSWORD in c for c in cmdlines)
    finally:
        source.close()
    assert _nbdkit_cmdlines(work) == []


def _refusal(argv: list[str | Path]) -> tuple[str, float]:
    started = time.monotonic()
    proc = run_vmshift(["convert", "-i", "vmx", "-it", "ssh", *argv])
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    return proc.stderr.strip(), elapsed


@pytest.mark.parametrize("known", ["unknown", "changed"])
def test_a_host_key_not_on_record_is_refused(
    sshd: Sshd, datastore: Path, unchanged: None, tmp_path: Path, known: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    if known == "unknown":
        known_hosts.write_text("")
    else:  # another key recorded for [127.0.0.1]:PORT
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "other"], check=True
        )
        key = " ".join((tmp_path / "other.pub").read_text().split()[:2])
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {key}\n")
    out = tmp_path / "out"
    out.mkdir()
    uri = sshd.uri(datastore / "web01" / "web01.vmx")
    message, _ = _refusal(
        [uri, "-io", f"ssh-identity={sshd.identity}", "-io", f"ssh-known-hosts={known_hosts}",
         "-o", "local", "-os", out, "-q"]
    )  # fmt: skip
    assert message.startswith(f"vmshift: error: {uri}: the host key of [127.0.0.1]:{sshd.port} ")
    if known == "unknown":
        assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known_hosts}" in message
    else:
        assert "CHANGED" in message and f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in message
    assert list(out.iterdir()) == []


def test_refusals_name_the_uri_in_one_line(
    sshd: Sshd, datastore: Path, unchanged: None, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger], check=True)
    trust = ["-io", f"ssh-known-hosts={sshd.known_hosts}"]
    web01 = sshd.uri(datastore / "web01" / "web01.vmx")
    cases: list[tuple[list[str | Path], str, list[str]]] = [
        ([web01, *trust, "-io", f"ssh-identity={stranger}"], web01, ["authentication as root"]),
        ([web01, *trust], web01, ["authentication as root", "-ip FILE"]),
        ([web01.replace(f":{sshd.port}/", ":1/"), *sshd.options()], "", ["cannot connect"]),
        ([web01[:-4] + "-gone.vmx", *sshd.options()], "-gone.vmx", ["no such file"]),
        (
            [sshd.uri(datastore / "snap" / "snap.vmx"), *sshd.options()],
            "snap.vmx",
            ["snap-000001.vmdk is a snapshot (delta) disk", "consolidate"],
        ),
        (
            [sshd.uri(datastore / "sparse" / "sparse.vmx"), *sshd.options()],
            "sparse.vmx",
            ["sparse.vmdk is a monolithicSparse VMDK", "-i vmx without -it ssh"],
        ),
        (
            [sshd.uri(datastore / "split" / "split.vmx"), *sshd.options()],
            "split.vmx",
            ["split.vmdk is a twoGbMaxExtentFlat VMDK", "only flat disks"],
        ),
    ]
    for argv, names, words in cases:
        message, elapsed = _refusal([*argv, "--print-source"])
        uri = str(argv[0])
        assert message.startswith(f"vmshift: error: {uri}"), message
        assert names in message and all(w in message for w in words), message
        assert elapsed < QUICK, (message, elapsed)


# ---- one conversion --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(
    sshd: Sshd, linux_guests: dict[str, BuiltGuest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.CompletedProcess[str], Path, Path]]:
    """The phony RHEL guest, its disk flat on the datastore plus a data disk, converted over
    SSH to -o local (with -ip, to show where the password does not go); the files are hashed
    before and after."""
    base = tmp_path_factory.mktemp("ssh-convert")
    vm = base / "vmfs" / "volumes" / "datastore1" / "rhel-ssh"
    vmx = write_vm(
        vm.parent,
        "rhel-ssh",
        "rhel-ssh.vmdk",
        ['scsi0:1.present = "TRUE"', 'scsi0:1.fileName = "rhel-ssh_1.vmdk"'],
    )
    make_flat_vmdk(linux_guests["rhel"].disks[0], "qcow2", vm / "rhel-ssh.vmdk")
    esxi_disk(vm / "rhel-ssh_1.vmdk", 16 * MIB, DATA)
    password = base / "password"
    password.write_text(PASSWORD + "\n")
    out = base / "out"
    out.mkdir()
    before = hashes(vm)
    proc = run_vmshift(
        ["convert", "-i", "vmx", "-it", "ssh", sshd.uri(vmx), *sshd.options(), "-ip", password,
         "-o", "local", "-os", out, "-of", "raw", "--report", base / "report.json", "-v"],
        timeout=1800,
    )  # fmt: skip
    yield proc, out, vm
    assert hashes(vm) == before, "a source file changed"


@pytest.mark.slow
def test_a_guest_converted_over_ssh(
    converted: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    proc, out, vm = converted
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict = proc.stdout.strip().splitlines()[-1]
    assert verdict.startswith("vmshift: rhel-ssh configured with virtio drivers"), verdict
    xml = (out / "rhel-ssh.xml").read_text().replace('"', "'")
    assert "<mac address='00:50:56:ab:cd:ef'/>" in xml
    assert "<target dev='vda' bus='virtio'/>" in xml and "<target dev='vdb' bus='virtio'/>" in xml
    # The data disk's bytes crossed over SSH unchanged.
    same = subprocess.run(
        ["qemu-img", "compare", "-f", "vmdk", "-F", "raw", vm / "rhel-ssh_1.vmdk",
         out / "rhel-ssh-sdb"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert same.returncode == 0, same.stdout + same.stderr
    # Both disks were read through nbdkit's ssh plugin (logged at -v), never copied first.
    assert len(re.findall(r"nbdkit .*--readonly .* ssh host=127\.0\.0\.1 ", proc.stderr)) == 2
    # The report counts what crossed the network: all of the data disk (its 16 MiB hold no
    # filesystem whose free space could be skipped), at most twice (read while converting).
    fetched = json.loads((out.parent / "report.json").read_text())["source"]["fetched_bytes"]
    [data_disk] = [
        size for label, size in fetched.items() if label.endswith("rhel-ssh_1-flat.vmdk")
    ]
    assert 16 * MIB <= data_disk <= 32 * MIB, fetched


@pytest.mark.slow
def test_the_password_goes_nowhere_but_its_file(
    converted: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    proc, out, _ = converted
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out.parent / "report.json").read_text()
    assert json.loads(report)["source"]["file"].startswith("ssh://root@127.0.0.1:")
    assert "password=+" in proc.stderr
    for text in (proc.stdout, proc.stderr, report):
        assert PASSWORD not in text
