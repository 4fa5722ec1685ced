"""The operator's page (GET /admin): every page and permission through the Flask test client,
against a real database: the sign-in cookie with API keys, serviceauth's own cookie, the
own-sends rule, filters and paging, the numbers each page shows, cancel with its CSRF token,
and GET /sends/<ref>/failed.csv."""

import csv
import io
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from messaging import dashboard, signin
from tests.conftest import base_config, rows
from tests.fake_auth import FakeAuthService

NUMBERS = ["0830000001", "0830000002", "0830000009", "0830000019", "0831"]  # *9: refused


def apikey_config(**auth) -> dict:
    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True, **auth}
    return config


def create_key(app, name: str, admin: bool = False) -> str:
    args = ["api-key", "create", name, *(["--admin"] if admin else [])]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def send(client, numbers=NUMBERS, **fields) -> str:
    answer = client.post(
        "/sendsms", json={"message": "Water off at 10:00", "msisdns": numbers, **fields}
    )
    assert answer.status_code in (200, 202), answer.get_data(as_text=True)
    return answer.get_json()["refNumber"]


def text(response) -> str:
    """The page, without the blank space between its tags."""
    return re.sub(r">\s+<", "><", response.get_data(as_text=True))


def csrf_token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def bar_counts(page: str) -> list[dict[str, int]]:
    """The numbers of each progress bar on a page (its data-* attributes)."""
    bars = re.findall(r'<svg class="bar"[^>]*>', page)
    return [
        {state: int(value) for state, value in re.findall(r"data-(\w+)=\"(\d+)\"", bar)}
        for bar in bars
    ]


@pytest.fixture
def keys_app(make_app, db):
    app = make_app(apikey_config())
    with db.cursor() as cur:
        cur.execute("TRUNCATE api_keys RESTART IDENTITY")
    return app


def signed_in(app, key: str, base_url: str = "http://localhost"):
    client = app.test_client()
    answer = client.post("/admin/sign-in", data={"api_key": key}, base_url=base_url)
    assert answer.status_code == 303, text(answer)
    return client


# --- with authentication off ---


def test_the_send_page_shows_the_numbers_the_database_holds(client, db):
    ref = send(client)

    page = text(client.get(f"/admin/sends/{ref}"))

    (counts,) = rows(
        db,
        "SELECT quantity, sent, delivered, failed FROM sendlog WHERE id = %s",
        int(ref),
    )
    assert bar_counts(page) == [
        {"queued": 0, "sent": counts[1], "delivered": counts[2], "failed": counts[3]}
    ]
    assert counts == (4, 2, 0, 2)
    assert 'data-total="failed">2<' in page and 'data-total="quantity">4<' in page
    # Failures by reason, with the provider's code and the failure's kind.
    assert "<td>105</td><td>Invalid destination address</td><td>permanent</td>" in page
    assert '<td class="num">2</td>' in page
    # Every recipient with its status events; the chart with its numbers in a table.
    for number in ("27830000001", "27830000002", "27830000009", "27830000019"):
        assert f'<th scope="row">{number}</th>' in page
    assert page.count("by send") == 4
    assert "Delivery over time as a table" in page and "<polyline" in page
    assert "Download failed numbers (CSV)" in page
    assert "Cancel this send" not in page  # finished: nothing to cancel
    assert '<meta http-equiv="refresh"' not in page


def test_failed_numbers_download_as_csv(client):
    ref = send(client)

    answer = client.get(f"/sends/{ref}/failed.csv")

    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert f'filename="send-{ref}-failed.csv"' in answer.headers["Content-Disposition"]
    assert list(csv.reader(io.StringIO(text(answer)))) == [
        ["msisdn", "code", "reason", "failure kind"],
        ["27830000009", "105", "Invalid destination address", "permanent"],
        ["27830000019", "105", "Invalid destination address", "permanent"],
    ]


def test_a_csv_cell_that_a_spreadsheet_would_run_is_quoted_off(client, db):
    ref = send(client)
    with db.cursor() as cur:
        cur.execute("UPDATE sms SET reason = '=HYPERLINK(\"x\")' WHERE msisdn = '27830000009'")

    lines = list(csv.reader(io.StringIO(text(client.get(f"/sends/{ref}/failed.csv")))))

    assert lines[1][2] == '\'=HYPERLINK("x")'


