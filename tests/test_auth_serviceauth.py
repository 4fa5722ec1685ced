"""authentication.service "serviceauth": the original's auth service, asked over real HTTP."""

import dataclasses
import hashlib
import json
import secrets

import pytest

from messaging.auth import ServiceAuth, credentials_key, exposure_warning, public
from messaging.settings import AuthSettings
from tests.conftest import base_config, free_port, rows
from tests.fake_auth import FakeAuthService

COOKIE = f"session={secrets.token_hex(16)}"
TOKEN = f"Bearer {secrets.token_hex(16)}"
SEND = {"message": "Water off at 10:00", "msisdns": ["0830000000"]}
UNAUTHORIZED = {"error": "User unauthorized"}
UNAVAILABLE = {"error": "authentication service unavailable"}


def auth_config(url: str, **settings) -> dict:
    config = base_config()
    config["authentication"] = {"service": "serviceauth", "enabled": True, "url": url, **settings}
    return config


@pytest.fixture
def fake_auth():
    with FakeAuthService() as service:
        yield service


@pytest.fixture
def auth_app(make_app, fake_auth):
    return make_app(auth_config(fake_auth.url, timeout=0.5))


@pytest.fixture
def client(auth_app):
    return client_of(auth_app)


def client_of(app):
    # Without a cookie jar the test client passes our Cookie header through untouched.
    return app.test_client(use_cookies=False)


def send(client, **headers):
    return client.post("/sendsms", json=SEND, headers=headers)


def sends(db):
    return rows(db, "SELECT originator FROM sendlog ORDER BY id")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def with_clock(app, clock) -> None:
    """Swap in a ServiceAuth whose cache reads `clock` instead of the real time."""
    settings = app.extensions["messaging"].config.authentication
    app.extensions["messaging.auth"] = ServiceAuth(settings, clock=clock)


# --- the answers of the auth service ---


def test_allowed_user_sends_and_their_identity_is_the_originator(client, fake_auth, db):
    response = send(client, Cookie=COOKIE)
    assert response.status_code == 200
    assert response.get_json()["messagesSent"] == 1
    assert sends(db) == [("joe@example.com",)]


def test_bearer_token_alone_is_enough_when_the_auth_service_accepts_it(client, fake_auth, db):
    assert send(client, Authorization=TOKEN).status_code == 200
    assert fake_auth.checks[0]["Authorization"] == TOKEN


def test_user_without_the_bulk_sms_permission_is_401_and_nothing_is_sent(client, fake_auth, db):
    fake_auth.allow(roles=["2", "5", "44"])
    response = send(client, Cookie=COOKIE)
    assert (response.status_code, response.get_json()) == (401, UNAUTHORIZED)
    assert sends(db) == []


def test_permission_is_configurable_and_may_be_a_number(make_app, fake_auth, db):
    client = client_of(make_app(auth_config(fake_auth.url, permission=7)))
    assert send(client, Cookie=COOKIE).status_code == 401
    fake_auth.allow(roles=[2, 7])
    assert send(client, Cookie=COOKIE).status_code == 200


@pytest.mark.parametrize("status", [400, 401, 403])
def test_auth_service_refusal_is_our_401(client, fake_auth, db, status):
    fake_auth.refuse(status)
    response = send(client, Cookie=COOKIE)
    assert (response.status_code, response.get_json()) == (401, UNAUTHORIZED)
    assert sends(db) == []


@pytest.mark.parametrize("status", [500, 502, 503, 404, 302])
def test_auth_service_error_or_odd_status_is_503_never_a_pass(client, fake_auth, db, status):
    fake_auth.fail(status)
    response = send(client, Cookie=COOKIE)
    assert (response.status_code, response.get_json()) == (503, UNAVAILABLE)
    assert sends(db) == []


def test_slow_auth_service_is_503(client, fake_auth, db):
    fake_auth.slow(30)  # the app's authentication.timeout is 0.5 s
    response = send(client, Cookie=COOKIE)
    assert (response.status_code, response.get_json()) == (503, UNAVAILABLE)
    assert sends(db) == []


def test_unreachable_auth_service_is_503(make_app, db):
    client = client_of(make_app(auth_config(f"http://127.0.0.1:{free_port()}")))
    response = send(client, Cookie=COOKIE)
    assert (response.status_code, response.get_json()) == (503, UNAVAILABLE)
    assert sends(db) == []


