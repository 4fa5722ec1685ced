"""/metrics: requests, messages, provider calls and poll-status runs, summed over gunicorn
workers and cron runs."""

import http
import json
import random
import re
import string
from concurrent.futures import ThreadPoolExecutor

import requests
from prometheus_client.parser import text_string_to_metric_families

from messaging import metrics
from messaging.polling import PollSummary
from tests.conftest import ROOT, base_config, gunicorn_server

GUNICORN_CONF = str(ROOT / "deploy" / "gunicorn.conf.py")


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return 0.0


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


def test_invented_methods_and_paths_add_no_series_to_metrics(app, database_url, db, tmp_path):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()} | {"unmatched"}
    statuses = {str(status.value) for status in http.HTTPStatus}
    with gunicorn_server(
        base_config(),
        database_url,
        tmp_path,
        args=("--config", GUNICORN_CONF),
        extra_env={metrics.MULTIPROC_ENV: str(tmp_path / "metrics")},
    ) as base:
        session = requests.Session()

        def series() -> list[dict]:
            text = session.get(f"{base}/metrics").text
            return [
                {**found.labels, "value": found.value}
                for family in text_string_to_metric_families(text)
                for found in family.samples
                if found.name == "messaging_http_requests_total"
            ]

        before = series()
        rng = random.Random(12)
        for _ in range(500):
            method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
            path = rng.choice(["/ping", "/sendsms", f"/x{rng.randrange(10**9)}"])
            assert session.request(method, base + path).status_code in (404, 405)
        after = series()

    def keys(labels_list):
        return {(labels["endpoint"], labels["method"], labels["status"]) for labels in labels_list}

    assert keys(after) - keys(before) <= {
        ("ops.metrics_view", "GET", "200"),  # the first scrape counted itself after answering
        ("unmatched", "other", "404"),
        ("unmatched", "other", "405"),
    }
    assert sum(labels["value"] for labels in after if labels["method"] == "other") == 500
    assert all(labels["method"] in metrics.HTTP_METHODS | {"other"} for labels in after)
    assert all(labels["endpoint"] in endpoints for labels in after)
    assert all(labels["status"] in statuses for labels in after)


# --- /openapi.json and /docs ---