def test_an_unknown_send_is_404_on_the_page_and_the_csv(client):
    assert client.get("/admin/sends/999").status_code == 404
    assert "no send with refNumber 999" in text(client.get("/admin/sends/999"))
    assert client.get("/sends/999/failed.csv").status_code == 404
    assert client.get("/admin/sends/abc").status_code == 406


def test_the_sends_list_is_newest_first_with_each_sends_progress(client, db):
    first, second = send(client), send(client, ["0830000003"])

    page = text(client.get("/admin/sends"))

    assert page.index(f"#{second}<") < page.index(f"#{first}<")
    assert bar_counts(page) == [
        {"queued": 0, "sent": 1, "delivered": 0, "failed": 0},
        {"queued": 0, "sent": 2, "delivered": 0, "failed": 2},
    ]
    assert "Water off at 10:00" in page


def test_the_sends_list_filters_by_state_originator_and_day(client, db):
    done = send(client)
    later = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scheduled = send(client, ["0830000004"], sendAt=later)
    with db.cursor() as cur:
        cur.execute("UPDATE sendlog SET originator = 'alice' WHERE id = %s", (int(done),))
        cur.execute(
            "UPDATE sendlog SET senttime = senttime - interval '3 days' WHERE id = %s",
            (int(done),),
        )
    today = datetime.now(UTC).date()

    def listed(query: str) -> list[str]:
        return re.findall(r'href="/admin/sends/(\d+)"', text(client.get(f"/admin/sends?{query}")))

    assert listed("") == [scheduled, done]
    assert listed("state=scheduled") == [scheduled]
    assert listed("state=done") == [done]
    assert listed("state=sending") == []
    assert listed("originator=alice") == [done]
    assert listed(f"since={today}") == [scheduled]
    assert listed(f"until={today - timedelta(days=3)}") == [done]
    assert listed(f"since={today - timedelta(days=3)}&until={today - timedelta(days=3)}") == [done]


@pytest.mark.parametrize(
    "query, error",
    [
        ("since=yesterday", "since must be a date as 2026-01-31"),
        ("state=lost", "state must be one of sending, scheduled, done, cancelled"),
        ("before=x", "before must be a refNumber"),
        ("since=2026-02-02&until=2026-02-01", "since must not be after until"),
    ],
)
def test_a_bad_filter_is_refused_by_name(client, query, error):
    answer = client.get(f"/admin/sends?{query}")

    assert answer.status_code == 406
    assert error in text(answer)


def test_the_sends_list_pages_older_sends(client, db):
    refs = [send(client, ["0830000005"]) for _ in range(27)]

    first = text(client.get("/admin/sends"))
    older = re.search(r'href="(\?[^"]*before=\d+[^"]*)" rel="next"', first).group(1)
    second = text(client.get("/admin/sends" + older.replace("&amp;", "&")))

    on_first = re.findall(r'href="/admin/sends/(\d+)"', first)
    on_second = re.findall(r'href="/admin/sends/(\d+)"', second)
    assert on_first == refs[::-1][:25] and on_second == refs[::-1][25:]
    assert 'rel="next"' not in second and "Newest" in second


def test_a_dispatching_send_refreshes_its_pages_until_it_is_done(client, db):
    ref = send(client, ["0830000006"], sendAt=None)
    with db.cursor() as cur:  # caught while dispatching: its batch not yet written
        cur.execute("UPDATE sendlog SET status = 'sending' WHERE id = %s", (int(ref),))

    page = text(client.get(f"/admin/sends/{ref}"))
    listed = text(client.get("/admin/sends"))

    assert '<meta http-equiv="refresh" content="3">' in page
    assert '<meta http-equiv="refresh" content="3">' in listed
    assert "refresh=off" in page
    assert '<meta http-equiv="refresh"' not in text(client.get(f"/admin/sends/{ref}?refresh=off"))


