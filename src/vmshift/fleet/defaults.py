"""The distributed runs' default settings, apart from the modules that use them (those import
Celery and redis; the CLI's option parsing, run by every `vmshift` command, must not)."""

from __future__ import annotations

QUEUE = "vmshift.plans"  # the Celery queue of the guests' tasks
VISIBILITY_TIMEOUT = 12 * 3600.0  # seconds: longer than any conversion
DEFAULT_TTL = 30.0  # seconds a lease lives without a renewal
