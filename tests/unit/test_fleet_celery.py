"""The distributed task's guards (fleet/celery_app.py deliver()): a second delivery while the
guest's owner is alive converts nothing, a full limit makes a guest wait and say for which,
and a dead worker's guest is taken over with --resume. A real redis-server; the conversion
is a fake python that prints machine-readable lines and waits to be released."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.exceptions import Retry  # type: ignore[import-untyped]

from tests.redis_fixture import RedisServer, redis_server
from vmshift.errors import ConfigError
from vmshift.fleet.celery_app import TASK, Delivery, WorkerSettings, deliver, make_app
from vmshift.fleet.leases import Leases
from vmshift.fleet.plan import load_plan
from vmshift.fleet.state import COPYING, DONE, FAILED, INTERRUPTED, QUEUED
from vmshift.fleet.state_redis import RedisState

__all__ = ["redis_server"]

FAKE = """#!/bin/sh
# The conversion child: first the runner's python -c stub (run by the real python), then
# `-m vmshift.cli.main convert ...`, recorded and held until the test releases it.
if [ "$1" = "-c" ]; then exec {python} "$@"; fi
echo "$*" >> {runs}
echo "stage copy 2.0 Copying disk 1/1"
while [ ! -e {release} ]; do sleep 0.05; done
echo "copy sda 10 10 100%"
exit $(cat {exitcode} 2>/dev/null || echo 0)
"""


@pytest.fixture
def setup(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Path, WorkerSettings]]:
    fake = tmp_path / "python"
    files = {f: tmp_path / f for f in ("runs", "release", "exitcode")}
    fake.write_text(FAKE.format(python=sys.executable, **files))
    fake.chmod(0o755)
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[defaults]\noutput = "local"\n'
        f'output-storage = "{tmp_path}"\n'
        "[limits]\nper-source-host = 1\n"
        '[[guest]]\ninput = "disk"\nargs = ["one.img"]\nsource-host = "esxi-a"\n'
        '[[guest]]\ninput = "disk"\nargs = ["two.img"]\nsource-host = "esxi-a"\n'
    )
    settings = WorkerSettings(broker=redis_server.url, python=str(fake), lease_ttl=30)
    state = RedisState(redis_server.url, load_plan(plan).id)
    state.client.flushdb()
    state.register(["one", "two"])
    state.close()
    yield plan, settings


def runs(tmp_path: Path) -> list[str]:
    path = tmp_path / "runs"
    return path.read_text().splitlines() if path.exists() else []


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_second_delivery_while_the_owner_lives_converts_nothing(
    tmp_path: Path, setup: tuple[Path, WorkerSettings]
) -> None:
    plan_path, settings = setup
    text = plan_path.read_text()
    first: list[Delivery] = []
    worker = threading.Thread(
        target=lambda: first.append(deliver(settings, str(plan_path), text, "one"))
    )
    worker.start()
    wait_for(lambda: len(runs(tmp_path)) == 1)
    state = RedisState(settings.broker, load_plan(plan_path).id)
    wait_for(lambda: state.guest("one").stage == COPYING)

    again = deliver(settings, str(plan_path), text, "one")
    assert again.stage is None and again.retry_in == settings.lease_ttl + 1
    assert again.why.startswith("converted by ")
    # The other guest has the same source host, whose one place "one" holds.
    waiting = deliver(settings, str(plan_path), text, "two")
    assert waiting.retry_in == settings.wait_countdown
    record = state.guest("two")
    assert record.stage == QUEUED
    assert record.message == "waiting for the per-source-host limit (esxi-a: 1 at once)"

    (tmp_path / "release").touch()
    worker.join(30)
    assert first == [Delivery(stage=DONE)]
    late = deliver(settings, str(plan_path), text, "one")  # a re-delivery after the end
    assert late == Delivery(why="nothing left to do")
    assert len(runs(tmp_path)) == 1 and "--resume" not in runs(tmp_path)[0]
    assert [s for _t, s in state.history("one")].count(DONE) == 1
    leases = Leases(state.client, state.prefix)
    assert leases.owner("one") is None
    assert leases.holders(["limit:total", "limit:source-host:esxi-a"]) == [[], []]
    state.close()


def test_a_dead_workers_guest_is_taken_over_and_resumed(
    tmp_path: Path, setup: tuple[Path, WorkerSettings]
) -> None:
    plan_path, settings = setup
    state = RedisState(settings.broker, load_plan(plan_path).id)
    # A worker started it and died: its record says copying, its leases ran out.
    state.update("one", stage=COPYING, attempts=1, worker="gone:1")
    (tmp_path / "release").touch()
    done = deliver(settings, str(plan_path), plan_path.read_text(), "one")
    assert done == Delivery(stage=DONE)
    assert len(runs(tmp_path)) == 1 and "--resume" in runs(tmp_path)[0].split()
    stages = [s for _t, s in state.history("one")]
    assert stages[stages.index(INTERRUPTED) - 1] == COPYING and stages[-1] == DONE
    assert "gone:1 stopped under it; taken over by" in "\n".join(state.log_tail("one"))
    assert state.guest("one").attempts == 2
    state.close()


def test_the_task_retries_while_owned_and_records_a_plan_it_cannot_read(
    tmp_path: Path, setup: tuple[Path, WorkerSettings]
) -> None:
    plan_path, settings = setup
    task = make_app(settings).tasks[TASK]
    state = RedisState(settings.broker, load_plan(plan_path).id)
    Leases(state.client, state.prefix).acquire_owner("one", "elsewhere:1:x")
    with pytest.raises(Retry):
        task(str(plan_path), plan_path.read_text(), "one")
    assert runs(tmp_path) == []
    with pytest.raises(ConfigError, match="not a valid TOML plan"):
        task(str(plan_path), "[limits", "two")
    record = state.guest("two")
    assert record.stage == FAILED
    assert record.error is not None and "not a valid TOML plan" in record.error
    state.close()


def test_a_failed_conversion_is_not_run_again_by_its_own_tasks_second_delivery(
    tmp_path: Path, setup: tuple[Path, WorkerSettings]
) -> None:
    plan_path, settings = setup
    text = plan_path.read_text()
    (tmp_path / "release").touch()
    (tmp_path / "exitcode").write_text("1\n")
    assert deliver(settings, str(plan_path), text, "one", task_id="t1").stage == FAILED
    again = deliver(settings, str(plan_path), text, "one", task_id="t1")
    assert again == Delivery(why="its conversion failed already")
    assert len(runs(tmp_path)) == 1
    # The plan run again: a new task, a new attempt (with --resume, as it had started).
    (tmp_path / "exitcode").write_text("0\n")
    assert deliver(settings, str(plan_path), text, "one", task_id="t2").stage == DONE
    assert len(runs(tmp_path)) == 2 and "--resume" in runs(tmp_path)[1].split()
