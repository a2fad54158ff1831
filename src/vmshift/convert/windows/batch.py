"""Putting guest strings into the batch files the first boot runs."""

from __future__ import annotations


def literal(text: str) -> str:
    """`text` as literal characters in a batch file line.

    % starts a variable even inside quotes, so it is doubled; a control character (a newline
    in a registry string) would split the line, so it becomes a space.
    """
    printable = "".join(c if c >= " " else " " for c in text)
    return printable.replace("%", "%%")
