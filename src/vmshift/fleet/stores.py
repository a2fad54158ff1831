"""Which store holds a plan's state: SQLite here (the default), Redis for a distributed run."""

from __future__ import annotations

from pathlib import Path

from vmshift.errors import ConfigError
from vmshift.fleet.plan import Plan
from vmshift.fleet.state import PlanState


def default_state_file(plan: Plan, data_home: Path) -> Path:
    """Where a plan's SQLite state lives unless --state names a file."""
    return data_home / "vmshift" / "plans" / f"{plan.id}.sqlite"


def open_state(
    plan: Plan, *, state_file: Path | None, broker: str | None, data_home: Path
) -> PlanState:
    """The plan's state: in Redis when a broker is given (every conversion host sees it),
    else in the SQLite file state_file (default: under data_home, the user's data directory)."""
    if broker is not None:
        from vmshift.fleet.state_redis import RedisState

        return RedisState(broker, plan.id)
    from vmshift.fleet.state_sqlite import SqliteState

    path = state_file if state_file is not None else default_state_file(plan, data_home)
    if state_file is None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{path.parent}: cannot create it: {exc.strerror}") from exc
    return SqliteState(path)
