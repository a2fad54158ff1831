"""The `vmshift convert --report` document (docs/convert.md): what was converted and every
change made, built from a ConversionResult so any caller (the CLI, a fleet worker) writes the
same thing."""

from __future__ import annotations

import dataclasses
from typing import Any

from vmshift.pipeline import ConversionResult

REPORT_SCHEMA = "vmshift-convert-report/1"


def conversion_report(result: ConversionResult, line: str) -> dict[str, Any]:
    """The report's JSON document; line is the verdict printed last."""
    caps = result.caps
    doc: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "guest": result.target.name,
        "source": {
            "name": result.vm.name,
            "origin": result.vm.origin,
            "file": result.vm.source_file,
            "warnings": list(result.vm.warnings),
            # Remote sources only: bytes fetched over the network per disk.
            "fetched_bytes": dict(result.fetched),
        },
        "os": {
            "root": result.os.root,
            "type": result.os.type,
            "distro": result.os.distro,
            "product_name": result.os.product_name,
            "version": f"{result.os.major_version}.{result.os.minor_version}",
        },
        "devices": {
            "block_bus": caps.block_bus,
            "net_model": caps.net_model,
            "video": caps.video,
            "machine": caps.machine,
            "firmware": str(caps.firmware),
            "virtio": caps.virtio,
        },
        "drivers_installed": list(caps.drivers_installed),
        "changes": [dataclasses.asdict(c) for c in caps.changes],
        "warnings": list(caps.warnings),
        # Each conversion step's wall time in seconds, in the order the steps ran.
        "timings": [dataclasses.asdict(t) for t in caps.timings],
        "target": {
            "description": result.target.description,
            "files": [str(f) for f in result.target.files],
            "warnings": list(result.target.warnings),
        },
        # Whether every output was read back and compared with its converted disk.
        "copy": {"verified": result.copy_verified},
        "verdict": line,
    }
    boot = result.boot
    if boot is not None:
        # --verify-boot: what the check saw, and how it ran.
        doc["boot"] = {
            "ok": boot.ok,
            "outcome": str(boot.outcome),
            "seconds": round(boot.seconds, 1),
            "accelerator": boot.accelerator,
            "static_addresses": dict(boot.addresses),
            "console_log": str(boot.console_log) if boot.console_log else None,
            "line": boot.line(result.target.name),
        }
    return doc
