"""authentication.service "apikey": keys managed with `flask api-key`, stored only as hashes."""

import hashlib
import re
import secrets

import pytest

from messaging.auth import ApiKeyAuth
from messaging.db import Database
from tests.conftest import base_config, free_port, rows
from tests.fake_auth import FakeAuthService, all_log_output

SEND = {"message": "Water off at 10:00", "msisdns": ["0830000000"]}
UNAUTHORIZED = {"error": "User unauthorized"}


def apikey_config() -> dict:
    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True}
    return config


@pytest.fixture
def api_app(make_app, db):
    app = make_app(apikey_config())
    with db.cursor() as cur:
        cur.execute("TRUNCATE api_keys RESTART IDENTITY")
    return app


@pytest.fixture
def client(api_app):
    return api_app.test_client()


@pytest.fixture
def cli(api_app):
    runner = api_app.test_cli_runner()
    return lambda *args: runner.invoke(args=["api-key", *args])


def create(cli, name: str) -> str:
    result = cli("create", name)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def send(client, **headers):
    return client.post("/sendsms", json=SEND, headers=headers)


def listed(cli) -> dict[str, list[str]]:
    """`flask api-key list` as {name: [created date, created time, last used..., status]}."""
    result = cli("list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "NAME"
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_api_key_lifecycle_create_use_list_revoke(cli, client, db):
    key = create(cli, "billing")
    assert re.fullmatch(r"msg_[A-Za-z0-9_-]{43}", key)
    assert listed(cli)["billing"][2:] == ["never", "active"]

    response = send(client, **{"X-API-Key": key})
    assert response.status_code == 200
    assert rows(db, "SELECT originator FROM sendlog") == [("billing",)]
    entry = listed(cli)["billing"]
    assert entry[2] != "never" and entry[-1] == "active"

    revoked = cli("revoke", "billing")
    assert (revoked.exit_code, revoked.stdout.strip()) == (0, "revoked API key 'billing'")
    response = send(client, **{"X-API-Key": key})
    assert (response.status_code, response.get_json()) == (401, UNAUTHORIZED)
    assert listed(cli)["billing"][-1] == "revoked"
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]


def test_a_bearer_token_is_a_key_too(cli, client, db):
    key = create(cli, "crm")
    assert send(client, Authorization=f"Bearer {key}").status_code == 200
    assert send(client, Authorization=f"bearer  {key} ").status_code == 200
    assert rows(db, "SELECT originator FROM sendlog") == [("crm",), ("crm",)]


def wrong_keys(key: str) -> list[dict]:
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    return [
        {},
        {"X-API-Key": flipped},
        {"X-API-Key": "msg_" + secrets.token_urlsafe(32)},
        {"X-API-Key": key[:-1]},
        {"X-API-Key": key + "x"},
        {"X-API-Key": key.removeprefix("msg_")},
        {"Authorization": f"Bearer {flipped}"},
        {"Authorization": key},
        {"Authorization": f"Basic {key}"},
        {"Authorization": "Bearer"},
        {"Cookie": f"session={key}"},
    ]


def test_wrong_keys_are_401_and_send_nothing(cli, client, db):
    key = create(cli, "billing")
    for headers in wrong_keys(key):
        response = send(client, **headers)
        assert (response.status_code, response.get_json()) == (401, UNAUTHORIZED), headers
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_a_key_is_shown_once_and_only_its_hash_is_stored(cli, db):
    result = cli("create", "billing")
    key = result.stdout.strip()
    assert "cannot be shown again" in result.stderr
    [row] = rows(db, "SELECT * FROM api_keys")
    assert hashlib.sha256(key.encode()).hexdigest() in row
    assert not any(key in str(column) for column in row)
    listing = cli("list").output
    assert key not in listing and hashlib.sha256(key.encode()).hexdigest() not in listing


def test_two_keys_have_their_own_names(cli, client, db):
    first, second = create(cli, "billing"), create(cli, "crm")
    assert first != second
    send(client, **{"X-API-Key": second})
    send(client, **{"X-API-Key": first})
    assert rows(db, "SELECT originator FROM sendlog ORDER BY id") == [("crm",), ("billing",)]


def test_a_duplicate_name_fails_and_changes_nothing(cli, db):
    create(cli, "billing")
    before = rows(db, "SELECT * FROM api_keys")
    result = cli("create", "billing")
    assert result.exit_code != 0
    assert "an API key named 'billing' already exists" in result.output
    assert not re.search(r"msg_[A-Za-z0-9_-]{43}", result.output)
    assert rows(db, "SELECT * FROM api_keys") == before


def test_a_revoked_name_is_not_reused(cli):
    create(cli, "billing")
    cli("revoke", "billing")
    assert cli("create", "billing").exit_code != 0


