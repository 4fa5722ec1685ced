"""A true drop-in (issue 15) and the hostile inputs of issue 12, over real HTTP on gunicorn:
the Go service's clients send as they always did, browsers cannot send for another site,
and a caller sees only its own sends."""

import http.client
import json
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import pytest
import requests

from messaging import dispatch
from messaging.auth import MAX_FORWARDED_BYTES
from tests.conftest import ROOT, base_config, free_port, gunicorn_server, rows
from tests.fake_auth import FakeAuthService
from tests.providers.fakes import FakeProvider, clickatell_accepts

EVIL = "https://evil.example"
TRUSTED = "https://intranet.example.org"
NO_DATA = "Error: no data available"
ADMIN_ROLE = "9"

# One caller for the tests that are not about who is calling: an Authorization header,
# which no browser adds by itself.
JOE = {"Authorization": f"Bearer {secrets.token_hex(8)}"}


@pytest.fixture(scope="module")
def auth_service():
    with FakeAuthService() as service:
        yield service


@pytest.fixture(scope="module")
def server(database_url, auth_service, tmp_path_factory):
    """gunicorn with serviceauth, as the original ran, and a one-part message limit."""
    config = base_config(maxMessageSegments=1)
    config["authentication"] = {
        "service": "serviceauth",
        "enabled": True,
        "url": auth_service.url,
        "cacheSeconds": 0,  # every request asks the auth service: checks are countable
        "adminPermission": ADMIN_ROLE,
        "allowedOrigins": [TRUSTED],
    }
    with gunicorn_server(config, database_url, tmp_path_factory.mktemp("dropin"), 1) as base:
        yield base


@pytest.fixture
def auth(auth_service):
    auth_service.allow()
    auth_service.users.clear()
    auth_service.checks.clear()
    return auth_service


@pytest.fixture
def base(server, auth, db):
    return server


def sendlog(db):
    return rows(db, "SELECT originator, message FROM sendlog ORDER BY id")


def recipients(db):
    return [msisdn for (msisdn,) in rows(db, "SELECT msisdn FROM sms ORDER BY id")]


FORM = "application/x-www-form-urlencoded"


def call(base, method: str, target: str, body: str | None = None, content_type: str = FORM):
    """One request as Joe: `target` is the path and query, `body` sent as `content_type`."""
    headers = {**JOE, "Content-Type": content_type} if body is not None else JOE
    return requests.request(method, f"{base}{target}", data=body, headers=headers)


# --- 15.1: a JSON object is JSON whatever the Content-Type; keys match in any case ---

