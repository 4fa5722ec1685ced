"""The service over real HTTP through gunicorn with two workers, and gunicorn's settings."""

import json
import os
import subprocess
import sys

import requests

from messaging import dispatch
from messaging.settings import call_budget
from tests.conftest import ROOT, base_config, rows


def test_send_status_normalize_and_ping_over_real_http(live_server, db):
    session = requests.Session()
    response = session.post(
        f"{live_server}/sendSMS",
        data={"message": "Hello over HTTP", "msisdns": "0830000000,0840000001,junk"},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["validNumbers"], body["invalidNumbers"], body["messagesSent"]) == (2, 1, 2)
    assert response.headers["X-Request-ID"]
    assert rows(db, "SELECT count(*) FROM sms WHERE sendlogid = %s", int(body["refNumber"])) == [
        (2,)
    ]
    status = session.get(f"{live_server}/messageStatus/0830000000")
    assert (status.status_code, status.text) == (200, "delivered")
    normalized = session.post(f"{live_server}/normalize", json={"msisdns": ["0820000000"]})
    assert normalized.json() == ["27820000000"]
    assert "Timestamp" in session.get(f"{live_server}/ping").json()
    bad = session.post(
        f"{live_server}/sendsms", data="{", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 406


def test_gunicorn_and_the_dispatch_lease_outlast_the_longest_provider_call(make_app, tmp_path):
    config = base_config(timeout=100, retries=2)
    services = make_app(config).extensions["messaging"]
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    env = {
        **os.environ,
        "MESSAGING_CONFIG": str(config_file),
        "MESSAGING_METRICS_DIR": str(tmp_path),
    }

    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy; print(runpy.run_path('deploy/gunicorn.conf.py')['timeout'])",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # 3 attempts of 100 s and 2 back-offs of at most 30 s.
    assert call_budget(services.config.provider) == 360
    assert read.stdout.strip() == "720", read.stderr
    assert dispatch.lease_seconds(services.config.provider) == 1.5 * 360 + 5
