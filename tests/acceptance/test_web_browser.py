"""The status page in a real headless browser: Debian's chromium driven by Playwright (its
own browsers are never downloaded). Log in, watch a job appear without a reload, retry a
failed job, pause a lane and see ``spoolq status`` agree; screenshots are kept as
artifacts (in the test's directory, and in ``$SPOOLQ_ARTIFACTS`` when set)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.webtools import Web, start_http
from tests.conftest import DaemonProcess, Env

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no chromium to drive: apt-get install chromium (.ci/run does)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield b
        finally:
            b.close()


def keep(page: Any, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("SPOOLQ_ARTIFACTS"):
        out = Path(os.environ["SPOOLQ_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / name)
    print(f"screenshot: {shot}")
    return shot


def log_in(page: Any, web: Web) -> None:
    page.goto(web.url + "/")
    page.fill("#token", web.token)
    page.click("button[type=submit]")
    page.wait_for_selector("table.lanes")


def job_row(page: Any, job: str) -> Any:
    return page.locator(f"section:has(h2:text('Recent jobs')) tr[data-job='{job}']")


def test_the_page_shows_and_steers_the_queue(env: Env, browser: Any, tmp_path: Path) -> None:
    env.write_config("[lanes.warehouse]\nconcurrency = 1\n")
    d, web = start_http(env)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    try:
        log_in(page, web)
        lanes = page.locator("table.lanes tr[data-lane]")
        sync_api.expect(lanes).to_have_count(2)  # default, and warehouse from the config

        # a trigger published now shows within 2 s, without a reload
        flag = env.root / "fixed"
        cmd = f"test -e {flag} && echo loaded sales || (echo 'sales.csv missing' >&2; exit 3)"
        trigger = env.publish(json.dumps({"lane": "warehouse", "command": cmd}), "sales.trigger")
        job = queued(d, trigger)
        row = job_row(page, job)
        sync_api.expect(row).to_be_visible(timeout=2000)
        sync_api.expect(row.locator(".state")).to_have_text("failed", timeout=5000)
        sync_api.expect(row.locator("td.cmd")).to_contain_text("echo loaded sales")

        # retry the failed job from the page: it runs again and succeeds
        flag.touch()
        row.locator("button", has_text="Retry").click()
        d.wait_for("succeeded", job=job)
        sync_api.expect(row.locator(".state")).to_have_text("succeeded", timeout=2000)

        # the job's page: attempts and the log
        page.click(f"a[href='/jobs/{job}']")
        sync_api.expect(page.locator("table.attempts tbody tr")).to_have_count(2)
        sync_api.expect(page.locator("#log")).to_contain_text("loaded sales", timeout=2000)
        keep(page, tmp_path, "job-page.png")
        page.go_back()

        # pause a lane from the page: spoolq status agrees
        lane = page.locator("tr[data-lane='warehouse']")
        lane.locator("button", has_text="Pause").click()
        sync_api.expect(lane.locator(".badge.paused")).to_be_visible(timeout=2000)
        status = json.loads(env.cli("status", "--json", check=True).stdout)
        assert {ln["name"]: ln["paused"] for ln in status["lanes"]} == {
            "default": False,
            "warehouse": True,
        }
        waiting = queued(d, env.publish('{"lane": "warehouse", "command": "true"}', "w.trigger"))
        sync_api.expect(job_row(page, waiting).locator(".state")).to_have_text("queued")
        env.publish("sleep 30", "long.trigger")
        sync_api.expect(page.locator("section:has(h2:text('Running')) td.cmd")).to_have_text(
            "sleep 30", timeout=2000
        )
        keep(page, tmp_path, "status-page.png")

        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        phone.context.add_cookies(page.context.cookies())
        phone.goto(web.url + "/")
        sync_api.expect(phone.locator("tr[data-lane='warehouse'] .badge.paused")).to_be_visible()
        keep(phone, tmp_path, "status-page-phone.png")
    finally:
        page.close()
        web.close()


def test_without_the_token_the_page_asks_for_it(env: Env, browser: Any) -> None:
    _d, web = start_http(env)
    page = browser.new_page()
    try:
        response = page.goto(web.url + "/?lane=default")
        assert response is not None and response.status == 401
        page.fill("#token", "not the token")
        page.click("button[type=submit]")
        sync_api.expect(page.locator(".error")).to_contain_text("not the token")
        page.fill("#token", web.token)
        page.click("button[type=submit]")
        # back where it was going
        sync_api.expect(page.locator("#filter-lane")).to_have_value("default")
    finally:
        page.close()
        web.close()


def queued(d: DaemonProcess, trigger: Path) -> str:
    return str(d.wait_for("queued", trigger=str(trigger))[0]["job"])