def test_the_recipients_are_paged(client, db):
    numbers = [f"08300{n:05d}" for n in range(120)]
    ref = send(client, numbers)

    second = text(client.get(f"/admin/sends/{ref}?page=2"))
    third = text(client.get(f"/admin/sends/{ref}?page=3"))

    assert "page 2 of 3" in second
    assert '<th scope="row">27830000050</th>' in second
    assert "27830000049" not in second and "27830000100" not in second
    assert third.count('<th scope="row">2783') == 20
    assert client.get(f"/admin/sends/{ref}?page=0").status_code == 406


def test_a_scheduled_send_is_cancelled_from_its_page_with_its_csrf_token(client, db):
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ref = send(client, ["0830000007"], sendAt=later)
    page = text(client.get(f"/admin/sends/{ref}"))
    assert "Cancel this send" in page

    refused = client.post(f"/admin/sends/{ref}/cancel", data={"csrf_token": "forged"})
    assert refused.status_code == 403 and "CSRF token" in text(refused)
    assert rows(db, "SELECT cancelledat FROM sendlog WHERE id = %s", int(ref)) == [(None,)]

    done = client.post(f"/admin/sends/{ref}/cancel", data={"csrf_token": csrf_token(page)})

    assert done.status_code == 303
    assert done.headers["Location"] == f"/admin/sends/{ref}?cancelled=1"
    assert rows(db, "SELECT status FROM sendlog WHERE id = %s", int(ref)) == [("cancelled",)]
    after = text(client.get(done.headers["Location"]))
    assert "Cancelled: what had not reached the provider" in after
    assert "Cancel this send" not in after
    assert bar_counts(after) == [{"queued": 0, "sent": 0, "delivered": 0, "failed": 1}]


def test_a_cancel_posted_from_another_site_is_refused(client, db):
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ref = send(client, ["0830000007"], sendAt=later)
    token = csrf_token(text(client.get(f"/admin/sends/{ref}")))

    answer = client.post(
        f"/admin/sends/{ref}/cancel",
        data={"csrf_token": token},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )

    assert answer.status_code == 403
    assert rows(db, "SELECT status FROM sendlog WHERE id = %s", int(ref)) == [("sending",)]


def test_cancelling_a_finished_send_says_so(app, client):
    ref = send(client)
    assert "csrf_token" not in text(client.get(f"/admin/sends/{ref}"))  # no form: finished
    mine = app.extensions["messaging.signin"].csrf_token("")

    finished = client.post(f"/admin/sends/{ref}/cancel", data={"csrf_token": mine})
    other_secret = client.post(
        f"/admin/sends/{ref}/cancel",
        data={"csrf_token": signin.SignIn(None, "x" * 32).csrf_token("")},
    )

    assert finished.status_code == 409 and "is already finished" in text(finished)
    assert other_secret.status_code == 403


def clear_of_the_hours_end(margin: float = 90.0) -> None:
    """Wait for the next hour if this one ends within `margin` seconds: an event a test
    dates a little after now would fall into an hour still to come (counted nowhere yet)."""
    now = datetime.now(UTC)
    left = 3600 - (now.minute * 60 + now.second + now.microsecond / 1e6)
    if left < margin:
        time.sleep(left + 1)


