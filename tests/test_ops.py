"""/healthz: readiness for a load balancer, and the operator endpoints open to anyone."""

import psycopg2
from psycopg2 import sql

from messaging.db import HealthCheck
from tests.conftest import base_config, free_port

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