JSON_BODY = '{"message": "Water off at 10:00", "msisdns": ["0830000000", "0840000000"]}'


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",  # curl -d '{...}'
        "application/x-www-form-urlencoded; charset=UTF-8",  # jQuery $.post(url, json)
        "text/plain",
        "text/plain;charset=UTF-8",
        None,
    ],
)
def test_a_json_object_is_read_as_json_whatever_its_content_type(base, db, content_type):
    headers = {**JOE, **({"Content-Type": content_type} if content_type else {})}
    answer = requests.post(f"{base}/sendsms", data=JSON_BODY.encode(), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["validNumbers"] == 2
    assert recipients(db) == ["27830000000", "27840000000"]


def test_the_answer_has_the_originals_fields_in_its_order_then_ours(base, db):
    answer = requests.post(f"{base}/sendsms", data=JSON_BODY, headers=JOE)
    assert list(answer.json()) == [
        "refNumber",
        "validNumbers",
        "invalidNumbers",
        "sendSuccess",
        "statusDescription",
        "messagesSent",
        "duplicateNumbers",
        "segments",
        "encoding",
        "queuedNumbers",
        "optedOutNumbers",
    ]


def test_json_keys_match_whatever_their_case(base, db):
    body = {"Message": "Hi", "MSISDNS": ["0830000000"], "From": "CITY"}
    answer = requests.post(f"{base}/sendsms", data=json.dumps(body), headers=JOE)
    assert answer.status_code == 200, answer.text
    assert rows(db, "SELECT message, sender FROM sendlog") == [("Hi", "CITY")]
    normalized = requests.post(f"{base}/normalize", json={"MsIsDnS": ["0830000000"]}, headers=JOE)
    assert normalized.json() == ["27830000000"]


def test_form_data_and_query_parameters_still_work(base, db):
    form = requests.post(
        f"{base}/sendsms", data={"message": "form", "msisdns": "0830000000"}, headers=JOE
    )
    query = requests.get(f"{base}/sendsms?message=query&msisdns=0840000000", headers=JOE)
    assert (form.status_code, query.status_code) == (200, 200)
    assert [message for _, message in sendlog(db)] == ["form", "query"]


def test_a_text_plain_body_that_is_not_json_is_406_naming_the_content_type(base, db):
    answer = call(base, "POST", "/sendsms", "message=hi\r\nmsisdns=0830000000\r\n", "text/plain")
    assert answer.status_code == 406
    assert "text/plain" in answer.json()["error"]
    assert sendlog(db) == []


# --- 12.10: repeated form and query keys ---


def test_repeated_msisdns_in_a_form_or_query_send_to_every_one(base, db):
    form = "message=hi&msisdns=0830000000&msisdns=0840000000,0820000000&msisdns=0710000000"
    answer = call(base, "POST", "/sendsms", form)
    assert answer.json()["validNumbers"] == 4
    query = call(base, "GET", "/sendsms?message=q&msisdns=0830000001&MSISDNS=0830000002")
    assert query.json()["validNumbers"] == 2
    assert recipients(db) == [
        "27830000000",
        "27840000000",
        "27820000000",
        "27710000000",
        "27830000001",
        "27830000002",
    ]


@pytest.mark.parametrize(
    ("method", "target", "body", "named"),
    [
        ("POST", "/sendsms", "message=a&message=b&msisdns=0830000000", "message"),
        ("GET", "/sendsms?message=a&msisdns=0830000000&Message=b", None, "message"),
        ("GET", "/sendsms?message=a&msisdns=0830000000&from=X&from=Y", None, "from"),
        ("POST", "/sendsms", '{"message": "a", "Message": "b", "msisdns": ["0830000000"]}',
         "message"),
        ("POST", "/sendsms", '{"message": "a", "msisdns": ["0830000000"], "msisdns": ["1"]}',
         "msisdns"),
    ],
    ids=["form-message", "query-message", "query-from", "json-case", "json-msisdns"],
)  # fmt: skip
def test_a_repeated_message_or_from_is_406_naming_the_key(base, db, method, target, body, named):
    answer = call(base, method, target, body)
    assert answer.status_code == 406
    assert answer.json()["error"] == f"{named}: given more than once; give it once"
    assert sendlog(db) == []


# --- 12.9: what is not JSON text is a 406, never a 500 ---


DEEP = '{"message": "hi", "msisdns": ["0830000000"], "x": ' + "[" * 100_000 + "]" * 100_000 + "}"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (DEEP, "nested too deeply"),
        ('{"message": "hi \\ud800", "msisdns": ["0830000000"]}', "message holds a lone surrogate"),
        ('{"message": "hi", "from": "\\udfff", "msisdns": ["0830000000"]}', "from holds a lone"),
        ('{"message": "hi", "msisdns": ["0830000000", "\\ud83d"]}', "msisdns[1] holds a lone"),
        ('{"message": "hi", "msisdns": ["0830000000"], "\\ud800": 1}', "a key holds a lone"),
    ],
    ids=["deep", "message", "from", "msisdns", "key"],
)
def test_deep_json_and_lone_surrogates_are_406_and_send_nothing(base, db, body, named):
    answer = call(base, "POST", "/sendsms", body, "application/json")
    assert answer.status_code == 406, answer.text
    assert named in answer.json()["error"]
    assert sendlog(db) == []


def test_a_surrogate_pair_is_an_emoji_not_an_error(base, db):
    body = '{"message": "ok \\ud83d\\udc4d", "msisdns": ["0830000000"]}'
    answer = call(base, "POST", "/sendsms", body, "application/json")
    assert answer.status_code == 200
    assert answer.json()["encoding"] == "UCS-2"
    assert sendlog(db) == [("joe@example.com", "ok 👍")]


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", "/sendsms", "message=caf%E9&msisdns=0830000000"),
        ("GET", "/sendsms?message=%ED%A0%80&msisdns=0830000000", None),
    ],
    ids=["form", "query"],
)
def test_a_percent_escape_that_is_not_utf8_is_406_not_sent_as_written(
    base, db, method, target, body
):
    answer = call(base, method, target, body)
    assert answer.status_code == 406
    assert "not valid UTF-8 once percent-decoded" in answer.json()["error"]
    assert sendlog(db) == []


# --- 15.3: smart encoding ---