def test_the_overview_counts_events_per_hour_and_day_and_figures_per_provider(client, db):
    clear_of_the_hours_end()  # the delivery below is dated 42 s after the send
    send(client)  # 2 sent, 2 refused by the provider at once
    hours_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=3)
    days_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2)
    with db.cursor() as cur:
        # Deliveries of no message (smsid 0): counted in the chart, not per provider.
        cur.execute(
            "INSERT INTO sms_events (smsid, sendlogid, time, source, status, providerid) "
            "SELECT 0, 1, t, 'receipt', 'delivered', 'x' FROM unnest(%s::timestamp[]) AS t",
            ([hours_ago] * 5 + [days_ago] * 7,),
        )
        # One of the send's messages delivered 42 s after it was handed over.
        cur.execute(
            "INSERT INTO sms_events (smsid, sendlogid, time, source, status, providerid) "
            "SELECT id, sendlogid, senttime + interval '42 s', 'receipt', 'delivered', "
            "providerid FROM sms WHERE msisdn = '27830000001'"
        )

    page = text(client.get("/admin"))

    assert "Last 24 hours, per hour: sent 2, delivered 6, failed 2" in page
    assert "Last 30 days, per day: sent 2, delivered 13, failed 2" in page
    hour_row = f'<th scope="row">{hours_ago:%H}:00</th><td class="num">0</td><td class="num">5</td>'
    day_row = f'<th scope="row">{days_ago:%m-%d}</th><td class="num">0</td><td class="num">7</td>'
    assert hour_row in page and day_row in page
    # Settled hours are counted once into sms_event_hours; the current one is counted live.
    assert rows(db, "SELECT sum(events) FROM sms_event_hours WHERE status = 'delivered'") == [(12,)]
    # Per provider (sms.provider NULL: the configured one): 2 handed over, 1 delivered in
    # 42 s, 2 refused: 1 of 3 outcomes delivered.
    provider_row = (
        '<th scope="row">MockProvider</th><td class="num">2</td><td class="num">1</td>'
        '<td class="num">2</td><td class="num">33.3 %</td><td class="num">42 s</td>'
    )
    assert provider_row in page
    again = text(client.get("/admin"))
    assert "Last 30 days, per day: sent 2, delivered 13, failed 2" in again
    assert provider_row in again


def test_provider_figures_of_settled_hours_are_counted_once(client, db):
    send(client)
    with db.cursor() as cur:  # as if it all happened two hours ago
        cur.execute("UPDATE sms SET senttime = senttime - interval '2 hours'")
        cur.execute("UPDATE sms_events SET time = time - interval '2 hours'")
        cur.execute(
            "INSERT INTO sms_events (smsid, sendlogid, time, source, status, providerid) "
            "SELECT id, sendlogid, senttime + interval '3.5 s', 'receipt', 'delivered', "
            "providerid FROM sms WHERE status = 'sent'"
        )

    page = text(client.get("/admin"))

    assert (
        '<th scope="row">MockProvider</th><td class="num">2</td><td class="num">2</td>'
        '<td class="num">2</td><td class="num">50.0 %</td><td class="num">3.5 s</td>'
    ) in page
    assert rows(db, "SELECT status, seconds, events FROM provider_event_hours ORDER BY 1, 2") == [
        ("delivered", 3.5, 2),
        ("failed", -1, 2),
        ("sent", -1, 2),
    ]


def test_the_overview_shows_dispatcher_and_poll_status_health_and_opt_outs(client, db, app):
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    send(client, ["0830000001", "0830000002"], sendAt=later)
    send(client, ["0830000008"])  # stays `sent` at the mock: in flight
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO optouts VALUES ('27831111111', 'test', now()), "
            "('27832222222', 'test', now())"
        )
        cur.execute("INSERT INTO dispatchers VALUES ('host:1', now(), now() - interval '40 s')")

    before = text(client.get("/admin"))
    assert "none recorded" in before
    result = app.test_cli_runner().invoke(args=["poll-status"])
    assert result.exit_code == 0, result.output
    page = text(client.get("/admin"))

    assert re.search(r"<dt>Alive</dt><dd class=\"bad\">0", page)
    assert '<th scope="row">host:1</th>' in page and "40 s ago" in page
    assert "2 recipients</dd>" in page  # scheduled
    assert re.search(r"<dt>Last run</dt><dd class=\"\">\d+\.\d s ago", page)
    assert "1 in flight" in result.output or "in flight 1" in result.output
    assert "1 messages still <code>sent</code> within the poll window" in page
    assert '<p class="big">2</p>' in page
    assert rows(db, "SELECT job, summary IS NOT NULL FROM job_runs") == [("poll-status", True)]


