"""Operator endpoints: /healthz, /metrics (across gunicorn workers), /openapi.json, /docs."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser

import psycopg2
import pytest
import requests
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_spec_validator import validate as validate_spec
from prometheus_client.parser import text_string_to_metric_families
from psycopg2 import sql
from werkzeug.test import EnvironBuilder

from messaging import metrics, openapi
from messaging.ops import HealthCheck
from messaging.polling import PollSummary
from messaging.providers.mock import receipt_signature
from tests.conftest import ROOT, base_config, free_port, gunicorn_server

GUNICORN_CONF = str(ROOT / "deploy" / "gunicorn.conf.py")


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return 0.0


# --- /healthz ---


def test_healthz_says_ok_when_the_database_answers(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json == {"status": "ok", "database": "ok", "provider": "MockProvider"}


def test_healthz_is_503_naming_the_database_when_it_goes_away(make_app, make_database, pg_server):
    url = make_database("messaging_health")
    client = make_app(url=url).test_client()
    assert client.get("/healthz").status_code == 200
    name = psycopg2.extensions.parse_dsn(url)["dbname"]
    conn = psycopg2.connect(pg_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    conn.close()

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["database"].startswith("unavailable: ")
    assert name in response.json["database"]
    assert response.json["provider"] == "MockProvider"


def test_health_check_of_a_closed_port_fails_fast_and_shows_no_password():
    check = HealthCheck(f"postgresql://messaging:s3cret-pw@127.0.0.1:{free_port()}/messaging")

    answer = check.database()

    assert answer.startswith("unavailable: ")
    assert "refused" in answer.lower()
    assert "s3cret-pw" not in answer


def test_health_and_metrics_and_docs_need_no_credentials_when_auth_is_on(make_app):
    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True}
    client = make_app(config).test_client()

    assert (
        client.post("/sendsms", data={"message": "x", "msisdns": "0830000000"}).status_code == 401
    )
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs", "/ping"):
        assert client.get(path).status_code == 200, path


# --- /metrics in one process (tests, flask run) ---


def test_metrics_count_requests_messages_and_provider_calls(client):
    before = client.get("/metrics").text

    client.post("/sendsms", data={"message": "Hi", "msisdns": "0830000000,0830000009"})
    client.post("/sendsms", data={"message": ""})
    client.get("/messagestatus/0830000000")
    after = client.get("/metrics").text

    def grew(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    send = {"endpoint": "api.send_sms", "method": "POST"}
    assert grew("messaging_http_requests_total", **send, status="200") == 1
    assert grew("messaging_http_requests_total", **send, status="406") == 1
    assert grew("messaging_http_request_duration_seconds_count", endpoint="api.send_sms") == 2
    assert grew("messaging_messages_total", provider="MockProvider", status="sent") == 1
    assert grew("messaging_messages_total", provider="MockProvider", status="failed") == 1
    provider = {"provider": "MockProvider"}
    assert (
        grew("messaging_provider_request_duration_seconds_count", **provider, operation="send") == 1
    )
    assert (
        grew("messaging_provider_request_duration_seconds_count", **provider, operation="status")
        == 1
    )


def test_metrics_count_provider_errors_by_code(make_app):
    client = make_app(base_config(token="nocredit")).test_client()
    before = client.get("/metrics").text

    body = client.post("/sendsms", data={"message": "Hi", "msisdns": "0830000000"}).json
    after = client.get("/metrics").text

    assert body["sendSuccess"] is False
    labels = {"provider": "MockProvider", "operation": "send", "code": "301"}
    assert (
        sample(after, "messaging_provider_errors_total", **labels)
        - sample(before, "messaging_provider_errors_total", **labels)
        == 1
    )


def test_poll_runs_are_counted_in_process(client):
    before = client.get("/metrics").text

    metrics.record_poll_run({"checked": 5, "delivered": 3, "note": "not a number"})
    metrics.record_poll_run({"checked": 1}, ok=False)
    after = client.get("/metrics").text

    assert (
        sample(after, "messaging_poll_runs_total", outcome="ok")
        - sample(before, "messaging_poll_runs_total", outcome="ok")
        == 1
    )
    assert (
        sample(after, "messaging_poll_runs_total", outcome="error")
        - sample(before, "messaging_poll_runs_total", outcome="error")
        == 1
    )
    assert (
        sample(after, "messaging_poll_messages_total", result="checked")
        - sample(before, "messaging_poll_messages_total", result="checked")
        == 6
    )
    assert sample(after, "messaging_poll_last_run_timestamp_seconds") > 0


def test_poll_runs_from_cron_processes_add_up_in_the_shared_directory(
    client, tmp_path, monkeypatch
):
    monkeypatch.setenv(metrics.METRICS_DIR_ENV, str(tmp_path))

    metrics.record_poll_run(PollSummary(checked=4, delivered=4, seconds=0.5))
    metrics.record_poll_run(PollSummary(checked=2, failed=1, errors=1, seconds=0.25))
    text = client.get("/metrics").text

    assert sample(text, "messaging_poll_runs_total", outcome="ok") == 1
    assert sample(text, "messaging_poll_runs_total", outcome="error") == 1
    assert sample(text, "messaging_poll_messages_total", result="checked") == 6
    assert sample(text, "messaging_poll_messages_total", result="failed") == 1
    assert sample(text, "messaging_poll_run_seconds_total") == 0.75
    assert json.loads((tmp_path / metrics.POLL_STATE_FILE).read_text())["runs"] == {
        "ok": 1,
        "error": 1,
    }


# --- /metrics across gunicorn workers ---


def test_metrics_scraped_from_any_worker_sum_both_workers(database_url, db, tmp_path):
    metrics_dir = tmp_path / "metrics"
    with gunicorn_server(
        base_config(),
        database_url,
        tmp_path,
        workers=2,
        args=("--config", GUNICORN_CONF),
        extra_env={metrics.MULTIPROC_ENV: str(metrics_dir)},
    ) as base:
        # Several at once, each on its own connection, so both sync workers answer some.
        def ping(_):
            return requests.get(f"{base}/ping", headers={"Connection": "close"}).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(ping, range(60))) == {200}
        sent = requests.post(
            f"{base}/sendsms", data={"message": "Hi", "msisdns": "0830000000,0840000001"}
        ).json()
        scrapes = [
            requests.get(f"{base}/metrics", headers={"Connection": "close"}).text for _ in range(6)
        ]

    writers = {re.search(r"_(\d+)\.db$", path.name).group(1) for path in metrics_dir.glob("*.db")}
    assert len(writers) == 2, "both workers served requests"
    assert sent["messagesSent"] == 2
    pings = {"endpoint": "api.ping", "method": "GET", "status": "200"}
    for text in scrapes:
        # The readiness probe's pings come on top of the 60.
        assert sample(text, "messaging_http_requests_total", **pings) >= 60
        assert sample(text, "messaging_messages_total", provider="MockProvider", status="sent") == 2
    assert len({sample(text, "messaging_http_requests_total", **pings) for text in scrapes}) == 1


# --- /openapi.json and /docs ---


def test_openapi_document_is_valid_and_documents_every_endpoint(app, client):
    spec = client.get("/openapi.json").json

    validate_spec(spec)
    assert openapi.undocumented(app) == set()
    assert spec["openapi"].startswith("3.")
    assert {"/sendsms", "/messagestatus/{msisdn}", "/normalize", "/ping"} <= set(spec["paths"])
    assert {"/healthz", "/metrics", "/openapi.json", "/docs"} <= set(spec["paths"])
    send = spec["paths"]["/sendsms"]["post"]
    assert {"200", "401", "406", "413", "500", "503"} <= set(send["responses"])
    assert "X-Request-ID" in send["responses"]["200"]["headers"]
    assert set(spec["components"]["schemas"]["SendSmsResponse"]["properties"]) == {
        "refNumber",
        "validNumbers",
        "invalidNumbers",
        "duplicateNumbers",
        "sendSuccess",
        "statusDescription",
        "messagesSent",
        "segments",
        "encoding",
    }


@pytest.fixture
def checked(make_app):
    """Make a test client whose every request and response is validated against /openapi.json."""

    def make(config=None):
        client = make_app(config).test_client()
        document = OpenAPI.from_dict(client.get("/openapi.json").json)

        def call(method, path, bad_request=False, **kwargs):
            response = client.open(path, method=method, **kwargs)
            # The app has read the body of response.request: describe the request anew.
            sent = EnvironBuilder(path=path, method=method, **kwargs).get_request()
            request = WerkzeugOpenAPIRequest(sent)
            if not bad_request:
                document.validate_request(request)
            document.validate_response(request, WerkzeugOpenAPIResponse(response))
            return response

        return call

    return make


def test_real_responses_match_the_document(checked):
    call = checked(base_config(maxMessageSegments=1, token="receipt-secret"))
    hi = {"message": "Hi", "msisdns": ["0830000000"]}
    ref = call("POST", "/sendsms", json=hi).json["refNumber"]
    receipt = json.dumps({"id": "unknown-id", "status": "delivered"}).encode()
    signed = {"X-Mock-Signature": receipt_signature("receipt-secret", receipt)}
    exchanges = [
        ("POST", "/sendsms", {"data": {"message": "Hi", "msisdns": "0840000001,junk"}}, 200),
        ("GET", "/sendsms", {"query_string": {"message": "Hi", "msisdns": "0840000002"}}, 200),
        ("POST", "/sendsms", {"json": {**hi, "message": "x" * 200}}, 406),
        ("POST", "/sendsms", {"json": hi, "headers": {"Idempotency-Key": "k-1"}}, 200),
        ("GET", "/messagestatus/0830000000", {}, 200),
        ("GET", "/messagestatus/0820000000", {}, 200),
        ("GET", f"/sends/{ref}", {"query_string": {"page": "1", "pageSize": "10"}}, 200),
        ("GET", "/sends/999999", {}, 404),
        ("GET", "/sends/abc", {}, 406),
        ("POST", "/callbacks/MockProvider", {"data": receipt, "headers": signed}, 200),
        ("POST", "/callbacks/MockProvider", {"data": receipt}, 403),
        ("POST", "/callbacks/OtherProvider", {"data": receipt}, 404),
        ("POST", "/normalize", {"json": {"msisdns": ["0830000000", "x"]}}, 200),
        ("POST", "/normalize", {"data": {"msisdns": "0830000000"}}, 200),
        ("GET", "/ping", {}, 200),
        ("GET", "/healthz", {"headers": {"X-Request-ID": "lb-check-1"}}, 200),
        ("GET", "/metrics", {}, 200),
        ("GET", "/openapi.json", {}, 200),
        ("GET", "/docs", {}, 200),
    ]
    for method, path, kwargs, status in exchanges:
        assert call(method, path, **kwargs).status_code == status, (method, path)
    bad = call("POST", "/normalize", json={"numbers": []}, bad_request=True)
    assert bad.status_code == 406
    assert (
        call("GET", "/healthz", headers={"X-Request-ID": "lb-1"}).headers["X-Request-ID"] == "lb-1"
    )


def test_error_answers_match_the_document(checked):
    secured = base_config()
    secured["authentication"] = {"service": "apikey", "enabled": True}
    small = base_config()
    small["MaxBodyBytes"] = 1000
    call_secured, call_small = checked(secured), checked(small)
    big = {"message": "Hi", "msisdns": ["0830000000"] * 200}

    assert (
        call_secured(
            "POST", "/sendsms", json={"message": "Hi", "msisdns": ["0830000000"]}
        ).status_code
        == 401
    )
    assert (
        call_secured("GET", "/messagestatus/0830000000", headers={"X-API-Key": "nope"}).status_code
        == 401
    )
    assert call_small("POST", "/normalize", json=big).status_code == 413
    assert call_small("POST", "/sendsms", json=big).status_code == 413


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_is_served_with_its_own_files_and_no_cdn(client):
    page = client.get("/docs")
    assets = _Assets()
    assets.feed(page.text)

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert "//" not in page.text.replace("<!DOCTYPE html>", "")
    assert len(assets.urls) == 4
    for url in assets.urls:
        assert url.startswith("/docs/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.data, url
    assert len(client.get("/docs/swagger-ui-bundle.js").data) > 100_000
    assert "/openapi.json" in client.get("/docs/init.js").text
    assert client.get("/docs/../setup.cfg").status_code == 404
    assert client.get("/docs/index.j2").status_code == 404