def test_typographic_characters_go_as_gsm7_and_what_went_is_stored(base, db):
    # maxMessageSegments is 1: the ’ would make 100 characters UCS-2, two parts.
    text = "a" * 99 + "\u2019"
    answer = requests.post(
        f"{base}/sendsms", json={"message": text, "msisdns": ["0830000000"]}, headers=JOE
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["segments"], answer.json()["encoding"]) == (1, "GSM-7")
    stored = "a" * 99 + "'"
    assert rows(db, "SELECT message FROM sendlog") == [(stored,)]
    assert rows(db, "SELECT message, segments FROM sms") == [(stored, 1)]


def test_a_text_that_needs_ucs2_anyway_keeps_its_typography(base, db):
    answer = requests.post(
        f"{base}/sendsms",
        json={"message": "Can\u2019t wait 👍", "msisdns": ["0830000000"]},
        headers=JOE,
    )
    assert (answer.json()["encoding"], answer.json()["segments"]) == ("UCS-2", 1)
    assert rows(db, "SELECT message FROM sms") == [("Can\u2019t wait 👍",)]


def test_a_send_left_to_the_dispatchers_goes_out_as_it_was_counted(make_app, db):
    provider = FakeProvider()
    provider.default = clickatell_accepts
    config = base_config(name="Clickatell", url=provider.url, maxMessageSegments=1, retries=0)
    client = make_app(config).test_client()
    text = "\u201cWater\u201d off \u2013 back at 10:00\u2026 " + "a" * 100
    try:
        answer = client.post(
            "/sendsms",
            json={"message": text, "msisdns": ["0830000000"]},
            headers={"Prefer": "respond-async"},
        )
        assert answer.status_code == 202
        body = answer.get_json()
        assert (body["encoding"], body["segments"], body["queuedNumbers"]) == ("GSM-7", 1, 1)
        assert provider.requests == []

        dispatcher = dispatch.Dispatcher(client.application.extensions["messaging"])
        dispatcher.idle_exit = True
        dispatcher.run()
    finally:
        provider.stop()

    sent = '"Water" off - back at 10:00... ' + "a" * 100
    assert [request.json["text"] for request in provider.requests] == [sent]
    assert rows(db, "SELECT message, segments, status FROM sms") == [(sent, 1, "sent")]


# --- 15.7: a trailing slash works on every path ---


def test_a_trailing_slash_redirects_to_the_bare_path_keeping_method_and_body(base, db):
    moved = requests.post(
        f"{base}/sendSMS/", json={"message": "slash", "msisdns": ["0830000000"]}, headers=JOE,
        allow_redirects=False,
    )  # fmt: skip
    assert (moved.status_code, moved.headers["Location"]) == (307, "/sendsms")
    followed = requests.post(
        f"{base}/sendsms/", json={"message": "slash", "msisdns": ["0830000000"]}, headers=JOE
    )
    assert followed.status_code == 200
    assert followed.history[0].status_code == 307
    assert sendlog(db) == [("joe@example.com", "slash")]


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/ping/", "/ping"),
        ("/messagestatus/0830000000/", "/messagestatus/0830000000"),
        ("/messageStatus/+27%2083%20000%200000//", "/messagestatus/+27%2083%20000%200000"),
        ("/sends/7/?page=2&pageSize=5", "/sends/7?page=2&pageSize=5"),
        ("/sendsms/?message=a&msisdns=0830000000", "/sendsms?message=a&msisdns=0830000000"),
        ("/metrics/", "/metrics"),  # by redirect, so nginx's rule for /metrics applies
        ("/healthz/", "/healthz"),
        ("/normalize/", "/normalize"),  # the bare path answers GET with its own 405
    ],
)
def test_every_path_with_a_trailing_slash_is_redirected_with_301_for_get(base, path, location):
    moved = requests.get(f"{base}{path}", headers=JOE, allow_redirects=False)
    assert (moved.status_code, moved.headers["Location"]) == (301, location)


def test_a_slash_after_an_unknown_path_is_still_404(base):
    assert requests.get(f"{base}/nothing/", allow_redirects=False).status_code == 404
    assert requests.get(f"{base}/messagestatus/", allow_redirects=False).status_code == 404


def test_status_through_the_slash_answers_like_the_bare_path(base, db):
    requests.post(f"{base}/sendsms", json={"message": "x", "msisdns": ["0830000000"]}, headers=JOE)
    bare = requests.get(f"{base}/messagestatus/0830000000", headers=JOE).text
    assert bare != NO_DATA
    assert requests.get(f"{base}/messagestatus/0830000000/", headers=JOE).text == bare