@pytest.mark.parametrize(
    "body",
    [
        "<html>Please log in</html>",
        "",
        "[]",
        '{"Identity": "joe@example.com"}',
        '{"Identity": "joe@example.com", "Roles": "4"}',
        '{"Identity": ["joe"], "Roles": ["4"]}',
        '{"Identity": "joe\\ud800", "Roles": ["4"]}',  # no originator could hold it
    ],
)
def test_a_200_without_the_expected_json_is_503(client, fake_auth, db, body):
    fake_auth.answer_with(body)
    response = send(client, Cookie=COOKIE)
    assert (response.status_code, response.get_json()) == (503, UNAVAILABLE)
    assert sends(db) == []


def test_request_without_credentials_is_401_without_asking(client, fake_auth, db):
    assert send(client).status_code == 401
    assert send(client, Cookie="", Authorization="").status_code == 401
    assert fake_auth.checks == []


# --- what is forwarded ---


def test_cookie_and_authorization_are_forwarded_exactly_and_nothing_else(client, fake_auth):
    send(
        client,
        Cookie=COOKIE,
        Authorization=TOKEN,
        **{"X-API-Key": "not-for-the-auth-service", "X-Forwarded-For": "10.0.0.9", "X-Secret": "s"},
    )
    [received] = fake_auth.checks
    assert received["Cookie"] == COOKIE
    assert received["Authorization"] == TOKEN
    transport = {"Host", "User-Agent", "Accept-Encoding", "Accept", "Connection"}
    assert set(received) <= transport | {"Cookie", "Authorization"}


def test_a_cookie_the_auth_service_sets_never_reaches_the_next_caller(client, fake_auth):
    fake_auth.set_cookie("session=joes-refreshed-session; Path=/")
    assert send(client, Cookie=COOKIE).status_code == 200
    fake_auth.refuse(401)
    assert send(client, Authorization=TOKEN).status_code == 401
    assert "Cookie" not in fake_auth.checks[1]


# --- the cache ---


def test_a_cached_yes_spares_the_auth_service(client, fake_auth, db):
    assert send(client, Cookie=COOKIE).status_code == 200
    assert send(client, Cookie=COOKIE).status_code == 200
    assert len(fake_auth.checks) == 1
    assert sends(db) == [("joe@example.com",), ("joe@example.com",)]


def test_other_credentials_are_checked_on_their_own(client, fake_auth):
    send(client, Cookie=COOKIE)
    send(client, Cookie=COOKIE, Authorization=TOKEN)
    send(client, Authorization=TOKEN)
    assert len(fake_auth.checks) == 3


def test_a_cached_yes_expires_after_cache_seconds(auth_app, fake_auth):
    clock = Clock()
    with_clock(auth_app, clock)
    client = client_of(auth_app)
    assert send(client, Cookie=COOKIE).status_code == 200
    fake_auth.refuse(401)  # Joe's session ends at the auth service

    clock.now += 29.9  # default authentication.cacheSeconds is 30
    assert send(client, Cookie=COOKIE).status_code == 200
    assert len(fake_auth.checks) == 1

    clock.now += 0.1
    assert send(client, Cookie=COOKIE).status_code == 401
    assert len(fake_auth.checks) == 2


def test_a_no_is_not_cached(client, fake_auth):
    fake_auth.allow(roles=["2"])
    assert send(client, Cookie=COOKIE).status_code == 401
    fake_auth.allow(roles=["2", "4"])  # the permission was just granted
    assert send(client, Cookie=COOKIE).status_code == 200
    assert len(fake_auth.checks) == 2


def test_a_failure_is_not_cached(client, fake_auth):
    fake_auth.fail(500)
    assert send(client, Cookie=COOKIE).status_code == 503
    fake_auth.allow()
    assert send(client, Cookie=COOKIE).status_code == 200


def test_cache_seconds_zero_asks_every_time(make_app, fake_auth):
    client = client_of(make_app(auth_config(fake_auth.url, cacheSeconds=0)))
    send(client, Cookie=COOKIE)
    send(client, Cookie=COOKIE)
    assert len(fake_auth.checks) == 2


def test_cache_keys_are_hashes_of_the_credentials(auth_app, client, fake_auth):
    send(client, Cookie=COOKIE, Authorization=TOKEN)
    cache = auth_app.extensions["messaging.auth"].cache
    [key] = list(cache)
    assert key == hashlib.sha256(json.dumps([COOKIE, TOKEN]).encode()).hexdigest()
    assert COOKIE not in repr(cache) and TOKEN not in repr(cache)