def test_pages_answer_with_a_strict_content_security_policy(client):
    answer = client.get("/admin")

    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Cache-Control"] == "no-store"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text(answer)
    css = client.get("/admin/static/admin.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert client.get("/admin/static/other.js").status_code == 404


# --- API keys: the sign-in form and its cookie ---


def test_without_a_key_a_page_sends_the_browser_to_the_sign_in_form(keys_app):
    client = keys_app.test_client()

    answer = client.get("/admin/sends?state=done")

    assert answer.status_code == 303
    assert answer.headers["Location"] == "/admin/sign-in?next=/admin/sends?state%3Ddone"
    form = text(client.get(answer.headers["Location"]))
    assert '<label for="api_key">API key</label>' in form
    assert 'value="/admin/sends?state=done"' in form
    assert client.get("/sends/1/failed.csv").status_code == 401  # the API answers as the API


def test_signing_in_keeps_the_key_in_a_signed_http_only_strict_cookie(keys_app, db):
    key = create_key(keys_app, "ops", admin=True)
    client = keys_app.test_client()

    answer = client.post("/admin/sign-in", data={"api_key": key, "next": "/admin/sends"})

    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/sends"
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert "Max-Age=43200" in cookie
    value = client.get_cookie(signin.COOKIE).value
    assert keys_app.extensions["messaging.signin"].api_key(value) == key
    page = client.get("/admin/sends")
    assert page.status_code == 200 and "ops (admin)" in text(page)


def test_over_https_the_cookie_is_secure(keys_app):
    key = create_key(keys_app, "ops")

    answer = keys_app.test_client().post(
        "/admin/sign-in", data={"api_key": key}, base_url="https://localhost"
    )

    assert "Secure" in answer.headers["Set-Cookie"]


def test_a_wrong_key_is_refused_on_the_form(keys_app):
    create_key(keys_app, "ops")
    client = keys_app.test_client()

    answer = client.post("/admin/sign-in", data={"api_key": "msg_" + "x" * 43})

    assert answer.status_code == 401
    assert "That API key is not valid" in text(answer)
    assert "Set-Cookie" not in answer.headers


def test_a_forged_or_revoked_cookie_signs_nobody_in(keys_app):
    key = create_key(keys_app, "ops")
    client = signed_in(keys_app, key)
    assert client.get("/admin").status_code == 200

    forged = keys_app.test_client()
    forged.set_cookie(signin.COOKIE, key)  # the key itself, unsigned
    assert forged.get("/admin").status_code == 303

    result = keys_app.test_cli_runner().invoke(args=["api-key", "revoke", "ops"])
    assert result.exit_code == 0, result.output
    assert client.get("/admin").status_code == 303


def test_the_cookie_is_signed_with_the_configured_session_secret(make_app, db):
    app = make_app(apikey_config(sessionSecret="s" * 40))
    with db.cursor() as cur:
        cur.execute("TRUNCATE api_keys RESTART IDENTITY")
    key = create_key(app, "ops")
    client = signed_in(app, key)
    value = client.get_cookie(signin.COOKIE).value

    assert signin.SignIn(None, "s" * 40).api_key(value) == key
    assert signin.SignIn(None, "t" * 40).api_key(value) is None
    assert rows(db, "SELECT count(*) FROM service_secrets") == [(0,)]


def test_without_a_configured_secret_one_is_made_once_and_shared(keys_app, make_app, db):
    key = create_key(keys_app, "ops")
    client = signed_in(keys_app, key)
    value = client.get_cookie(signin.COOKIE).value
    other_process = make_app(apikey_config())  # another worker: reads the same secret

    other = other_process.test_client()
    other.set_cookie(signin.COOKIE, value)

    assert other.get("/admin").status_code == 200
    assert rows(db, "SELECT name, length(value) >= 32 FROM service_secrets") == [("session", True)]


def test_signing_out_drops_the_cookie(keys_app):
    client = signed_in(keys_app, create_key(keys_app, "ops"))
    token_page = text(client.get("/admin"))
    assert "Sign out" in token_page

    answer = client.post("/admin/sign-out")

    assert answer.status_code == 303 and answer.headers["Location"] == "/admin/sign-in"
    assert client.get_cookie(signin.COOKIE) is None
    assert client.get("/admin").status_code == 303


def test_sign_in_from_another_site_is_refused(keys_app):
    key = create_key(keys_app, "ops")

    answer = keys_app.test_client().post(
        "/admin/sign-in", data={"api_key": key}, headers={"Sec-Fetch-Site": "cross-site"}
    )

    assert answer.status_code == 403 and "Set-Cookie" not in answer.headers


def test_the_next_page_after_sign_in_stays_on_this_site(keys_app):
    key = create_key(keys_app, "ops")

    for target in ("https://evil.example/admin", "//evil.example/admin", "/sendsms"):
        answer = keys_app.test_client().post(
            "/admin/sign-in", data={"api_key": key, "next": target}
        )
        assert answer.headers["Location"] == "/admin", target


def test_the_sign_in_cookie_downloads_the_failed_numbers_but_sends_nothing(keys_app, db):
    key = create_key(keys_app, "ops")
    api = keys_app.test_client()
    answer = api.post(
        "/sendsms",
        json={"message": "hi", "msisdns": ["0830000009"]},
        headers={"X-API-Key": key},
    )
    ref = answer.get_json()["refNumber"]
    client = signed_in(keys_app, key)

    assert client.get(f"/sends/{ref}/failed.csv").status_code == 200
    # The cookie is a credential of the pages and their download only, never of the API.
    assert (
        client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000001"]}).status_code
        == 401
    )
    assert client.get(f"/sends/{ref}").status_code == 401
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]


