"""Pieces the P2V console screens share: a keyboard-driven form and the per-disk progress.

Everything here works without a mouse on an 80x24 text console or a serial line: Tab and
Shift+Tab (or the Down and Up arrows) move between controls, Enter presses a button, Space or
Enter ticks a checkbox.
"""

from __future__ import annotations

from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Label

from vmshift.cli.render import human_size

MIB = 1024 * 1024


class Form(VerticalScroll, can_focus=False, inherit_bindings=False):
    """A scrolling column of controls where Up and Down move the focus, not the view.

    (A plain VerticalScroll takes the arrows for itself; here the focused control is scrolled
    into view instead, as on virt-p2v's dialogs.)
    """

    BINDINGS = [
        Binding("down", "app.focus_next", "Next field", show=False),
        Binding("up", "app.focus_previous", "Previous field", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
    ]


class Tick(Checkbox):
    """A checkbox drawn `[X]` or `[ ]`: its state readable without colours.

    (textual's own draws an X either way and tells them apart by colour alone.)
    """

    @property
    def _button(self) -> Content:
        return Content.assemble(
            "[", ("X" if self.value else " ", self.get_visual_style("toggle--button")), "]"
        )


class ButtonRow(Horizontal):
    """A row of buttons where Left and Right move between them."""

    BINDINGS = [
        Binding("right", "app.focus_next", "Next button", show=False),
        Binding("left", "app.focus_previous", "Previous button", show=False),
    ]

    def __init__(self, *children: Widget) -> None:
        super().__init__(*children, classes="buttons")


def button(label: str, id: str, *, disabled: bool = False, classes: str | None = None) -> Button:
    """A one-line button without the pressed flash (a redraw a serial line pays for, and
    textual ignores a second Enter while it lasts)."""
    b = Button(label, id=id, disabled=disabled, classes=classes, compact=True)
    b.active_effect_duration = 0
    return b


def field(label: str, control: Widget, *, label_width: int = 22) -> Horizontal:
    """One labelled row of a form: `Label: [control]`."""
    caption = Label(label, classes="caption")
    caption.styles.width = label_width
    return Horizontal(caption, control, classes="field")


def header(*columns: tuple[str, str]) -> Horizontal:
    """A table's column titles (title, class), each as wide as the cells of its class."""
    return Horizontal(*(Label(title, classes=cls) for title, cls in columns), classes="head")


class DiskBar(Widget):
    """A disk's transfer: `██████░░░░░░  42%`, in block glyphs of the PC character set (the
    Linux console's fonts have them).

    (textual's ProgressBar draws the rest of its track with the same glyph as the done part,
    told apart by colour alone, and that glyph, U+2501, is not in the PC character set.)
    """

    DEFAULT_CSS = "DiskBar { height: 1; width: 18; }"

    def __init__(self, *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.done = 0
        self.total = 0

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total > 0 else 0.0

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.refresh()

    def render(self) -> str:
        width = max(self.size.width - 5, 1)
        filled = int(self.fraction * width)
        return "█" * filled + "░" * (width - filled) + f"{int(self.fraction * 100):4d}%"


def progress_text(done: int, total: int, *, rate: float | None = None, phase: str = "copy") -> str:
    """`1.5 GiB / 4.0 GiB  80.0 MiB/s  ETA 0:00:32` (and the phase when not the copy)."""
    text = f"{human_size(done)} / {human_size(total)}"
    if rate:
        text += f"  {human_size(int(rate))}/s"
        if total > done:
            seconds = int((total - done) / rate)
            text += f"  ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text if phase == "copy" else f"{phase}: {text}"
