"""The partitions of each disk on the P2V conversion screen: which to send, and new sizes.

Under a ticked disk of Fixed Storage, one row per partition: a Convert checkbox, its size,
filesystem and label, and a "New size" field, empty to keep the size, or a size as
`p2v.resize=` takes one (20G, 512M, a plain number of MiB; +10G grows, -2G shrinks; it is
parsed by that same parser). An unticked partition is left out (p2v.partitions=) and its New
size is greyed and ignored.

Start checks the choices with layout.py's rules (`layouts`), naming the partition at fault:
an xfs shrink, growing or shrinking what its filesystem does not allow, a bad size, a ticked
disk with no partition ticked. The used data of each partition is not known here (the client
maps it before sending, and a shrink below it comes back as a failed verdict), so the check
is given 0 bytes used for every partition: its floor for a shrink is then no floor, and only
the filesystem rules and "no size left" can refuse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, Input, Label

from vmshift.cli.render import human_size
from vmshift.errors import UsageError
from vmshift.p2v.layout import layouts
from vmshift.p2v.machine import Disk, Partition
from vmshift.p2v.settings import P2VSettings, Resize, parse_cmdline
from vmshift.p2v.ui_widgets import Tick, header

HINT = "New size: empty keeps it; 20G, 512M, +10G (grows) or -2G (shrinks)."

# Screen-level CSS (the App's `Input { width: 1fr; }` outranks a widget's DEFAULT_CSS). The
# Convert column with the rows' indent is as wide as the disks' (16), so Size lines up.
PARTITION_CSS = """
PartitionRows { height: auto; padding-left: 2; }
PartitionRows .pconvert { width: 14; }
PartitionRows .fstype { width: 11; }
PartitionRows .plabel { width: 1fr; }
PartitionRows .newsize { width: 12; }
PartitionRows .newsize:disabled { text-style: dim; }  /* no underline: not a field now */
.hint { height: 1; }
"""


def numbered(disk: Disk) -> tuple[Partition, ...]:
    """The disk's partition-table entries (not a whole-disk filesystem, number 0): what can
    be left out or resized."""
    return tuple(p for p in disk.partitions if p.number > 0)


def size_text(resize: Resize) -> str:
    """A Resize as the New size field shows it: 20G, +10G, -512M (the largest unit that is
    exact)."""
    sign = ("+" if resize.size >= 0 else "-") if resize.relative else ""
    size = abs(resize.size)
    for unit, shift in (("G", 30), ("M", 20)):
        if size % (1 << shift) == 0:
            return f"{sign}{size >> shift}{unit}"
    return f"{sign}{size >> 10}K"


def _named(part: Partition, names: Iterable[str]) -> bool:
    """The settings name this partition (sda2 or /dev/sda2)."""
    return any(
        n.removeprefix("/dev/") in (part.name, part.path.removeprefix("/dev/")) for n in names
    )


class PartitionRows(Vertical):
    """One disk's partitions, under its row in Fixed Storage; hidden while it is unticked."""

    def __init__(self, disk: Disk, settings: P2VSettings) -> None:
        super().__init__()
        self.disk = disk
        self.ticks: dict[str, Tick] = {}
        self.sizes: dict[str, Input] = {}
        for part in numbered(disk):
            keep = not settings.partitions or _named(part, settings.partitions)
            given = next((r for r in settings.resize if _named(part, (r.partition,))), None)
            self.ticks[part.name] = Tick(part.name, keep, compact=True, classes="pconvert")
            text = size_text(given) if given else ""
            self.sizes[part.name] = Input(text, compact=True, classes="newsize", disabled=not keep)

    def compose(self) -> ComposeResult:
        yield header(
            ("Partition", "pconvert"),
            ("Size", "size"),
            ("Filesystem", "fstype"),
            ("Label", "plabel"),
            ("New size", "newsize"),
        )
        for part in numbered(self.disk):
            yield Horizontal(
                self.ticks[part.name],
                Label(human_size(part.size), classes="size"),
                Label(part.fstype or "-", classes="fstype"),
                Label(part.label or "", classes="plabel"),
                self.sizes[part.name],
                classes="row",
            )

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        """A partition left out has no new size (the field greyed, and skipped by Tab)."""
        for name, box in self.ticks.items():
            if box is event.checkbox:
                self.sizes[name].disabled = not box.value

    def kept(self) -> dict[str, bool]:
        return {name: box.value for name, box in self.ticks.items()}

    def texts(self) -> dict[str, str]:
        return {name: field.value for name, field in self.sizes.items()}


def parse_new_size(name: str, text: str) -> Resize | str:
    """The New size field of partition name, through p2v.resize's own parser; or a line
    saying what is wrong with it."""
    text = text.strip()
    if any(c in text for c in ':,"'):  # would end the partition, the value or the word
        return f"{name}: the new size {text} is not a size such as 20G, 512M, +10G or -2G."
    word = f"p2v.resize={name}:{text}"
    try:
        (resize,) = parse_cmdline(f'"{word}"').resize
    except UsageError as exc:
        return f"{name}: the new size {text}: {exc.message.removeprefix(word + ': ')}."
    return resize


def partition_choices(
    disks: Sequence[Disk], kept: Mapping[str, bool], texts: Mapping[str, str]
) -> tuple[tuple[str, ...], tuple[Resize, ...]] | str:
    """settings.partitions and settings.resize for the converted disks, from each partition's
    Convert tick and New size text (by partition name); or a one-line reason to refuse.

    The partitions are () when every one is kept (p2v.partitions' default: all); a partition
    left out has no resize."""
    chosen: list[str] = []
    resizes: list[Resize] = []
    for disk in disks:
        parts = [p.name for p in numbered(disk)]
        keep = [name for name in parts if kept.get(name, True)]
        if parts and not keep:
            return f"{disk.name}: tick at least one of its partitions, or untick the disk."
        chosen += keep
        for name in keep:
            if texts.get(name, "").strip():
                resize = parse_new_size(name, texts[name])
                if isinstance(resize, str):
                    return resize
                resizes.append(resize)
    every = [p.name for d in disks for p in numbered(d)]
    partitions = tuple(chosen) if len(chosen) < len(every) else ()
    try:
        # 0 bytes used: no floor under a shrink (the client checks that against the data).
        layouts(disks, partitions, resizes, used=dict.fromkeys(every, 0))
    except UsageError as exc:
        # "p2v.resize=sda2: sda2: xfs cannot be shrunk": the line without the option.
        message = exc.message
        return (message.partition(": ")[2] if message.startswith("p2v.") else message) + "."
    return partitions, tuple(resizes)
