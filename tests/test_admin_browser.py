"""The operator's page in a real browser: headless Chromium (Debian's, installed when missing:
tests/chromium.py) driven by selenium against gunicorn, while a dispatcher sends to a fake
provider with latency. Signs in with an API key, watches a send's progress bar move with
the numbers the database holds, cancels it, downloads its failed numbers, checks the
overview against the database and the pages at a phone's width, and saves a screenshot of
each page under tests/artifacts/."""

import csv
import threading
import time

import pytest
import requests

from messaging import dispatch
from tests.chromium import ensure_chromium
from tests.conftest import ROOT, gunicorn_server, rows
from tests.test_dispatch import SlowProvider, config_for, numbers, wait_until

ARTIFACTS = ROOT / "tests" / "artifacts"
RECIPIENTS = 1000  # 40 batches of 25 at 0.25 s each: about 10 s of dispatching
PHONE_WIDTH = 375


@pytest.fixture(scope="session")
def chromium():
    found = ensure_chromium()
    if found.browser is None:
        pytest.skip(f"no headless Chromium for the browser test: {found.reason}")
    return found


@pytest.fixture
def browser(chromium, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium.browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(executable_path=chromium.driver), options=options)
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    yield driver
    driver.quit()


def apikey(config: dict) -> dict:
    config["authentication"] = {"service": "apikey", "enabled": True}
    return config


def bar_of(driver) -> dict[str, int] | None:
    """The first progress bar's numbers on the current page (None while it reloads)."""
    data = driver.execute_script(
        "const bar = document.querySelector('svg.bar');"
        "return bar && document.readyState === 'complete' ? Object.assign({}, bar.dataset) : null;"
    )
    return {state: int(value) for state, value in data.items()} if data else None


def handed_over(db, ref: str) -> int:
    """Recipients of a send whose sms row is written (sent, delivered or failed)."""
    return rows(db, "SELECT count(*) FROM sms WHERE sendlogid = %s", int(ref))[0][0]


def shoot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


@pytest.fixture
def config():
    fake = SlowProvider(latency=0.25)
    yield apikey(config_for(fake.url, maxBatchSize=25, maxConcurrentRequests=1))
    fake.stop()


@pytest.fixture
def base(chromium, config, database_url, db, tmp_path):
    """gunicorn serving `config`; set up before the browser, so stopped after it (a browser
    left open holds idle connections that keep gunicorn's workers from stopping)."""
    with gunicorn_server(config, database_url, tmp_path) as url:
        yield url