# --- the own-sends rule ---


def test_a_caller_who_is_not_an_admin_sees_only_its_own_sends(keys_app, db):
    alice, bob = create_key(keys_app, "alice"), create_key(keys_app, "bob")
    admin = create_key(keys_app, "ops", admin=True)
    api = keys_app.test_client()

    def send_as(key):
        answer = api.post(
            "/sendsms",
            json={"message": "hi", "msisdns": ["0830000009"]},
            headers={"X-API-Key": key},
        )
        return answer.get_json()["refNumber"]

    alices, bobs = send_as(alice), send_as(bob)
    as_alice, as_admin = signed_in(keys_app, alice), signed_in(keys_app, admin)

    def listed(client, query=""):
        return re.findall(r'href="/admin/sends/(\d+)"', text(client.get(f"/admin/sends{query}")))

    assert listed(as_alice) == [alices]
    assert listed(as_alice, "?originator=bob") == []  # the filter narrows, never widens
    assert 'id="originator"' not in text(as_alice.get("/admin/sends"))
    assert listed(as_admin) == [bobs, alices]
    assert listed(as_admin, "?originator=bob") == [bobs]
    assert as_alice.get(f"/admin/sends/{bobs}").status_code == 404
    assert as_alice.get(f"/sends/{bobs}/failed.csv").status_code == 404
    assert as_admin.get(f"/sends/{alices}/failed.csv").status_code == 200


def test_the_overview_of_a_caller_who_is_not_an_admin_is_health_and_its_own_sends(keys_app):
    alice, bob = create_key(keys_app, "alice"), create_key(keys_app, "bob")
    api = keys_app.test_client()
    for key in (alice, bob):
        api.post(
            "/sendsms",
            json={"message": "hi", "msisdns": ["0830000001"]},
            headers={"X-API-Key": key},
        )

    mine = text(signed_in(keys_app, alice).get("/admin"))
    everyone = text(signed_in(keys_app, create_key(keys_app, "ops", admin=True)).get("/admin"))

    assert "Your latest sends" in mine and mine.count('href="/admin/sends/') == 1
    assert "Dispatchers" in mine and "poll-status" in mine
    assert "Providers, last 24 hours" not in mine and "Opt-outs" not in mine
    assert "Last 24 hours, per hour" not in mine
    assert "Providers, last 24 hours" in everyone and "Opt-outs" in everyone


def test_a_caller_cannot_cancel_another_callers_send(keys_app, db):
    alice, bob = create_key(keys_app, "alice"), create_key(keys_app, "bob")
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = keys_app.test_client().post(
        "/sendsms",
        json={"message": "hi", "msisdns": ["0830000001"], "sendAt": later},
        headers={"X-API-Key": bob},
    )
    bobs = answer.get_json()["refNumber"]
    as_alice = signed_in(keys_app, alice)
    token = keys_app.extensions["messaging.signin"].csrf_token("alice")

    refused = as_alice.post(f"/admin/sends/{bobs}/cancel", data={"csrf_token": token})

    assert refused.status_code == 404
    assert rows(db, "SELECT cancelledat FROM sendlog WHERE id = %s", int(bobs)) == [(None,)]


# --- serviceauth: the browser's own session cookie ---


