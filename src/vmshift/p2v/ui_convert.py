"""The second screen of the P2V console UI: virt-p2v's conversion dialog.

Destination profile, name, CPUs and memory; Fixed Storage (a Convert checkbox and a Transfer
Progress column per disk, and under a ticked disk its partitions, each with a Convert checkbox
and a New size: ui_partitions.py), Removable Media, Network Interfaces and the network each
maps to; compression. "Start conversion" checks the choices and turns them into a new P2VSettings.
"""

from __future__ import annotations

import dataclasses

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (
    Button,
    Checkbox,
    Footer,
    Input,
    Label,
    Select,
    Static,
)

from vmshift.cli.render import human_size
from vmshift.p2v.events import DiskProgress, ServerInfo
from vmshift.p2v.machine import Machine
from vmshift.p2v.settings import P2VSettings
from vmshift.p2v.ui_partitions import (
    HINT,
    PARTITION_CSS,
    PartitionRows,
    numbered,
    partition_choices,
)
from vmshift.p2v.ui_widgets import MIB, ButtonRow, DiskBar, Form, Tick, button, field, header


def default_name(hostname: str) -> str:
    """The guest's name from the machine's host name, without the domain (as virt-p2v)."""
    short = hostname.split(".", 1)[0]
    return short or hostname


def default_profile(settings: P2VSettings, server: ServerInfo) -> str | None:
    names = [p.name for p in server.profiles]
    if settings.profile in names:
        return settings.profile
    return names[0] if len(names) == 1 else None