@pytest.mark.parametrize("name", ["", "has space", "-leading-dash", "x" * 101, "tab\there"])
def test_a_bad_name_is_refused_and_nothing_is_stored(cli, db, name):
    result = cli("create", "--", name)
    assert result.exit_code != 0
    assert "an API key name is 1-100 letters" in result.output
    assert rows(db, "SELECT count(*) FROM api_keys") == [(0,)]


def test_revoking_an_unknown_name_fails_clearly(cli, db):
    create(cli, "billing")
    result = cli("revoke", "biling")
    assert result.exit_code != 0
    assert "no API key named 'biling'" in result.output
    assert listed(cli)["billing"][-1] == "active"


def test_revoking_twice_says_so_and_succeeds(cli):
    create(cli, "billing")
    cli("revoke", "billing")
    again = cli("revoke", "billing")
    assert (again.exit_code, again.stdout.strip()) == (0, "API key 'billing' was already revoked")


def test_list_without_keys_says_so(cli):
    result = cli("list")
    assert (result.exit_code, result.stderr.strip()) == (0, "no API keys")


def test_last_used_is_written_at_most_once_a_minute(cli, client, db):
    key = create(cli, "billing")

    def last_used_ago(seconds: int):
        with db.cursor() as cur:
            cur.execute(
                "UPDATE api_keys SET last_used = (now() AT TIME ZONE 'utc') - make_interval("
                "secs => %s) RETURNING last_used",
                (seconds,),
            )
            return cur.fetchone()[0]

    recent = last_used_ago(30)
    assert send(client, **{"X-API-Key": key}).status_code == 200
    assert rows(db, "SELECT last_used FROM api_keys") == [(recent,)]

    stale = last_used_ago(61)
    assert send(client, **{"X-API-Key": key}).status_code == 200
    [(now,)] = rows(db, "SELECT last_used FROM api_keys")
    assert (now - stale).total_seconds() >= 60


def test_database_down_is_503_never_a_pass(api_app, cli, client, db):
    key = create(cli, "billing")
    dead = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/messaging")
    api_app.extensions["messaging.auth"] = ApiKeyAuth(dead)
    response = send(client, **{"X-API-Key": key})
    assert response.status_code == 503
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_ping_needs_no_key(client):
    assert client.get("/ping").status_code == 200


# --- no credential in logs, errors or the database ---


def test_no_credential_reaches_logs_errors_or_the_database(make_app, db, caplog, tmp_path):
    cookie_secret, token_secret = secrets.token_hex(16), secrets.token_hex(16)
    cookie, token = f"session={cookie_secret}", f"Bearer {token_secret}"
    answers = []
    with all_log_output(tmp_path / "messaging.log", caplog) as logged:
        # serviceauth: allowed, cached, refused, failing, slow, garbage, unreachable
        with FakeAuthService() as fake_auth:
            config = base_config()
            config["authentication"] = {
                "service": "serviceauth",
                "enabled": True,
                "url": fake_auth.url,
                "timeout": 0.3,
                "cacheSeconds": 0,
            }
            service_client = make_app(config).test_client(use_cookies=False)
            both = {"Cookie": cookie, "Authorization": token}
            for script in (
                fake_auth.allow,
                lambda: fake_auth.allow(roles=["2"]),
                lambda: fake_auth.refuse(401),
                lambda: fake_auth.fail(500),
                lambda: fake_auth.answer_with("<html>login</html>"),
                lambda: fake_auth.slow(5),
            ):
                script()
                answers.append(send(service_client, **both))
        config["authentication"]["url"] = f"http://127.0.0.1:{free_port()}"
        answers.append(send(make_app(config).test_client(use_cookies=False), **both))

        # apikey: create, use both ways, wrong key, revoke, revoked key
        app = make_app(apikey_config())
        runner = app.test_cli_runner()
        key = runner.invoke(args=["api-key", "create", "billing"]).stdout.strip()
        client = app.test_client()
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            answers.append(send(client, **headers))
        answers.append(send(client, **{"X-API-Key": key[:-1] + "Z"}))
        runner.invoke(args=["api-key", "list"])
        runner.invoke(args=["api-key", "revoke", "billing"])
        answers.append(send(client, **{"X-API-Key": key}))
        output = logged()

    secrets_used = [cookie_secret, token_secret, key, key.removeprefix("msg_")]
    assert [answer.status_code for answer in answers] == [
        *(200, 401, 401, 503, 503, 503, 503),
        *(200, 200, 401, 401),
    ]
    for source, text in output.items():  # every capture saw the flows
        assert "POST /sendsms 401" in text and "auth service answered 500" in text, source
    assert "GET /auth2/check" in output["caplog"]  # urllib3 and werkzeug lines too
    text = "".join(output.values())
    stored = rows(db, "SELECT row_to_json(k)::text FROM api_keys k") + rows(
        db, "SELECT row_to_json(s)::text FROM sendlog s"
    )
    for secret in secrets_used:
        assert secret not in text
        assert not any(secret in answer.get_data(as_text=True) for answer in answers)
        assert not any(secret in row[0] for row in stored)
