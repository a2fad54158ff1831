"""`vmshift plan serve`: the dashboard, run as a user would, read by a real headless Chromium.

No conversion runs: the test writes the plan's SQLite state itself (guests at several stages,
log lines), starts `vmshift plan serve` on a free port, and drives Debian's /usr/bin/chromium
through Playwright (its own browser download is not needed). The screenshot is saved in the
test's tmp_path (the suite has no other artefacts directory).
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from tests.conftest import vmshift
from vmshift.fleet.plan import plan_id
from vmshift.fleet.state import COPYING, DONE, FAILED
from vmshift.fleet.state_sqlite import SqliteState

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
GiB = 1 << 30
MiB = 1 << 20

PLAN = """
[defaults]
output = "local"
output-storage = "out"

[[guest]]
input = "disk"
args = ["web01.qcow2"]

[[guest]]
input = "disk"
args = ["db01.qcow2"]

[[guest]]
input = "disk"
args = ["mail01.qcow2"]

[[guest]]
input = "disk"
args = ["later.qcow2"]
"""
# Untrusted text from a guest and a conversion: the page must show it as text, run none of it.
ERROR = 'disk read failed: <script>window.pwned = 1</script> & "quotes" <b>bold</b>'
ODD = 'lab/<img src=x onerror="window.pwned=2">&amp;'  # a guest of a [[source]], say


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]
    state: SqliteState
    plan: Path

    @property
    def plan_id(self) -> str:
        return plan_id(self.plan)


def _fill(state: SqliteState) -> None:
    state.register(["web01", "db01", "mail01", ODD])
    state.update(
        "web01", stage=COPYING, message="Copying disk 1/1", done=4 * GiB, total=10 * GiB,
        rate=50 * MiB, attempts=1, worker="conv1:1234", started_at=time.time() - 300,
    )  # fmt: skip
    state.update(
        "db01", stage=FAILED, error=ERROR, attempts=2, worker="conv2:99", started_at=1000.0,
        finished_at=1090.0,
    )  # fmt: skip
    state.update(
        "mail01", stage=DONE, done=2 * GiB, total=2 * GiB, attempts=1, worker="conv1:1234",
        started_at=1000.0, finished_at=1125.0,
    )  # fmt: skip
    for line in ("Opening the source web01.qcow2", "Copying disk 1/1 to out/web01-sda"):
        state.log("web01", line)
    state.log("db01", "Opening the source db01.qcow2")
    state.log("db01", f"vmshift: error: {ERROR}")
    state.log(ODD, "<script>window.pwned = 3</script> queued behind web01")


def _read_url(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    match = re.search(r"on (http://\S+/) ", line)
    if match is None:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"no address from vmshift plan serve: {line!r} {err!r}")
    return match.group(1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    state = SqliteState(tmp_path / "state.sqlite")
    _fill(state)
    exe = Path(sys.executable).parent / "vmshift"
    proc = subprocess.Popen(
        [str(exe), "plan", "serve", str(plan), "--state", str(tmp_path / "state.sqlite"),
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield Served(_read_url(proc), proc, state, plan)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        state.close()


def _request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_api_answers_reads_only(served: Served) -> None:
    before = served.state.guests()
    status, headers, body = _request(served.url + "api/plan")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["plan"]["path"] == str(served.plan.resolve())
    assert data["plan"]["id"].startswith("plan-")
    guests = {g["name"]: g for g in data["guests"]}
    # The state's guests in their order, then the plan's guest no run has registered yet.
    assert [g["name"] for g in data["guests"]] == ["web01", "db01", "mail01", ODD, "later"]
    assert guests["web01"]["done"] == 4 * GiB and guests["web01"]["stage"] == COPYING
    assert guests["db01"]["error"] == ERROR
    assert guests["later"]["stage"] == "queued"
    assert data["counts"]["queued"] == 2 and data["counts"]["failed"] == 1

    quoted = urllib.parse.quote(ODD, safe="")
    status, _, body = _request(f"{served.url}api/guests/{quoted}/log")
    assert status == 200
    assert json.loads(body) == {
        "name": ODD,
        "lines": ["<script>window.pwned = 3</script> queued behind web01"],
    }
    status, _, body = _request(f"{served.url}api/guests/web01/log?lines=1")
    assert json.loads(body)["lines"] == ["Copying disk 1/1 to out/web01-sda"]

    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = _request(served.url + "api/plan", method=method)
        assert (status, headers["Allow"]) == (405, "GET, HEAD"), method
    for path in ("nope", "api/plan/x", "api/guests/nosuch/log", "api/guests/web01", "index.html"):
        status, _, _ = _request(served.url + path)
        assert status == 404, path
    # Served on 127.0.0.1, it answers only to a loopback Host (no DNS rebinding).
    status, _, _ = _request(served.url + "api/plan", headers={"Host": "evil.example:8047"})
    assert status == 403
    # Nothing was written: not even the plan's guest it shows as queued was registered.
    assert served.state.guests() == before
    assert served.state.log_tail("web01") == [
        "Opening the source web01.qcow2", "Copying disk 1/1 to out/web01-sda",
    ]  # fmt: skip


def test_sigterm_stops_it_in_one_line(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    out, err = served.proc.communicate(timeout=60)
    assert served.proc.returncode == 0, err
    # (its first line, the address, was read by the fixture)
    assert out.splitlines() == [f"vmshift: stopped serving plan {served.plan_id} (SIGTERM)"]
    assert err == ""


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    missing = vmshift(["plan", "serve", tmp_path / "nope.toml", "--port", "0"], timeout=60)
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"vmshift: error: {tmp_path / 'nope.toml'}: cannot read")
    assert "Traceback" not in missing.stderr

    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    state = ["--state", str(tmp_path / "state.sqlite")]
    bad_port = vmshift(["plan", "serve", plan, *state, "--port", "70000"], timeout=60)
    assert bad_port.returncode == 2
    assert bad_port.stderr.startswith("vmshift: error: --port 70000: ")
    # 192.0.2.1 (TEST-NET-1) is no address of this machine.
    elsewhere = vmshift(["plan", "serve", plan, *state, "--bind", "192.0.2.1"], timeout=60)
    assert elsewhere.returncode == 1
    assert elsewhere.stderr.startswith("vmshift: error: --bind 192.0.2.1 --port 8047: cannot ")
    assert "Traceback" not in elsewhere.stderr


def test_page_in_chromium(served: Served, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package drives this test)")
    expect.set_options(timeout=20_000)  # a shared 2-core machine: waiting, not timing
    shot = tmp_path / "dashboard.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on(
                "console", lambda msg: problems.append(msg.text) if msg.type == "error" else None
            )
            page.goto(served.url)
            _first_look(page, served)
            _live(page, served)
            page.screenshot(path=str(shot), full_page=True, animations="disabled")
            # No script of the page failed, and the CSP refused nothing.
            assert problems == []
        finally:
            browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _row(page: Page, name: str) -> Locator:
    exact = re.compile("^" + re.escape(name) + "$")
    return page.locator("tr.guest").filter(has=page.locator("td.name", has_text=exact))


def _first_look(page: Page, served: Served) -> None:
    expect(page.locator("#plan-id")).to_have_text(served.plan_id)
    expect(page.locator("#plan-path")).to_have_text(str(served.plan.resolve()))
    expect(page.locator("tr.guest td.name")).to_have_text(["web01", "db01", "mail01", ODD, "later"])
    expect(page.locator("#counts .count")).to_have_text(
        ["total 5", "queued 2", "copying 1", "done 1", "failed 1"]
    )

    web = _row(page, "web01")
    expect(web.locator(".badge")).to_have_text("copying")
    expect(web.locator(".message")).to_have_text("Copying disk 1/1")
    expect(web.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "40")
    expect(web.locator(".pct")).to_have_text("40 %")
    expect(web.locator(".bytes")).to_have_text("4.0 GiB of 10.0 GiB \u00b7 2m 03s left")
    expect(web.locator("td.rate")).to_have_text("50.0 MiB/s")
    expect(web.locator("td.attempts")).to_have_text("1")
    expect(web.locator("td.worker")).to_have_text("conv1:1234")

    db = _row(page, "db01")
    expect(db.locator(".badge")).to_have_text("failed")
    expect(db.locator("td.error")).to_have_text(ERROR)  # shown literally, markup and all
    expect(db.locator("td.attempts")).to_have_text("2")
    expect(db.locator("td.time")).to_have_text("1m 30s")

    mail = _row(page, "mail01")
    expect(mail.locator(".badge")).to_have_text("done")
    expect(mail.locator(".pct")).to_have_text("100 %")
    expect(mail.locator("td.rate")).to_have_text("\u2013")
    expect(_row(page, "later").locator(".badge")).to_have_text("queued")
    expect(_row(page, ODD)).to_have_count(1)

    # Each stage its colour (the page's style ran under its CSP).
    colours = {
        stage: _row(page, name)
        .locator(".badge")
        .evaluate("e => getComputedStyle(e).backgroundColor")
        for stage, name in (("copying", "web01"), ("failed", "db01"), ("done", "mail01"))
    }
    assert colours == {
        "copying": "rgb(31, 111, 235)", "failed": "rgb(207, 34, 46)", "done": "rgb(26, 127, 55)",
    }  # fmt: skip

    # Nothing from the state became markup or ran.
    assert page.locator("main script, main img, main b").count() == 0
    assert page.evaluate("() => window.pwned") is None

    db.click()
    expect(page.locator("#log-title")).to_have_text("Log of db01")
    expect(page.locator("#log")).to_have_text(
        f"Opening the source db01.qcow2\nvmshift: error: {ERROR}"
    )
    _row(page, ODD).click()  # its name has a slash: the log's URL must quote it
    expect(page.locator("#log-title")).to_have_text(f"Log of {ODD}")
    expect(page.locator("#log")).to_have_text(
        "<script>window.pwned = 3</script> queued behind web01"
    )
    expect(_row(page, ODD)).to_have_class(re.compile(r"\bselected\b"))
    assert page.evaluate("() => window.pwned") is None


def _live(page: Page, served: Served) -> None:
    """The state changes under the open page: it shows the changes without a reload."""
    page.evaluate("() => { window.sameDocument = true; }")
    served.state.update("web01", done=int(7.5 * GiB))
    served.state.update(ODD, stage=DONE, done=GiB, total=GiB, attempts=1, started_at=1000.0,
                        finished_at=1010.0)  # fmt: skip
    served.state.log(ODD, "converted")

    web = _row(page, "web01")
    expect(web.locator(".pct")).to_have_text("75 %")
    expect(web.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "75")
    expect(_row(page, ODD).locator(".badge")).to_have_text("done")
    expect(page.locator("#counts .count")).to_have_text(
        ["total 5", "queued 1", "copying 1", "done 2", "failed 1"]
    )
    expect(page.locator("#log")).to_have_text(
        "<script>window.pwned = 3</script> queued behind web01\nconverted"
    )
    assert page.evaluate("() => window.sameDocument") is True