def test_a_receipt_posted_with_a_trailing_slash_is_answered_where_it_was_signed(base):
    # Providers sign the URL they call: it is answered there, not redirected.
    answer = requests.post(f"{base}/callbacks/MockProvider/", data=b"[]", allow_redirects=False)
    assert answer.status_code == 403  # the fake's signature is missing: its own check ran
    assert "signature" in answer.json()["error"]


# --- 15.8: cross-site requests with a cookie are refused ---

COOKIE = f"session={secrets.token_hex(16)}"
BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Accept-Language": "en-US,en;q=0.9",
    "Accept-Encoding": "gzip, deflate, br",
    "Cookie": COOKIE,
}
# What Chrome sends for <form method="post" action=".../sendsms"> on a page of evil.example.
CROSS_SITE_FORM = {
    **BROWSER,
    "Cache-Control": "max-age=0",
    "Origin": EVIL,
    "Upgrade-Insecure-Requests": "1",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-User": "?1",
    "Sec-Fetch-Dest": "document",
    "Referer": f"{EVIL}/",
}
# ... and for <img src=".../sendsms?message=...&msisdns=..."> there: no Origin at all.
CROSS_SITE_IMAGE = {
    **BROWSER,
    "Accept": "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "no-cors",
    "Sec-Fetch-Dest": "image",
    "Referer": f"{EVIL}/",
}
# <form enctype="text/plain"> with <input name='{"message":"...","x":"' value='"}'>.
TEXT_PLAIN_FORM_BODY = '{"message":"Free airtime","msisdns":["0830000000"],"x":"="}\r\n'