@pytest.fixture
def fake_auth():
    with FakeAuthService() as service:
        yield service


def test_with_serviceauth_the_session_cookie_is_enough(make_app, fake_auth, db):
    config = base_config()
    config["authentication"] = {"service": "serviceauth", "enabled": True, "url": fake_auth.url}
    app = make_app(config)
    client = app.test_client(use_cookies=False)
    fake_auth.allow_user("session=abc", "joe@example.com")

    assert client.get("/admin", headers={"Cookie": "session=abc"}).status_code == 200
    ref = client.post(
        "/sendsms",
        json={"message": "hi", "msisdns": ["0830000009"]},
        headers={"Cookie": "session=abc"},
    ).get_json()["refNumber"]
    page = client.get(f"/admin/sends/{ref}", headers={"Cookie": "session=abc"})
    assert page.status_code == 200 and "joe@example.com" in text(page)
    assert "Sign out" not in text(page)  # the auth service's session, not ours
    assert (
        client.get(f"/sends/{ref}/failed.csv", headers={"Cookie": "session=abc"}).status_code == 200
    )

    fake_auth.refuse()
    refused = client.get("/admin", headers={"Cookie": "session=other"})
    assert refused.status_code == 401
    assert "sign in with your organisation's auth service" in text(refused)
    assert client.get("/admin/sign-in").status_code == 303  # no form: nothing to sign in to


def test_delivery_over_time_counts_settled_seconds_once_and_new_events_live(client, db):
    ref = int(send(client))  # 2 sent, 2 refused: 4 events
    with db.cursor() as cur:  # as if made an hour ago: its seconds have settled
        cur.execute(
            "UPDATE sendlog SET senttime = senttime - interval '1 hour' WHERE id = %s", (ref,)
        )
        cur.execute(
            "UPDATE sms_events SET time = time - interval '1 hour' WHERE sendlogid = %s", (ref,)
        )

    def last_row(page: str) -> str:
        table = page.split("Delivery over time as a table")[1].split("</table>")[0]
        return re.findall(r"<tr><th scope=\"row\">[^<]+</th>(.*?)</tr>", table)[-1]

    first = text(client.get(f"/admin/sends/{ref}"))
    assert last_row(first) == '<td class="num">2</td><td class="num">0</td><td class="num">2</td>'
    assert rows(db, "SELECT status, events FROM send_event_seconds ORDER BY 1") == [
        ("failed", 2),
        ("sent", 2),
    ]
    with db.cursor() as cur:  # a receipt now: counted live, beside the settled seconds
        cur.execute(
            "INSERT INTO sms_events (smsid, sendlogid, time, source, status) "
            "SELECT id, sendlogid, now() AT TIME ZONE 'utc', 'receipt', 'delivered' "
            "FROM sms WHERE sendlogid = %s AND status = 'sent' LIMIT 1",
            (ref,),
        )

    again = text(client.get(f"/admin/sends/{ref}"))

    assert last_row(again) == '<td class="num">2</td><td class="num">1</td><td class="num">2</td>'
    assert rows(db, "SELECT sum(events) FROM send_event_seconds") == [(4,)]


def test_too_many_unsettled_events_leave_the_provider_figures_at_the_settled_hour(
    client, db, monkeypatch
):
    send(client)
    with db.cursor() as cur:  # two hours ago: settled
        cur.execute("UPDATE sms SET senttime = senttime - interval '2 hours'")
        cur.execute("UPDATE sms_events SET time = time - interval '2 hours'")
    send(client)  # now: 4 more events, in an hour still open
    monkeypatch.setattr(dashboard, "LIVE_PROVIDER_EVENTS", 3)

    page = text(client.get("/admin"))

    assert '<th scope="row">MockProvider</th><td class="num">2</td>' in page  # the first only
    assert "Figures up to" in page and "once their hour has settled" in page
    assert "Last 24 hours, per hour: sent 4, delivered 0, failed 4" in page  # the chart: all
    monkeypatch.setattr(dashboard, "LIVE_PROVIDER_EVENTS", 4)
    everything = text(client.get("/admin"))
    assert '<th scope="row">MockProvider</th><td class="num">4</td>' in everything
    assert "Figures up to" not in everything