class ConversionScreen(Screen[None]):
    """Every choice of a conversion; Start posts them as a `Start` message."""

    BINDINGS = [Binding("escape", "back", "Back")]
    CSS = PARTITION_CSS

    class Start(Message):
        """Start conversion was pressed and the choices are sound."""

        def __init__(self, settings: P2VSettings) -> None:
            super().__init__()
            self.settings = settings

    def __init__(self, machine: Machine, settings: P2VSettings, server: ServerInfo) -> None:
        super().__init__()
        self.machine = machine
        self.settings = settings
        self.server = server
        self._disks: dict[str, Tick] = {}
        self._bars: dict[str, DiskBar] = {}
        self._partitions: dict[str, PartitionRows] = {}
        self._removables: dict[str, Tick] = {}
        self._interfaces: dict[str, Tick] = {}
        self._networks: dict[str, Input] = {}

    def compose(self) -> ComposeResult:
        m, s = self.machine, self.settings
        chosen = {d.name for d in map(m.disk, s.disks) if d} if s.disks else None
        removable = set(s.removable) if s.removable else None
        interfaces = set(s.interfaces) if s.interfaces else None
        networks = dict(s.network)
        yield Static("vmshift P2V: conversion settings", classes="title")
        with Form():
            profiles = [(f"{p.name} ({p.output or '-'})", p.name) for p in self.server.profiles]
            yield field(
                "Destination Profile:",
                Select(
                    profiles,
                    value=default_profile(s, self.server) or Select.NULL,
                    prompt="Choose a profile",
                    id="profile",
                    compact=True,
                ),
            )
            yield field("Name:", Input(s.name or default_name(m.hostname), id="name", compact=True))
            yield field(
                "Number of CPUs:",
                Input(str(s.vcpus or m.cpu.count), id="vcpus", type="integer", compact=True),
            )
            yield field(
                "Memory (MiB):",
                Input(
                    str((s.memory or m.memory) // MIB), id="memory", type="integer", compact=True
                ),
            )
            yield Static("Fixed Storage", classes="section")
            yield header(
                ("Convert", "convert"),
                ("Size", "size"),
                ("Model", "model"),
                ("Transfer Progress", "progress"),
            )
            for d in m.disks:
                box = Tick(
                    d.name, chosen is None or d.name in chosen, compact=True, classes="convert"
                )
                bar = DiskBar(classes="progress")
                bar.styles.visibility = "hidden"  # blank until the transfer starts
                self._disks[d.name], self._bars[d.name] = box, bar
                model = d.model or d.note or ""
                yield Horizontal(
                    box,
                    Label(human_size(d.size), classes="size"),
                    Label(model, classes="model"),
                    bar,
                    classes="row",
                )
                if numbered(d):
                    rows = self._partitions[d.name] = PartitionRows(d, s)
                    rows.display = box.value
                    yield rows
            if self._partitions:
                yield Label(HINT, classes="hint")
            if not m.disks:
                yield Label("No fixed disks found.", classes="empty")
            yield Static("Removable Media", classes="section")
            for r in m.removables:
                box = Tick(
                    f"{r.name} ({r.kind})", removable is None or r.name in removable, compact=True
                )
                self._removables[r.name] = box
                yield box
            if not m.removables:
                yield Label("No removable media found.", classes="empty")
            yield Static("Network Interfaces", classes="section")
            yield header(
                ("Convert", "convert"),
                ("MAC", "mac"),
                ("Driver", "driver"),
                ("Link", "link"),
                ("Network", "network"),
            )
            for i in m.interfaces:
                box = Tick(
                    i.name,
                    interfaces is None or i.name in interfaces,
                    compact=True,
                    classes="convert",
                )
                net = Input(networks.get(i.name, "default"), compact=True, classes="network")
                self._interfaces[i.name], self._networks[i.name] = box, net
                yield Horizontal(
                    box,
                    Label(i.mac, classes="mac"),
                    Label(i.driver or "-", classes="driver"),
                    Label(i.link, classes="link"),
                    net,
                    classes="row",
                )
            if not m.interfaces:
                yield Label("No network interfaces found.", classes="empty")
            # A checkbox, not a Switch: a Switch is drawn in colours only (blank on a plain tty).
            yield field(
                "Compress:",
                Tick("compress the data on the wire", s.compress, id="compress", compact=True),
            )
        yield Static("", id="message", markup=False)
        with ButtonRow():
            yield button("< Back", "back")
            yield button("Start conversion", "start")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#profile", Select).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.focus_next()

    def on_input_changed(self) -> None:
        self._clear_message()

    def on_select_changed(self) -> None:
        self._clear_message()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        for name, box in self._disks.items():
            if box is event.checkbox and name in self._partitions:
                self._partitions[name].display = box.value  # only a ticked disk's partitions
        self._clear_message()

    def _clear_message(self) -> None:
        if self.is_mounted:
            self.query_one("#message", Static).update("")

    def action_back(self) -> None:
        self.app.pop_screen()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "back":
            self.action_back()
        elif event.button.id == "start":
            settings = self.choices()
            message = self.query_one("#message", Static)
            if isinstance(settings, str):
                message.update(settings)
                message.set_classes("error")
                return
            message.update("")
            self.post_message(self.Start(settings))

    def choices(self) -> P2VSettings | str:
        """The settings the screen says, or a one-line reason why it cannot start."""
        profile = self.query_one("#profile", Select).value
        if not isinstance(profile, str):
            return "Choose a destination profile."
        name = self.query_one("#name", Input).value.strip()
        if not name or "/" in name or any(c.isspace() for c in name):
            return "The guest's name must be one word (no spaces or slashes)."
        vcpus = _number(self.query_one("#vcpus", Input).value)
        if vcpus is None or vcpus < 1:
            return "The number of CPUs must be a whole number, 1 or more."
        memory = _number(self.query_one("#memory", Input).value)
        if memory is None or memory < 1:
            return "The memory must be a whole number of MiB, 1 or more."
        disks = tuple(name for name, box in self._disks.items() if box.value)
        if not disks:
            return "Choose at least one fixed disk to convert."
        rows = [self._partitions[d] for d in disks if d in self._partitions]
        picked = partition_choices(
            [d for d in self.machine.disks if d.name in disks],
            {n: v for r in rows for n, v in r.kept().items()},
            {n: t for r in rows for n, t in r.texts().items()},
        )
        if isinstance(picked, str):
            return picked
        interfaces = tuple(name for name, box in self._interfaces.items() if box.value)
        network = tuple((i, self._networks[i].value.strip()) for i in interfaces)
        for iface, net in network:
            if not net or ":" in net or "," in net:
                return f"Give {iface} the name of a network on the server (no ':' or ',')."
        return dataclasses.replace(
            self.settings,
            profile=profile,
            name=name,
            vcpus=vcpus,
            memory=memory * MIB,
            disks=disks,
            partitions=picked[0],
            resize=picked[1],
            removable=tuple(name for name, box in self._removables.items() if box.value),
            interfaces=interfaces,
            network=network,
            compress=self.query_one("#compress", Tick).value,
        )

    def show_progress(self, event: DiskProgress) -> None:
        """The Transfer Progress column: the same events as the progress screen's bars."""
        bar = self._bars.get(event.disk)
        if bar is not None:
            bar.styles.visibility = "visible"
            bar.update(event.done, event.total)


def _number(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None