def browser_requests(base):
    return {
        "urlencoded form": lambda: requests.post(
            f"{base}/sendsms",
            data="message=Free+airtime&msisdns=0830000000",
            headers={**CROSS_SITE_FORM, "Content-Type": "application/x-www-form-urlencoded"},
        ),
        "text/plain form": lambda: requests.post(
            f"{base}/sendsms",
            data=TEXT_PLAIN_FORM_BODY,
            headers={**CROSS_SITE_FORM, "Content-Type": "text/plain"},
        ),
        "img": lambda: requests.get(
            f"{base}/sendsms?message=Free+airtime&msisdns=0830000000", headers=CROSS_SITE_IMAGE
        ),
        # A browser without Sec-Fetch-* headers (older Safari, Firefox): Origin says it.
        "form without Sec-Fetch": lambda: requests.post(
            f"{base}/sendsms",
            data="message=Free+airtime&msisdns=0830000000",
            headers={
                **BROWSER,
                "Origin": EVIL,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        ),
        "sandboxed page": lambda: requests.post(
            f"{base}/normalize",
            data="msisdns=0830000000",
            headers={**BROWSER, "Origin": "null", "Content-Type": "text/plain"},
        ),
    }


@pytest.mark.parametrize(
    "kind",
    ["urlencoded form", "text/plain form", "img", "form without Sec-Fetch", "sandboxed page"],
)
def test_a_cross_site_browser_request_with_the_cookie_is_403_and_sends_nothing(
    base, auth, db, kind
):
    answer = browser_requests(base)[kind]()
    assert answer.status_code == 403
    assert answer.json()["error"].startswith("cross-site request refused")
    assert sendlog(db) == []
    assert auth.checks == []  # refused before the cookie went anywhere


def test_the_same_request_from_this_site_or_a_trusted_one_is_sent(base, auth, db):
    own_origin = base  # http://127.0.0.1:<port>: the page was served by this host
    same_origin = {**CROSS_SITE_FORM, "Origin": own_origin, "Sec-Fetch-Site": "same-origin"}
    older_browser = {**BROWSER, "Origin": own_origin}
    trusted = {**CROSS_SITE_FORM, "Origin": TRUSTED}
    typed_in_the_address_bar = {**CROSS_SITE_IMAGE, "Sec-Fetch-Site": "none"}
    form = "message=Hello&msisdns=0830000000"
    for headers in (same_origin, older_browser, trusted):
        answer = requests.post(
            f"{base}/sendsms",
            data=form,
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200, answer.text
    typed = requests.get(f"{base}/sendsms?{form}", headers=typed_in_the_address_bar)
    assert typed.status_code == 200
    assert len(sendlog(db)) == 4


def test_callers_with_an_authorization_header_are_not_checked_for_site(base, db):
    answer = requests.post(
        f"{base}/sendsms",
        data="message=From+a+script&msisdns=0830000000",
        headers={
            **CROSS_SITE_FORM,
            **JOE,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert answer.status_code == 200
    assert sendlog(db) == [("joe@example.com", "From a script")]


def test_reading_with_the_cookie_from_another_site_is_not_a_write(base, db):
    answer = requests.get(f"{base}/messagestatus/0830000000", headers=CROSS_SITE_IMAGE)
    assert (answer.status_code, answer.text) == (200, NO_DATA)


# --- 12.12: credentials too large to forward are 431, never 503 ---


def test_sixty_cookies_of_8kb_are_431_and_never_reach_the_auth_service(base, auth, db):
    address = urlsplit(base)
    body = json.dumps({"message": "hi", "msisdns": ["0830000000"]}).encode()
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    connection.putrequest("POST", "/sendsms")
    for index in range(60):  # each line under gunicorn's 8190-byte limit per header
        connection.putheader("Cookie", f"c{index}={'x' * 8000}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    answer = connection.getresponse()
    error = json.loads(answer.read())["error"]
    connection.close()
    assert answer.status == 431
    assert f"at most {MAX_FORWARDED_BYTES} can be forwarded" in error
    assert sendlog(db) == []
    assert auth.checks == []


def test_credentials_the_auth_service_refuses_as_too_large_are_431(base, auth, db):
    auth.refuse(431)
    answer = requests.post(
        f"{base}/sendsms", json={"message": "x", "msisdns": ["0830000000"]}, headers=JOE
    )
    assert answer.status_code == 431
    assert sendlog(db) == []


# --- 12.6: a caller sees its own sends ---

ALICE = {"Authorization": f"Bearer alice-{secrets.token_hex(8)}"}
BOB = {"Authorization": f"Bearer bob-{secrets.token_hex(8)}"}
ADMIN = {"Authorization": f"Bearer admin-{secrets.token_hex(8)}"}


@pytest.fixture
def people(auth):
    auth.allow_user(ALICE["Authorization"], "alice@example.com")
    auth.allow_user(BOB["Authorization"], "bob@example.com")
    auth.allow_user(ADMIN["Authorization"], "ops@example.com", roles=("4", ADMIN_ROLE))


def check_own_sends_only(base, alice, bob, admin):
    """alice sends; bob cannot read it (404, as an unknown ref) nor its number's status."""
    send = {"message": "Alice's secret", "msisdns": ["0830000000"]}
    ref = requests.post(f"{base}/sendsms", json=send, headers=alice).json()["refNumber"]
    unknown = str(int(ref) + 1000)

    own = requests.get(f"{base}/sends/{ref}", headers=alice)
    assert own.status_code == 200
    assert own.json()["send"]["message"] == "Alice's secret"
    assert own.json()["recipients"][0]["msisdn"] == "27830000000"
    other = requests.get(f"{base}/sends/{ref}", headers=bob)
    missing = requests.get(f"{base}/sends/{unknown}", headers=bob)
    assert (other.status_code, missing.status_code) == (404, 404)
    assert other.json() == {"error": f"no send with refNumber {ref}"}
    assert missing.json() == {"error": f"no send with refNumber {unknown}"}
    assert requests.get(f"{base}/sends/{ref}", headers=admin).json()["send"]["message"] == (
        "Alice's secret"
    )
    message = f"{base}/sends/{ref}/messages/0830000000"
    assert requests.get(message, headers=alice).status_code == 200
    assert requests.get(message, headers=bob).json() == {"error": f"no send with refNumber {ref}"}
    assert requests.get(message, headers=admin).status_code == 200

    alices_status = requests.get(f"{base}/messagestatus/0830000000", headers=alice).text
    assert alices_status != NO_DATA
    assert requests.get(f"{base}/messagestatus/27830000000", headers=bob).text == NO_DATA
    assert requests.get(f"{base}/messagestatus/0830000000", headers=admin).text == alices_status

    # Once bob sends to the number too, he sees his own message's status, alice hers.
    requests.post(
        f"{base}/sendsms", json={"message": "Bob's", "msisdns": ["0830000000"]}, headers=bob
    )
    assert requests.get(f"{base}/messagestatus/0830000000", headers=bob).text != NO_DATA


def test_a_serviceauth_caller_sees_only_its_own_sends_and_an_admin_all(base, people):
    check_own_sends_only(base, ALICE, BOB, ADMIN)


@pytest.fixture(scope="module")
def apikey_server(database_url, tmp_path_factory):
    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True}
    with gunicorn_server(config, database_url, tmp_path_factory.mktemp("apikey"), 1) as base:
        yield base


def test_an_api_key_sees_only_its_own_sends_and_an_admin_key_all(apikey_server, make_app, db):
    cli = make_app().test_cli_runner()

    def key(*args):
        result = cli.invoke(args=["api-key", "create", *args])
        assert result.exit_code == 0, result.output
        return {"X-API-Key": result.stdout.strip()}

    alice, bob, admin = key("alice"), key("bob"), key("ops", "--admin")
    listed = cli.invoke(args=["api-key", "list"]).stdout.splitlines()
    assert [line.split()[-2:] for line in listed if line.startswith("ops ")] == [
        ["active", "admin"]
    ]
    assert rows(db, "SELECT name, admin FROM api_keys ORDER BY id") == [
        ("alice", False),
        ("bob", False),
        ("ops", True),
    ]
    check_own_sends_only(apikey_server, alice, bob, admin)


def test_without_authentication_everyone_sees_everything(client, db):
    ref = client.post("/sendsms", json={"message": "x", "msisdns": ["0830000000"]}).get_json()
    assert client.get(f"/sends/{ref['refNumber']}").status_code == 200
    assert client.get("/messagestatus/0830000000").get_data(as_text=True) != NO_DATA


def later() -> str:
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds")


def state(base, ref, caller) -> str:
    return requests.get(f"{base}/sends/{ref}", headers=caller).json()["send"]["state"]


def test_only_the_sender_or_an_admin_cancels_a_send(base, people, auth):
    send = {"message": "Alice's later", "msisdns": ["0830000000"], "sendAt": later()}
    ref = requests.post(f"{base}/sendsms", json=send, headers=ALICE).json()["refNumber"]

    bobs = requests.post(f"{base}/sends/{ref}/cancel", headers=BOB)
    assert (bobs.status_code, bobs.json()) == (404, {"error": f"no send with refNumber {ref}"})
    checks = len(auth.checks)
    cross_site = requests.post(f"{base}/sends/{ref}/cancel", headers=CROSS_SITE_FORM)
    assert cross_site.status_code == 403
    assert len(auth.checks) == checks  # refused before the cookie went anywhere
    assert state(base, ref, ALICE) == "scheduled"

    admins = requests.post(f"{base}/sends/{ref}/cancel", headers=ADMIN)
    assert (admins.status_code, admins.json()["state"]) == (200, "cancelled")
    again = requests.post(f"{base}/sends/{ref}/cancel", headers=ALICE)
    assert (again.status_code, again.json()["refNumber"]) == (200, ref)
    assert state(base, ref, ALICE) == "cancelled"


def test_send_at_is_read_like_every_field(base, db):
    when = later()
    body = json.dumps({"Message": "later", "MSISDNS": ["0830000000"], "SENDAT": when})
    as_text = call(base, "POST", "/sendsms", body, "text/plain")
    assert as_text.status_code == 202, as_text.text
    query = call(base, "GET", f"/sendsms?message=q&msisdns=0840000000&sendat={quote(when)}")
    assert (query.status_code, query.json()["queuedNumbers"]) == (202, 1)
    for answer in (as_text, query):
        assert state(base, answer.json()["refNumber"], JOE) == "scheduled"

    twice = call(base, "GET", "/sendsms?message=q&msisdns=0840000000&sendAt=x&SendAt=y")
    assert twice.status_code == 406
    assert twice.json()["error"] == "sendAt: given more than once; give it once"
    assert len(sendlog(db)) == 2


# --- 15.9: the systemd unit listens at HTTPPort ---


def test_gunicorn_with_the_deploy_config_listens_at_http_port(database_url, db, tmp_path):
    unit = (ROOT / "deploy" / "messaging.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert "--bind" not in exec_start and "--config deploy/gunicorn.conf.py" in exec_start

    config = base_config()
    config["HTTPPort"] = free_port()
    args = ("--config", str(ROOT / "deploy" / "gunicorn.conf.py"))
    with gunicorn_server(config, database_url, tmp_path, 1, args=args, bind=False) as base:
        assert base == f"http://127.0.0.1:{config['HTTPPort']}"
        assert requests.get(f"{base}/ping").status_code == 200
