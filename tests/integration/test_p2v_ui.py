"""The P2V console UI driven by textual's headless pilot at 80x24, keyboard only, against a
fake client: the connection test (refused with its one line and hint, then passed), the
conversion screen pre-filled from the Machine and its choices turned into the P2VSettings the
client's convert receives, the run's events from the client's thread on the progress screen
and in the Transfer Progress column, Cancel, the verdict and the choice the App returns; each
disk's partitions left out or resized, and refused up front as layout.py's rules say."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Button, Input, Log, Select, Static

from vmshift.errors import UsageError, VmshiftError
from vmshift.p2v.events import (
    DiskProgress,
    EventSink,
    Finished,
    LogLine,
    ProfileInfo,
    ServerInfo,
    StageChange,
)
from vmshift.p2v.machine import Cpu, Disk, Interface, Machine, Partition, RemovableDevice
from vmshift.p2v.settings import P2VSettings, Resize
from vmshift.p2v.ui import P2VApp
from vmshift.p2v.ui_connect import ConnectionScreen
from vmshift.p2v.ui_convert import ConversionScreen
from vmshift.p2v.ui_partitions import PartitionRows, partition_choices, size_text
from vmshift.p2v.ui_progress import ProgressScreen
from vmshift.p2v.ui_widgets import DiskBar, Tick

MiB = 1024 * 1024
GiB = 1024 * MiB

MACHINE = Machine(
    hostname="db1.example.com",
    cpu=Cpu(model="Intel(R) Xeon(R) E-2224", sockets=1, cores=4, threads=2),
    memory=16 * GiB - 300 * MiB,  # MemTotal: 16084 MiB
    firmware="uefi",
    disks=(
        Disk("sda", "/dev/sda", 480 * GiB, model="Samsung SSD 860"),
        Disk("sdb", "/dev/sdb", 2000 * GiB, model="WDC WD20EFRX", rotational=True),
        Disk("nvme0n1", "/dev/nvme0n1", 256 * GiB, model="KXG60ZNV256G TOSHIBA"),
    ),
    removables=(RemovableDevice("sr0", "/dev/sr0", "cdrom"),),
    interfaces=(
        Interface("eno1", "3c:ec:ef:01:02:03", "igb", "up", 1000),
        Interface("eno2", "3c:ec:ef:01:02:04", "igb", "down"),
    ),
)

SERVER = ServerInfo(
    version="0.1.0",
    profiles=(
        ProfileInfo("rhv", "rhv", "nfs:/export", "/etc/virt-v2v.conf"),
        ProfileInfo("local", "local", "/var/tmp", "/etc/vmshift/profiles.toml"),
    ),
    user="p2v",
    host_key="SHA256:q3Zy0Ic4qkbG1yTf2Y2Kp8s2bUw6uH2m3q7gH0x1c2E",
)


class FakeClient:
    """Records its calls; convert sends a run's events from its (worker) thread, then waits
    for the test to cancel the run or to let it finish."""

    def __init__(self) -> None:
        self.tested: list[P2VSettings] = []
        self.converted: list[P2VSettings] = []
        self.cancel: threading.Event | None = None
        self.sent = threading.Event()  # the progress events are all sent
        self.finish = threading.Event()  # let the run end well
        self.thread: str | None = None
        self.refuse: VmshiftError | None = None  # what convert raises, if anything

    def test_connection(self, settings: P2VSettings) -> ServerInfo:
        self.tested.append(settings)
        if settings.password != "secret":
            raise VmshiftError(
                f"{settings.user}@{settings.server}: permission denied (password)",
                hint="check the user and password, or give an SSH key",
            )
        return SERVER

    def convert(
        self, settings: P2VSettings, machine: Machine, sink: EventSink, cancel: threading.Event
    ) -> Finished:
        self.converted.append(settings)
        self.cancel = cancel
        self.thread = threading.current_thread().name
        if self.refuse is not None:
            raise self.refuse
        sink(StageChange("connect", "Connecting to conv.example.com"))
        sink(LogLine("ssh: connected to conv.example.com:22 as root"))
        sink(StageChange("copy", "Copying 2 disks"))
        for done in (0, 100 * GiB, 240 * GiB):
            sink(DiskProgress("sda", done, 480 * GiB))
        sink(LogLine("sda: half copied", source="server"))
        sink(DiskProgress("nvme0n1", 64 * GiB, 256 * GiB))
        self.sent.set()
        while not (cancel.is_set() or self.finish.is_set()):
            cancel.wait(0.01)
        if cancel.is_set():
            finished = Finished(ok=False, exit_code=3, summary=("cancelled: target removed",))
        else:
            sink(DiskProgress("sda", 480 * GiB, 480 * GiB))
            sink(DiskProgress("nvme0n1", 256 * GiB, 256 * GiB))
            sink(StageChange("done", "Converted"))
            finished = Finished(ok=True, exit_code=0, summary=("guest db1 created",))
        sink(finished)
        return finished


def run(
    scenario: Callable[[Pilot[str], FakeClient], Coroutine[Any, Any, None]],
    machine: Machine = MACHINE,
    settings: P2VSettings = P2VSettings(),  # noqa: B008 (frozen)
) -> str | None:
    """Run `scenario` in an 80x24 headless app; what the App returned."""
    client = FakeClient()
    app = P2VApp(machine, settings, client)

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await scenario(pilot, client)
            await pilot.pause()

    asyncio.run(main())
    return app.return_value


async def until(pilot: Pilot[str], done: Callable[[], bool]) -> None:
    """Let the app run until `done` (events from a worker thread take a few turns)."""
    for _ in range(500):
        await pilot.pause(0.01)
        if done():
            return
    raise AssertionError("the UI did not get there in 5 s")


def focused(pilot: Pilot[str]) -> Widget:
    widget = pilot.app.focused
    assert widget is not None
    return widget


async def press_on(pilot: Pilot[str], button_id: str) -> None:
    """Tab (forwards) to a button and press Enter, as a person without a mouse would."""
    for _ in range(40):
        if focused(pilot).id == button_id:
            await pilot.press("enter")
            return
        await pilot.press("tab")
    raise AssertionError(f"#{button_id} is not reachable with Tab")


async def press(pilot: Pilot[str], button_id: str) -> None:
    pilot.app.screen.query_one(f"#{button_id}", Button).focus()
    await pilot.press("enter")


def text(pilot: Pilot[str], selector: str) -> str:
    return str(pilot.app.screen.query_one(selector, Static).render())


async def connect(pilot: Pilot[str]) -> None:
    """Fill the connection screen (typing is test_connection_refused_then_passed's: at some
    70 ms a key it is not done again), test it, and go on to the conversion screen."""
    screen = pilot.app.screen
    assert isinstance(screen, ConnectionScreen)
    screen.query_one("#server", Input).value = "conv.example.com"
    screen.query_one("#password", Input).value = "secret"
    screen.query_one("#test", Button).focus()
    await pilot.press("enter")
    await until(pilot, lambda: "Connected" in text(pilot, "#status"))
    assert focused(pilot).id == "next"
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, ConversionScreen))


def test_connection_refused_then_passed() -> None:
    async def scenario(pilot: Pilot[str], client: FakeClient) -> None:
        screen = pilot.app.screen
        assert focused(pilot).id == "server"
        await pilot.press(*"conv.example.com", "tab", "tab", "tab", *"wrong")
        await press_on(pilot, "test")
        await until(pilot, lambda: "Error" in text(pilot, "#status"))
        assert text(pilot, "#status") == (
            "Error: root@conv.example.com: permission denied (password)\n"
            "Hint: check the user and password, or give an SSH key"
        )
        assert screen.query_one("#next", Button).disabled
        assert client.tested == [
            P2VSettings(server="conv.example.com", port=22, user="root", password="wrong")
        ]
        # Back to the password with Shift+Tab, the old one cleared with Ctrl+U.
        while focused(pilot).id != "password":
            await pilot.press("shift+tab")
        await pilot.press("ctrl+u", *"secret")
        await press_on(pilot, "test")
        await until(pilot, lambda: "Connected" in text(pilot, "#status"))
        status = text(pilot, "#status")
        assert "vmshift 0.1.0 on conv.example.com, running as p2v" in status
        assert "Host key: SHA256:q3Zy0Ic4qkbG1yTf2Y2Kp8s2bUw6uH2m3q7gH0x1c2E" in status
        assert "rhv    -o rhv -os nfs:/export  (/etc/virt-v2v.conf)" in status
        assert "local  -o local -os /var/tmp" in status
        next_button = screen.query_one("#next", Button)
        assert not next_button.disabled
        assert focused(pilot) is next_button
        # Edited after the test: Next waits for another one.
        screen.query_one("#port", Input).value = "2222"
        await pilot.pause()
        assert next_button.disabled
        screen.query_one("#port", Input).value = "22"
        await pilot.pause()
        assert not next_button.disabled
        await pilot.press("ctrl+q")

    assert run(scenario) == "exit"


def test_conversion_choices_run_and_cancel() -> None:
    async def scenario(pilot: Pilot[str], client: FakeClient) -> None:
        await connect(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ConversionScreen)
        # Pre-filled from the Machine: the short host name, 1x4x2 CPUs, MemTotal in MiB.
        assert screen.query_one("#name", Input).value == "db1"
        assert screen.query_one("#vcpus", Input).value == "8"
        assert screen.query_one("#memory", Input).value == "16084"
        assert screen.query_one("#profile", Select).value is Select.NULL  # two: no default
        ticks = {t.label.plain: t for t in screen.query(Tick)}
        assert all(t.value for t in ticks.values())
        assert set(ticks) == {"sda", "sdb", "nvme0n1", "sr0 (cdrom)", "eno1", "eno2"} | {
            "compress the data on the wire"
        }

        # Refused, one line each, and convert not called.
        await press_on(pilot, "start")
        assert text(pilot, "#message") == "Choose a destination profile."
        profile = screen.query_one("#profile", Select)
        profile.focus()
        await pilot.press("enter", "down", "enter")  # the first profile: rhv
        assert profile.value == "rhv"
        screen.query_one("#vcpus", Input).value = "0"
        await pilot.pause()
        await press_on(pilot, "start")
        assert text(pilot, "#message") == "The number of CPUs must be a whole number, 1 or more."
        screen.query_one("#vcpus", Input).value = "4"
        for name in ("sda", "sdb", "nvme0n1"):
            ticks[name].value = False
        await pilot.pause()  # the changes' messages (which clear the last refusal) first
        await press_on(pilot, "start")
        assert text(pilot, "#message") == "Choose at least one fixed disk to convert."
        assert client.converted == []
        ticks["sda"].value = ticks["sdb"].value = ticks["nvme0n1"].value = True

        # sdb unticked with Space, eno2 mapped to br-lan, by keyboard.
        ticks["sdb"].focus()
        await pilot.press("space")
        assert not ticks["sdb"].value
        ticks["eno2"].focus()
        await pilot.press("tab")
        assert focused(pilot).has_class("network")
        await pilot.press("ctrl+u", *"br-lan")
        await press_on(pilot, "start")

        await until(
            pilot, lambda: isinstance(pilot.app.screen, ProgressScreen) and client.sent.is_set()
        )
        assert client.converted == [
            P2VSettings(
                server="conv.example.com",
                port=22,
                user="root",
                password="secret",
                profile="rhv",
                name="db1",
                vcpus=4,
                memory=16084 * MiB,
                disks=("sda", "nvme0n1"),
                removable=("sr0",),
                interfaces=("eno1", "eno2"),
                network=(("eno1", "default"), ("eno2", "br-lan")),
                compress=True,
            )
        ]
        assert client.thread != threading.current_thread().name  # convert ran in a worker

        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.bar("nvme0n1").total > 0)
        sda, nvme = progress.bar("sda"), progress.bar("nvme0n1")
        assert (sda.done, sda.total, sda.fraction) == (240 * GiB, 480 * GiB, 0.5)
        assert (nvme.done, nvme.total, nvme.fraction) == (64 * GiB, 256 * GiB, 0.25)
        assert "  50%" in str(sda.render())
        # The conversion screen's Transfer Progress column has the same numbers.
        column = {
            b.parent.query_one(Tick).label.plain: b for b in screen.query(DiskBar) if b.parent
        }
        assert (column["sda"].done, column["sda"].total) == (240 * GiB, 480 * GiB)
        assert column["sdb"].total == 0
        assert text(pilot, "#stage") == "Stage copy: Copying 2 disks"
        log = progress.query_one(Log)
        assert list(log.lines) == [
            "== Connecting to conv.example.com",
            "ssh: connected to conv.example.com:22 as root",
            "== Copying 2 disks",
            "server: sda: half copied",
        ]

        assert client.cancel is not None and not client.cancel.is_set()
        await press_on(pilot, "cancel")
        assert client.cancel.is_set()
        await until(pilot, lambda: progress.finished is not None)
        assert text(pilot, "#verdict") == (
            "Conversion cancelled (exit code 3).\ncancelled: target removed"
        )
        assert not progress.query_one("#cancel", Button).display
        assert text(pilot, "#stage") == "Stopped."
        assert focused(pilot).id == "exit"  # p2v.post not given: the harmless choice
        await pilot.press("shift+tab", "shift+tab", "shift+tab", "enter")  # Power off

    assert run(scenario) == "poweroff"


def test_finished_well_then_reboot() -> None:
    async def scenario(pilot: Pilot[str], client: FakeClient) -> None:
        await connect(pilot)
        screen = pilot.app.screen
        screen.query_one("#profile", Select).value = "local"
        await press(pilot, "start")
        await until(pilot, client.sent.is_set)
        client.finish.set()
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished is not None)
        assert progress.finished == Finished(ok=True, exit_code=0, summary=("guest db1 created",))
        assert text(pilot, "#verdict") == (
            "Conversion finished: db1 is on the conversion server.\nguest db1 created"
        )
        assert progress.bar("sda").fraction == progress.bar("nvme0n1").fraction == 1.0
        assert text(pilot, "#stage") == "Stage done: Converted"
        assert client.converted[0].profile == "local"
        assert client.converted[0].disks == ("sda", "sdb", "nvme0n1")
        await pilot.press("left", "left", "enter")  # Exit -> Shell -> Reboot

    assert run(scenario) == "reboot"


def test_ctrl_q_during_a_run_cancels_it() -> None:
    async def scenario(pilot: Pilot[str], client: FakeClient) -> None:
        await connect(pilot)
        pilot.app.screen.query_one("#profile", Select).value = "rhv"
        await press(pilot, "start")
        await until(pilot, client.sent.is_set)
        await pilot.press("ctrl+q")
        assert client.cancel is not None and client.cancel.is_set()
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished is not None)
        await pilot.press("ctrl+q")  # over: now it leaves

    assert run(scenario) == "exit"


def test_convert_refusing_is_a_failed_verdict() -> None:
    async def scenario(pilot: Pilot[str], client: FakeClient) -> None:
        client.refuse = UsageError("p2v.disks: no disk to convert", hint="name one")
        await connect(pilot)
        pilot.app.screen.query_one("#profile", Select).value = "rhv"
        await press(pilot, "start")
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished is not None)
        assert text(pilot, "#verdict") == (
            "Conversion failed (exit code 2).\np2v.disks: no disk to convert\nHint: name one"
        )
        assert focused(pilot).id == "exit"
        await pilot.press("enter")

    assert run(scenario) == "exit"


def test_every_control_reachable_by_tab() -> None:
    async def scenario(pilot: Pilot[str], client: FakeClient) -> None:
        await connect(pilot)
        screen = pilot.app.screen
        wanted = {id(w) for w in screen.query("Input, Select, Checkbox, Button")}
        seen: set[int] = set()
        for _ in range(len(wanted) + 1):
            await pilot.press("tab")
            seen.add(id(focused(pilot)))
        assert wanted <= seen
        # Escape goes back to the connection screen, with its fields kept.
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, ConnectionScreen)
        assert pilot.app.screen.query_one("#server", Input).value == "conv.example.com"
        await pilot.press("ctrl+q")

    assert run(scenario) == "exit"


def _parts(
    disk: str, sep: str, *parts: tuple[int, str | None, str | None]
) -> tuple[Partition, ...]:
    """Partitions 1, 2 ... of disk, one after the other from 1 MiB: (size, fstype, label)."""
    found, start = [], MiB
    for number, (size, fstype, label) in enumerate(parts, 1):
        name = f"{disk}{sep}{number}"
        found.append(Partition(name, f"/dev/{name}", number, start, size, fstype, label))
        start += size
    return tuple(found)


# sda: ext4 + xfs + swap; sdb: a filesystem on the whole disk (no table: nothing to choose);
# nvme0n1: an EFI system partition (vfat, which cannot grow) and an ext4.
PARTED = dataclasses.replace(
    MACHINE,
    disks=(
        Disk(
            "sda",
            "/dev/sda",
            480 * GiB,
            model="Samsung SSD 860",
            partitions=_parts(
                "sda",
                "",
                (30 * GiB, "ext4", "root"),
                (400 * GiB, "xfs", "data"),
                (8 * GiB, "swap", None),
            ),
        ),
        Disk(
            "sdb",
            "/dev/sdb",
            2000 * GiB,
            partitions=(Partition("sdb", "/dev/sdb", 0, 0, 2000 * GiB, "xfs", "backup"),),
        ),
        Disk(
            "nvme0n1",
            "/dev/nvme0n1",
            256 * GiB,
            partitions=_parts(
                "nvme0n1", "p", (512 * MiB, "vfat", "EFI"), (200 * GiB, "ext4", None)
            ),
        ),
    ),
)


def test_partitions_chosen_and_resized() -> None:
    async def scenario(pilot: Pilot[str], client: FakeClient) -> None:
        await connect(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, ConversionScreen)
        screen.query_one("#profile", Select).value = "rhv"
        rows = {r.disk.name: r for r in screen.query(PartitionRows)}
        assert set(rows) == {"sda", "nvme0n1"}  # sdb has no partition table
        sda, nvme = rows["sda"], rows["nvme0n1"]
        assert list(sda.ticks) == ["sda1", "sda2", "sda3"]
        assert all(t.value for r in rows.values() for t in r.ticks.values())
        assert all(i.value == "" for r in rows.values() for i in r.sizes.values())
        labels = [[str(w.render()) for w in row.query("Label")] for row in sda.query(".row")]
        assert labels[1] == ["400.0 GiB", "xfs", "data"]

        # The swap left out with Space: its New size greyed, and Tab goes past it.
        sda.ticks["sda3"].focus()
        await pilot.press("space")
        assert not sda.ticks["sda3"].value and sda.sizes["sda3"].disabled
        # The ext4 grown by 10 GiB, typed after Tab from its checkbox.
        sda.ticks["sda1"].focus()
        await pilot.press("tab")
        assert focused(pilot) is sda.sizes["sda1"]
        await pilot.press(*"+10G")
        # The xfs shrunk: refused up front, naming it; convert is not called.
        sda.sizes["sda2"].focus()
        await pilot.press(*"-2G")
        await press_on(pilot, "start")
        assert text(pilot, "#message") == "sda2: xfs cannot be shrunk."
        assert client.converted == []
        # Other refusals, one line each.
        refusals = {
            ("sda2", "lots"): "sda2: the new size lots: expected a size such as 2048 (MiB), "
            "512M or 4G.",
            ("sda2", "+0G"): "sda2: the new size +0G: the size is 0.",
            ("sda2", "sda1:5G"): "sda2: the new size sda1:5G is not a size such as 20G, 512M, "
            "+10G or -2G.",
            ("sda2", "-400G"): "sda2 would have no size left.",
            ("nvme0n1p1", "+1G"): "nvme0n1p1 holds vfat, which cannot be grown.",
        }
        sizes = {name: field for r in rows.values() for name, field in r.sizes.items()}
        for (name, size), refusal in refusals.items():
            sizes[name].value = size
            await pilot.pause()
            await press(pilot, "start")
            assert text(pilot, "#message") == refusal, name
            sizes[name].value = ""
        nvme.ticks["nvme0n1p1"].value = nvme.ticks["nvme0n1p2"].value = False
        await pilot.pause()
        await press(pilot, "start")
        assert text(pilot, "#message") == (
            "nvme0n1: tick at least one of its partitions, or untick the disk."
        )
        nvme.ticks["nvme0n1p1"].value = nvme.ticks["nvme0n1p2"].value = True
        # An unticked disk hides its partitions (and they are not Tab stops).
        screen.query_one("#start", Button).focus()
        disk_ticks = {t.label.plain: t for t in screen.query(Tick)}
        disk_ticks["nvme0n1"].value = False
        await pilot.pause()
        assert not nvme.display
        disk_ticks["nvme0n1"].value = True
        await pilot.pause()
        assert nvme.display
        # An ext4 may shrink: the used data is the client's to check, not the screen's.
        sizes["nvme0n1p2"].value = "-50G"
        await pilot.pause()
        assert client.converted == []
        await press(pilot, "start")

        await until(pilot, client.sent.is_set)
        (settings,) = client.converted
        assert settings.disks == ("sda", "sdb", "nvme0n1")
        assert settings.partitions == ("sda1", "sda2", "nvme0n1p1", "nvme0n1p2")
        assert settings.resize == (
            Resize("sda1", 10 * GiB, relative=True),
            Resize("nvme0n1p2", -50 * GiB, relative=True),
        )
        await pilot.press("ctrl+q")
        await until(pilot, lambda: pilot.app.screen.query_one("#exit", Button).display)
        await pilot.press("ctrl+q")

    assert run(scenario, PARTED) == "exit"


def test_partitions_from_the_settings() -> None:
    """p2v.partitions and p2v.resize pre-fill the rows; untouched, they come back as given."""
    given = P2VSettings(
        partitions=("sda1", "/dev/sda2", "nvme0n1p1", "nvme0n1p2"),
        resize=(Resize("/dev/sda1", 40 * GiB), Resize("nvme0n1p2", -512 * MiB, relative=True)),
    )

    async def scenario(pilot: Pilot[str], client: FakeClient) -> None:
        await connect(pilot)
        screen = pilot.app.screen
        sda = next(r for r in screen.query(PartitionRows) if r.disk.name == "sda")
        assert {n: t.value for n, t in sda.ticks.items()} == {
            "sda1": True,
            "sda2": True,
            "sda3": False,
        }
        assert sda.sizes["sda1"].value == "40G" and sda.sizes["sda3"].disabled
        screen.query_one("#profile", Select).value = "local"
        await press(pilot, "start")
        await until(pilot, client.sent.is_set)
        (settings,) = client.converted
        assert settings.partitions == ("sda1", "sda2", "nvme0n1p1", "nvme0n1p2")
        assert settings.resize == (
            Resize("sda1", 40 * GiB),
            Resize("nvme0n1p2", -512 * MiB, relative=True),
        )
        client.finish.set()
        await until(pilot, lambda: pilot.app.screen.query_one("#exit", Button).display)
        await pilot.press("ctrl+q")

    assert run(scenario, PARTED, given) == "exit"


def test_partition_choices_without_a_screen() -> None:
    """Every partition kept is p2v.partitions' default (); a partition left out takes no
    resize; sizes show in the largest exact unit."""
    disks = PARTED.disks
    assert partition_choices(disks, {}, {}) == ((), ())
    assert partition_choices(disks, {"sda3": False}, {"sda3": "+1G", "sda1": " 20G "}) == (
        ("sda1", "sda2", "nvme0n1p1", "nvme0n1p2"),
        (Resize("sda1", 20 * GiB),),
    )
    assert partition_choices(disks, {}, {"sda3": "-1G"}) == "sda3: swap cannot be shrunk offline."
    assert partition_choices(disks, {}, {"sda1": "1"}) == ((), (Resize("sda1", MiB),))
    assert [size_text(r) for r in (Resize("a", 20 * GiB), Resize("a", -1536 * MiB, True))] == [
        "20G",
        "-1536M",
    ]
    assert size_text(Resize("a", 3 * 1024 + 0, True)) == "+3K"