# The fixtures in the order they are set up: the browser last, so it is closed first.
def test_the_operator_watches_cancels_and_downloads_a_send_in_a_browser(
    config, base, browser, make_app, db
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    app = make_app(config)
    with db.cursor() as cur:
        cur.execute("TRUNCATE api_keys RESTART IDENTITY")
        cur.execute("INSERT INTO optouts VALUES ('27831111111', 'test', now())")
    created = app.test_cli_runner().invoke(args=["api-key", "create", "ops", "--admin"])
    key = created.stdout.strip()
    dispatcher = dispatch.Dispatcher(app.extensions["messaging"], concurrency=1)
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    try:
        answer = requests.post(
            f"{base}/sendsms",
            json={"message": "Water off at 10:00", "msisdns": numbers(RECIPIENTS)},
            headers={"X-API-Key": key, "Prefer": "respond-async"},
            timeout=10,
        )
        ref = answer.json()["refNumber"]
        thread.start()

        # Sign in through the form; the browser keeps the cookie.
        browser.get(f"{base}/admin/sends/{ref}")
        assert "/admin/sign-in" in browser.current_url
        browser.find_element(By.ID, "api_key").send_keys(key + Keys.ENTER)
        wait_until(lambda: f"/admin/sends/{ref}" in browser.current_url)

        # While it dispatches, the page refreshes itself...
        browser.execute_script("window.seenBefore = true;")
        wait_until(lambda: browser.execute_script("return window.seenBefore === undefined"))
        # ... and its bar moves, each reading between the database's counts just before
        # the page was asked for and just after it was shown.
        readings = []
        while len(readings) < 3:
            before = handed_over(db, ref)
            browser.refresh()
            bar = wait_until(lambda: bar_of(browser))
            after = handed_over(db, ref)
            done = bar["sent"] + bar["delivered"] + bar["failed"]
            assert before <= done <= after, (before, bar, after)
            assert done + bar["queued"] == RECIPIENTS
            if not readings or done > readings[-1]:
                readings.append(done)
            time.sleep(0.5)
        assert readings == sorted(readings) and readings[-1] < RECIPIENTS, readings
        assert browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        shoot(browser, "admin-send-dispatching")

        # Cancel: the rest fails as cancelled, and the page says so.
        browser.find_element(By.XPATH, "//button[text()='Cancel this send']").click()
        wait_until(lambda: "cancelled=1" in browser.current_url)
        assert "Cancelled:" in browser.find_element(By.CSS_SELECTOR, "p.note").text
        wait_until(
            lambda: (
                rows(db, "SELECT status FROM sendlog WHERE id = %s", int(ref)) == [("cancelled",)]
            )
        )
        browser.refresh()
        (counters,) = rows(
            db, "SELECT sent, delivered, failed FROM sendlog WHERE id = %s", int(ref)
        )
        bar = wait_until(lambda: bar_of(browser))
        assert (bar["sent"], bar["delivered"], bar["failed"], bar["queued"]) == (*counters, 0)
        assert counters[2] > 0 and counters[0] > 0  # some went out, the rest were cancelled
        assert not browser.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        shoot(browser, "admin-send")

        # The failed numbers download as CSV, exactly the database's failed messages.
        browser.find_element(By.LINK_TEXT, "Download failed numbers (CSV)").click()
        saved = wait_until(lambda: list(browser.downloads.glob("*.csv")))
        lines = list(csv.reader(saved[0].open(encoding="utf-8")))
        failed = rows(
            db,
            "SELECT msisdn, errorcode, reason, failurekind FROM sms "
            "WHERE sendlogid = %s AND status = 'failed' ORDER BY id",
            int(ref),
        )
        assert lines[0] == ["msisdn", "code", "reason", "failure kind"]
        assert [tuple(line) for line in lines[1:]] == [
            tuple(value or "" for value in row) for row in failed
        ]
        assert {line[2] for line in lines[1:]} == {"cancelled"}

        # The overview's numbers are the database's.
        browser.get(f"{base}/admin")
        page = browser.page_source
        events = dict(rows(db, "SELECT status, count(*) FROM sms_events GROUP BY 1"))
        caption = browser.find_element(By.CSS_SELECTOR, "figure.chart figcaption").text
        expected = ", ".join(f"{s} {events.get(s, 0):,}" for s in ("sent", "delivered", "failed"))
        assert caption.startswith(f"Last 24 hours, per hour: {expected}")
        assert '<p class="big">1</p>' in page  # one opt-out
        (carried,) = rows(
            db, "SELECT count(*) FROM sms WHERE providerid IS NOT NULL OR errorcode <> ''"
        )
        provider_row = browser.find_element(By.XPATH, "//th[text()='Clickatell']/..").text
        assert provider_row.startswith(f"Clickatell {carried[0]:,} ")
        shoot(browser, "admin-overview")
        browser.get(f"{base}/admin/sends")
        shoot(browser, "admin-sends")

        # A keyboard reaches the skip link first; a phone's width needs no sideways scroll.
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        focused = browser.switch_to.active_element
        assert focused.text == "Skip to content"
        browser.set_window_size(PHONE_WIDTH, 800)
        for name, path in (
            ("overview", "/admin"),
            ("send", f"/admin/sends/{ref}"),
            ("sends", "/admin/sends"),
        ):
            browser.get(base + path)
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= PHONE_WIDTH, (path, width)
            shoot(browser, f"admin-{name}-phone")
    finally:
        dispatcher.stop.set()
        if thread.is_alive():
            thread.join(timeout=30)


def test_artifacts_are_not_committed():
    assert "tests/artifacts/" in (ROOT / ".gitignore").read_text().splitlines()
