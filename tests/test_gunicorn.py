"""The service over real HTTP through gunicorn with two workers, and gunicorn's settings."""

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from messaging import dispatch
from messaging.settings import call_budget
from tests.conftest import ROOT, base_config, free_port, rows

DEPLOY_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"


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


@pytest.mark.parametrize("worker_class", ["sync", "messaging.httpworker.HeadFirstWorker"])
def test_a_stop_while_a_worker_boots_ends_gunicorn_before_its_graceful_timeout(
    database_url, db, tmp_path, worker_class
):
    """gunicorn passes a stop to a worker still booting, before the worker handles signals
    itself (`make run` killed just after "serving on", with its second worker booting).
    The deploy config's hooks hand that stop to the worker once it can act on it."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(base_config()))
    # The deploy config, with a second worker that boots until the stop has been sent.
    sent = tmp_path / "stop-sent"
    (tmp_path / "slow_boot.conf.py").write_text(
        f"exec(open({str(DEPLOY_CONFIG)!r}).read())\n"
        "deploy_post_fork = post_fork\n"
        "def post_fork(server, worker):\n"
        "    deploy_post_fork(server, worker)\n"
        "    import os, time\n"
        "    deadline = time.monotonic() + 30\n"
        f"    while worker.age == 2 and not os.path.exists({str(sent)!r}):\n"
        "        assert time.monotonic() < deadline\n"
        "        time.sleep(0.02)\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "MESSAGING_CONFIG": str(config_file),
        "MESSAGING_DATABASE_URL": database_url,
        "MESSAGING_METRICS_DIR": str(tmp_path / "metrics"),
    }
    command = [
        *(sys.executable, "-m", "gunicorn", "--config", str(tmp_path / "slow_boot.conf.py")),
        *("--workers", "2", "--worker-class", worker_class, "--bind", f"127.0.0.1:{port}"),
        *("--no-control-socket", "wsgi:app"),
    ]
    with open(tmp_path / "gunicorn.log", "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not answers(f"http://127.0.0.1:{port}/ping"):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.terminate()
        # The master has passed the stop on to both workers once the first one leaves.
        while "Worker exiting" not in (tmp_path / "gunicorn.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sent.touch()
        # Without the hooks the master waits out graceful_timeout (60 s) for the second.
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
    output = (tmp_path / "gunicorn.log").read_text()
    assert output.count("Worker exiting") == 2, output


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False