def test_the_cache_is_bounded_and_the_oldest_yes_is_asked_again(fake_auth):
    auth = ServiceAuth(AuthSettings(enabled=True, url=fake_auth.url), cache_size=3)
    cookies = [{"Cookie": f"session={n}"} for n in range(4)]
    for headers in cookies:
        auth.authenticate(headers)

    auth.authenticate(cookies[3])
    assert len(fake_auth.checks) == 4
    auth.authenticate(cookies[0])
    assert len(fake_auth.checks) == 5
    assert len(auth.cache) == 3


def test_an_expired_yes_leaves_the_cache_when_another_is_stored(fake_auth):
    clock = Clock()
    auth = ServiceAuth(AuthSettings(enabled=True, url=fake_auth.url), clock=clock)
    auth.authenticate({"Cookie": "session=a"})
    clock.now += 31

    auth.authenticate({"Cookie": "session=b"})

    assert len(auth.cache) == 1
    assert list(auth.cache) == [credentials_key({"Cookie": "session=b"})]


# --- what is open, what is protected ---

OPEN_PATHS = ("/ping", "/healthz", "/metrics", "/openapi.json", "/docs")
# The operator's page's own open views: its sign-in form (with serviceauth it sends the
# browser on to /admin), sign-out (drops a cookie) and stylesheet.
OPEN_PAGE_PATHS = ("/admin/sign-in", "/admin/sign-out", "/admin/static/")


def test_every_endpoint_needs_credentials_except_ping_health_metrics_and_docs(
    auth_app, client, fake_auth
):
    adapter = auth_app.url_map.bind("localhost")
    protected = []
    for rule in auth_app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/callbacks"):
            continue  # callbacks use the provider's own check (tests/providers)
        method = sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        path = adapter.build(rule.endpoint, dict.fromkeys(rule.arguments, "1"), method=method)
        response = client.open(path, method=method, json={})
        if rule.rule.startswith(OPEN_PATHS + OPEN_PAGE_PATHS):
            assert response.status_code != 401, rule.rule
        elif rule.rule.startswith("/admin"):  # a page: refused as a page, not as JSON
            assert response.status_code == 401, rule.rule
            assert "Sign in first" in response.text, rule.rule
            protected.append(rule.rule)
        else:
            assert (response.status_code, response.get_json()) == (401, UNAUTHORIZED), rule.rule
            protected.append(rule.rule)
    assert {"/sendsms", "/messagestatus/<anytext:msisdn>", "/normalize"} <= set(protected)
    assert {"/admin", "/admin/sends", "/sends/<refNumber>/failed.csv"} <= set(protected)
    assert fake_auth.checks == []


def test_a_new_view_needs_credentials_unless_marked_public(make_app, fake_auth):
    app = make_app(auth_config(fake_auth.url))
    app.add_url_rule("/added", "added", lambda: "added")
    app.add_url_rule("/added-open", "added_open", public(lambda: "open"))
    client = client_of(app)

    assert client.get("/added").status_code == 401
    assert client.get("/added", headers={"Cookie": COOKIE}).text == "added"
    assert client.get("/added-open").text == "open"
    assert len(fake_auth.checks) == 1


def test_ping_answers_even_when_the_auth_service_is_down(make_app):
    client = client_of(make_app(auth_config(f"http://127.0.0.1:{free_port()}")))
    assert client.get("/ping").status_code == 200


# --- authentication off ---


def test_disabled_authentication_lets_everyone_through_unnamed(client_without_auth, db):
    assert send(client_without_auth).status_code == 200
    assert sends(db) == [("",)]


@pytest.fixture
def client_without_auth(make_app, fake_auth):
    config = auth_config(fake_auth.url)
    config["authentication"]["enabled"] = False
    return client_of(make_app(config))


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("127.0.1.1", False),
        ("::1", False),
        ("[::1]", False),
        ("localhost", False),
        ("unix:/run/messaging.sock", False),
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("sms.example.com", True),
    ],
)
def test_start_up_warns_when_authentication_is_off_and_the_bind_is_not_loopback(host, warned):
    off = AuthSettings(enabled=False)
    warning = exposure_warning(off, host)
    assert (warning is not None) == warned
    if warned:
        assert "authentication is disabled" in warning and host in warning
    assert exposure_warning(dataclasses.replace(off, enabled=True), host) is None
