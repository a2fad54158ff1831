"""virt-v2v's command-line forms that `vmshift convert` accepts: -n/-b, one default network and
one default bridge, -io/-oo/-ip/-op with each mode refusing what it does not use, --root ask."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from vmshift.blockio.progress import Event, WarningEvent
from vmshift.cli import convert_cmd, mode_options
from vmshift.cli.main import build_parser
from vmshift.cli.options import network_map
from vmshift.cli.profile_options import apply_profile, target_networks
from vmshift.cli.render import ProgressPrinter
from vmshift.convert.base import ConvertOptions
from vmshift.convert.firmware import keeps_secure_boot
from vmshift.errors import ConversionError, DiskImageError, SourceError, TargetError, UsageError
from vmshift.model.inspection import OperatingSystem
from vmshift.model.vm import DiskEndpoint, Firmware, SourceDisk, SourceVM
from vmshift.pipeline import RunOptions, choose_root, run_conversion
from vmshift.targets.base import NetworkMap


def convert_args(*argv: str | Path) -> argparse.Namespace:
    args = build_parser().parse_args(["convert", *map(str, argv)])
    apply_profile(args)
    return args


# ---- networks -------------------------------------------------------------------------------


def test_short_forms_are_the_long_ones() -> None:
    short = convert_args("-i", "vmx", "g.vmx", "-n", "VM Network:lan", "-b", "DMZ:br-dmz")
    long = convert_args(
        "-i", "vmx", "g.vmx", "--network", "VM Network:lan", "--bridge", "DMZ:br-dmz"
    )
    assert target_networks(short) == target_networks(long)
    assert target_networks(short) == NetworkMap(
        networks={"VM Network": "lan"}, bridges={"DMZ": "br-dmz"}
    )


def test_a_default_network_and_a_default_bridge() -> None:
    networks = target_networks(
        convert_args("-i", "vmx", "g.vmx", "--bridge", "br0", "-n", "default")
    )
    assert networks == NetworkMap(default_network="default", default_bridge="br0")
    # Each kind of source connection takes its own kind's default.
    assert networks.map(None, "VM Network", "network") == ("network", "default")
    assert networks.map(None, "ethernet0", "bridge") == ("bridge", "br0")


@pytest.mark.parametrize(
    ("networks", "kind", "expected"),
    [
        (NetworkMap(default_network="lan"), "bridge", ("network", "lan")),
        (NetworkMap(default_bridge="br0"), "network", ("bridge", "br0")),
        (NetworkMap(), "network", ("network", "default")),
    ],
)
def test_one_default_still_covers_every_nic(
    networks: NetworkMap, kind: str, expected: tuple[str, str]
) -> None:
    assert networks.map(None, "anything", kind) == expected


def test_named_mappings_match_whatever_the_kind() -> None:
    networks = NetworkMap(networks={"a": "lan"}, bridges={"b": "br-b"}, default_bridge="br0")
    assert networks.map(None, "a", "bridge") == ("network", "lan")
    assert networks.map(None, "b", "network") == ("bridge", "br-b")


@pytest.mark.parametrize("flag", ["--network", "-n", "--bridge", "-b"])
def test_two_defaults_of_one_kind_are_refused(flag: str) -> None:
    kind = "network" if "n" in flag.strip("-")[:1] else "bridge"
    with pytest.raises(UsageError, match=f"--{kind} two: a default {kind} was already given"):
        target_networks(convert_args("-i", "vmx", "g.vmx", flag, "one", flag, "two"))


def test_network_map_defaults_by_kind() -> None:
    assert network_map(["default"], ["br0"], None) == NetworkMap(
        default_network="default", default_bridge="br0"
    )


# ---- -oo, -op -------------------------------------------------------------------------------


def outputs(*argv: str) -> mode_options.OutputOptions:
    args = convert_args("-i", "vmx", "g.vmx", *argv)
    return mode_options.output_options(args, convert_cmd.output_name(args))


def test_oo_qemu_boot_and_compressed() -> None:
    assert outputs("-o", "qemu", "-os", "/d", "-oo", "qemu-boot") == mode_options.OutputOptions(
        qemu_boot=True
    )
    assert outputs("-o", "qemu", "--qemu-boot", "-oo", "qemu-boot=false").qemu_boot is False
    got = outputs("-o", "local", "-of", "qcow2", "-oo", "compressed")
    assert got == mode_options.OutputOptions(compressed=True)
    assert outputs("-o", "libvirt", "-of", "qcow2", "-oo", "compressed=yes").compressed
    assert outputs("-o", "disk", "-of", "qcow2", "-oo", "compressed").compressed  # an alias


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("-o", "local", "-oo", "compressed"),
            "-oo compressed: needs -of qcow2 (the output format is raw)",
        ),
        (
            ("-o", "local", "-of", "qcow2", "-oa", "preallocated", "-oo", "compressed"),
            "-oo compressed: cannot be used with -oa preallocated",
        ),
        (("-o", "rhv", "-oo", "compressed"), "-oo compressed: -o rhv takes no output options"),
        (("-o", "null", "-oo", "x=1"), "-oo x=1: -o null takes no output options"),
        (
            ("-o", "local", "-oo", "qemu-boot"),
            "-oo qemu-boot: -o local has no output option 'qemu-boot'; it takes: compressed",
        ),
        (("-o", "qemu", "-oo", "qemu-boot=maybe"), "-oo qemu-boot=maybe: expected true or false"),
        (("-o", "libvirt", "-op", "/pw"), "-o libvirt: -op is not used by this output mode"),
        (("-o", "ovirt", "-op", "/pw"), "-o rhv: -op is not used by this output mode"),
    ],
)
def test_output_options_refused(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError) as exc:
        outputs(*argv)
    assert exc.value.message == message


def test_option_listings() -> None:
    qemu = convert_args("-i", "vmx", "g.vmx", "-o", "qemu", "-oo", "?")
    assert mode_options.wants_help(qemu) == (
        "Output options (-oo) of -o qemu:\n"
        "  -oo compressed      compress the output disks (only with -of qcow2)\n"
        "  -oo qemu-boot       boot the guest in qemu after conversion\n"
    )
    rhv = convert_args("-i", "vmx", "g.vmx", "-o", "rhv", "-oo", "?")
    assert mode_options.wants_help(rhv) == "No output options (-oo) can be used with -o rhv.\n"
    vmx = convert_args("-i", "vmx", "g.vmx", "-io", "?")
    assert mode_options.wants_help(vmx) == "No input options (-io) can be used with -i vmx.\n"
    assert mode_options.wants_help(convert_args("-i", "vmx", "g.vmx")) is None


# ---- -io, -ip -------------------------------------------------------------------------------


def test_io_is_refused_naming_it() -> None:
    args = convert_args("-i", "libvirt", "guest", "-io", "vddk-libdir=/opt/vddk")
    with pytest.raises(UsageError, match=r"^-io vddk-libdir=/opt/vddk: -i libvirt takes no input"):
        mode_options.input_options(args)
    vsphere = convert_args("-ic", "esx://h/", "guest", "-io", "vddk-libdir=/opt/vddk")
    with pytest.raises(UsageError) as exc:
        mode_options.input_options(vsphere)
    assert exc.value.message == (
        "-io vddk-libdir=/opt/vddk: -i libvirt -ic esx://h/ takes vddk-thumbprint=VALUE"
    )


def test_ip_is_read_for_libvirt_only(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret pass\nsecond line\n")
    args = convert_args("-i", "libvirt", "-ic", "qemu:///system", "guest", "-ip", pw)
    assert mode_options.input_password(args) == "s3cret pass"
    assert convert_cmd.make_source(args) is not None
    vmx = convert_args("-i", "vmx", "g.vmx", "-ip", pw)
    with pytest.raises(UsageError, match=r"^-i vmx: -ip is not used by this input mode$"):
        mode_options.input_password(vmx)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("\nsecret\n", "the first line is empty (no password)")],
)
def test_bad_password_files(tmp_path: Path, content: str | None, message: str) -> None:
    pw = tmp_path / "pw"
    if content is not None:
        pw.write_text(content)
    args = convert_args("-i", "libvirt", "guest", "-ip", pw)
    with pytest.raises(UsageError) as exc:
        mode_options.input_password(args)
    assert exc.value.message == f"-ip {pw}: {message}"


# ---- --root ---------------------------------------------------------------------------------


def os_at(root: str, product: str) -> OperatingSystem:
    return OperatingSystem(
        root=root, type="linux", distro="debian", product_name=product, product_variant="",
        major_version=12, minor_version=0, arch="x86_64", hostname="h", package_format="deb",
        package_manager="apt", osinfo="debian12", firmware="bios", mountpoints={"/": root},
        filesystems=(), applications=(), foreign_software=(),
    )  # fmt: skip


TWO = [os_at("/dev/sda2", "Debian 12"), os_at("/dev/sdb1", "Fedora 40")]


def test_root_ask_without_a_terminal_names_the_roots() -> None:
    with pytest.raises(ConversionError) as exc:
        choose_root(TWO, "ask", None)
    assert exc.value.message == (
        "the guest has several operating systems: /dev/sda2 (Debian 12), /dev/sdb1 (Fedora 40)"
    )
    assert exc.value.hint is not None and exc.value.hint.startswith("there is no terminal")


def test_root_ask_asks_only_when_there_is_a_choice() -> None:
    asked: list[int] = []

    def pick_second(oses: object) -> OperatingSystem:
        asked.append(1)
        return TWO[1]

    assert choose_root(TWO, "ask", pick_second) is TWO[1]
    assert choose_root(TWO[:1], "ask", pick_second) is TWO[0]
    assert asked == [1]
    assert choose_root(TWO, "first", pick_second) is TWO[0]
    assert choose_root(TWO, "/dev/sdb1", pick_second) is TWO[1]


def test_the_terminal_prompt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("3\nx\n2\n"))
    printer = ProgressPrinter(quiet=True, machine_readable=False, console=None)  # type: ignore[arg-type]
    assert convert_cmd.ask_root(printer, TWO) is TWO[1]
    err = capsys.readouterr().err
    assert "1. /dev/sda2 (Debian 12)" in err and "2. /dev/sdb1 (Fedora 40)" in err
    assert err.count("Type a number from 1 to 2.") == 2
    assert err.count("Number (1-2): ") == 3


def test_the_terminal_prompt_at_end_of_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("7\n"))
    printer = ProgressPrinter(quiet=True, machine_readable=False, console=None)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--root ask: no answer on the terminal"):
        convert_cmd.ask_root(printer, TWO)


# ---- secure boot ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_has_it", "firmware", "flag", "kept"),
    [
        (True, Firmware.UEFI, True, True),
        (True, Firmware.UEFI, False, False),  # --no-secure-boot
        (True, Firmware.BIOS, True, False),
        (False, Firmware.UEFI, True, False),
    ],
)
def test_secure_boot_is_kept_from_the_source(
    source_has_it: bool, firmware: Firmware, flag: bool, kept: bool
) -> None:
    vm = SourceVM("g", 1 << 30, 1, None, firmware, (), secure_boot=source_has_it)
    assert keeps_secure_boot(vm, firmware, ConvertOptions(secure_boot=flag)) is kept


def test_no_secure_boot_flag() -> None:
    assert convert_args("-i", "vmx", "g.vmx").secure_boot is True
    assert convert_args("-i", "vmx", "g.vmx", "--no-secure-boot").secure_boot is False


# ---- what a source read past reaches the user -----------------------------------------------


class _WarnedSource:
    def open(self, workdir: Path) -> SourceVM:
        return SourceVM("g", 1 << 30, 1, None, Firmware.BIOS, (), warnings=("a.mf: line 3 ...",))

    def close(self) -> None:
        pass


class _RefusingTarget:
    def check(self, vm: SourceVM) -> None:
        raise TargetError("-os /nowhere: no such directory")


def test_source_warnings_are_events_even_when_the_run_then_fails(tmp_path: Path) -> None:
    events: list[Event] = []
    with pytest.raises(TargetError):
        run_conversion(
            _WarnedSource(),
            _RefusingTarget(),  # type: ignore[arg-type]
            RunOptions(workdir_parent=tmp_path),
            events.append,
        )
    assert WarningEvent("a.mf: line 3 ...") in events
    assert list(tmp_path.iterdir()) == []  # the work directory went too


def test_warning_lines(capsys: pytest.CaptureFixture[str]) -> None:
    ProgressPrinter(quiet=False, machine_readable=True, console=None).event(  # type: ignore[arg-type]
        WarningEvent("x.ova: no manifest")
    )
    assert capsys.readouterr().out == "warning x.ova: no manifest\n"


def test_the_report_document() -> None:
    from vmshift.model.caps import Change, GuestCaps
    from vmshift.pipeline import ConversionResult
    from vmshift.report import conversion_report
    from vmshift.targets.base import TargetResult

    vm = SourceVM("g", 1 << 30, 1, None, Firmware.BIOS, (), origin="vmware", warnings=("w1",))
    caps = GuestCaps(
        "virtio-blk", "virtio", "vga", "q35", Firmware.BIOS, "x86_64",
        changes=(Change("devices", "sda -> vda", "/etc/fstab"),),
    )  # fmt: skip
    target = TargetResult("g-kvm", "written to /out", (Path("/out/g-kvm-sda"),), ("chown",))
    result = ConversionResult(vm, TWO[0], caps, target, fetched={"[ds1] g/g.vmdk": 4096})
    doc = conversion_report(result, "vmshift: done")
    assert doc["schema"] == "vmshift-convert-report/1"
    assert doc["source"] == {
        "name": "g", "origin": "vmware", "file": None, "warnings": ["w1"],
        "fetched_bytes": {"[ds1] g/g.vmdk": 4096},
    }  # fmt: skip
    assert doc["os"]["root"] == "/dev/sda2" and doc["devices"]["virtio"] is True
    assert doc["changes"] == [{"step": "devices", "what": "sda -> vda", "path": "/etc/fstab"}]
    assert doc["target"]["files"] == ["/out/g-kvm-sda"] and doc["verdict"] == "vmshift: done"


class _LostSource:
    """A remote source whose host went away: its one disk cannot even be opened."""

    def __init__(self, tmp: Path) -> None:
        self.disk = DiskEndpoint(str(tmp / "gone.img"), "raw", 1 << 20)
        self.closed = False

    def open(self, workdir: Path) -> SourceVM:
        return SourceVM("g", 1 << 30, 1, None, Firmware.BIOS, (SourceDisk(self.disk),))

    def close(self) -> None:
        self.closed = True

    def fetched(self) -> dict[str, int]:
        return {"[ds] g.vmdk": 512}

    def lost(self) -> SourceError | None:
        return SourceError("esx://h/g: [ds] g.vmdk stopped answering: connection refused")


class _PassingTarget:
    aborted = False

    def check(self, vm: SourceVM) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


def test_a_lost_remote_source_is_the_error_reported(tmp_path: Path) -> None:
    """What failed downstream (here qemu-img cannot open the disk) is replaced by the source's
    own account of why its disks stopped answering; the target is still aborted."""
    source, target = _LostSource(tmp_path), _PassingTarget()
    with pytest.raises(SourceError, match="stopped answering: connection refused") as caught:
        run_conversion(
            source,
            target,  # type: ignore[arg-type]
            RunOptions(workdir_parent=tmp_path),
            lambda event: None,
        )
    assert isinstance(caught.value.__cause__, DiskImageError)  # what qemu-img said is kept
    assert target.aborted and source.closed
