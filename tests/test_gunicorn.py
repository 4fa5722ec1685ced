"""The service over real HTTP through gunicorn with two workers."""

import requests

from tests.conftest import rows


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
