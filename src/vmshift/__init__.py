"""vmshift: move virtual and physical machines onto KVM."""

from __future__ import annotations

__version__ = "0.1.0"
