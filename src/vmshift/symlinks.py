"""Following symlinks inside a tree that is not the host's own (a guest image, a cpio archive)."""

from __future__ import annotations

from collections.abc import Callable

MAX_HOPS = 40  # symlinks followed before a path counts as a loop


def follow(path: str, readlink: Callable[[str], str | None]) -> str | None:
    """path (relative to the tree's root) with every symlink on the way followed, as the tree's
    own kernel would; readlink(p) gives the target of p if p is a symlink, else None. Absolute
    targets start again from the tree's root; None after MAX_HOPS links (a loop)."""
    pending = path.split("/")
    done: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            done = done[:-1]
            continue
        target = readlink("/".join([*done, part]))
        if target is None:
            done.append(part)
            continue
        hops += 1
        if hops > MAX_HOPS:
            return None
        if target.startswith("/"):
            done = []
        pending = target.split("/") + pending
    return "/".join(done)
