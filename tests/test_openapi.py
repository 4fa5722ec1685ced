"""/openapi.json from the code: every route documented, answers matching it; /docs."""

import json
from html.parser import HTMLParser

import pytest
from flask import Flask
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_spec_validator import validate as validate_spec
from werkzeug.test import EnvironBuilder

from messaging import openapi
from messaging.providers.mock import receipt_signature
from tests.conftest import base_config

# --- /openapi.json and /docs ---


# Routes that are no API: the docs page's own files and the operator's HTML pages.
UNDOCUMENTED = {"ops.docs_file", "ops.docs_init"}


def undocumented(endpoint: str) -> bool:
    return endpoint in UNDOCUMENTED or endpoint.startswith("admin.")


def routes(app) -> list:
    """(rule, method) of every route the app answers, but the undocumented ones."""
    return [
        (rule, method.lower())
        for rule in app.url_map.iter_rules()
        if not undocumented(rule.endpoint)
        for method in rule.methods - {"HEAD", "OPTIONS"}
    ]


def test_only_the_docs_files_and_the_operators_pages_are_left_out(app, client):
    paths = client.get("/openapi.json").json["paths"]
    rules = app.url_map.iter_rules()
    left_out = {rule.endpoint for rule in rules if openapi.openapi_path(rule) not in paths}

    assert left_out and all(undocumented(endpoint) for endpoint in left_out)
    assert "/sends/{refNumber}/failed.csv" in paths


def operations(spec) -> set[tuple[str, str]]:
    return {(path, method) for path, item in spec["paths"].items() for method in item}


def test_the_document_is_valid_openapi_3(client):
    spec = client.get("/openapi.json").json

    validate_spec(spec)
    assert spec["openapi"].startswith("3.")


def test_every_registered_route_is_documented(app, client):
    spec = client.get("/openapi.json").json
    documented = operations(spec)

    for rule, method in routes(app):
        assert (openapi.openapi_path(rule), method) in documented, (rule.rule, method)
    assert len(documented) == len(routes(app)) == 23


def test_every_documented_operation_exists(app, client):
    adapter = app.url_map.bind("localhost")

    for path, method in operations(client.get("/openapi.json").json):
        concrete = path.replace("{msisdn}", "0830000000").replace("{refNumber}", "1")
        concrete = concrete.replace("{provider}", "MockProvider")
        rule, _ = adapter.match(concrete, method.upper(), return_rule=True)
        assert openapi.openapi_path(rule) == path, (path, method)


def test_only_the_public_views_are_documented_without_credentials(client):
    spec = client.get("/openapi.json").json

    open_operations = {
        (path, method)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if "security" not in operation
    }
    assert {path for path, _ in open_operations} == {
        "/ping",
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/docs",
        "/callbacks/{provider}",
        "/callbacks/{provider}/",  # where a provider configured with the slash signs
        "/callbacks/{provider}/inbound",
    }
    for path, method in operations(spec) - open_operations:
        assert {"401", "431", "503"} <= set(spec["paths"][path][method]["responses"]), path
    # A cookie's cross-site refusal (403) is documented where it applies: what sends or
    # changes anything, and /sendsms by any method.
    cross_site = {
        (path, method)
        for path, method in operations(spec) - open_operations
        if "allowedOrigins"
        in spec["paths"][path][method]["responses"].get("403", {}).get("description", "")
    }
    assert cross_site == {
        ("/sendsms", "get"),
        ("/sendsms", "post"),
        ("/normalize", "post"),
        ("/sends/{refNumber}/cancel", "post"),
        ("/optouts/{msisdn}", "put"),
        ("/optouts/{msisdn}", "delete"),
    }
    assert "allowedOrigins" in spec["paths"]["/sendsms"]["get"]["responses"]["403"]["description"]
    for path in ("/ping", "/healthz", "/metrics", "/openapi.json", "/docs"):
        assert f"`{path}`" in spec["info"]["description"]


def test_the_document_takes_parameters_and_bodies_from_the_schemas(client):
    spec = client.get("/openapi.json").json

    send = spec["paths"]["/sendsms"]["post"]
    assert {"200", "202", "401", "403", "406", "409", "413", "429", "431", "500", "503"} == set(
        send["responses"]
    )
    assert "X-Request-ID" in send["responses"]["200"]["headers"]
    assert send["summary"] == "Send one text to a list of numbers"
    assert send["description"].startswith("Numbers are cleaned and de-duplicated")
    assert [p["name"] for p in send["parameters"]] == ["Idempotency-Key", "Prefer", "X-Request-ID"]
    assert send["requestBody"]["content"] == {
        kind: {"schema": {"$ref": "#/components/schemas/SendSmsRequest"}}
        for kind in ("application/json", "application/x-www-form-urlencoded")
    }
    query = {p["name"]: p for p in spec["paths"]["/sendsms"]["get"]["parameters"]}
    assert {name: p["required"] for name, p in query.items() if p["in"] == "query"} == {
        "message": True,
        "msisdns": True,
        "from": False,
        "sendAt": False,
        "callbackUrl": False,
    }
    assert query["msisdns"]["schema"] == {"type": "string"}
    paging = {p["name"]: p for p in spec["paths"]["/sends/{refNumber}"]["get"]["parameters"]}
    assert paging["refNumber"]["in"] == "path" and paging["refNumber"]["required"]
    assert paging["pageSize"]["schema"]["default"] == "100"
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
        "queuedNumbers",
        "optedOutNumbers",
    }


def test_a_view_without_a_docstring_or_with_a_method_it_lacks_is_refused():
    app = Flask(__name__, static_folder=None)
    app.add_url_rule("/bare", "bare", lambda: "")
    with pytest.raises(ValueError, match="bare has no docstring"):
        openapi.build_spec(app)

    def wrong():
        """Answer something.
        ---
        post: {responses: {200: {description: never}}}
        """

    app = Flask(__name__, static_folder=None)
    app.add_url_rule("/wrong", "wrong", wrong, methods=["GET"])
    with pytest.raises(ValueError, match=r"wrong documents \['post'\]"):
        openapi.build_spec(app)


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
    stop = json.dumps({"id": "mo-1", "from": "0830000000", "to": "32020", "text": "STOP"}).encode()
    stop_signed = {"X-Mock-Signature": receipt_signature("receipt-secret", stop)}
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
        ("POST", "/callbacks/MockProvider/inbound", {"data": stop, "headers": stop_signed}, 200),
        ("POST", "/callbacks/MockProvider/inbound", {"data": stop}, 403),
        ("GET", "/inbound", {"query_string": {"since": "2026-01-01", "pageSize": "5"}}, 200),
        ("GET", "/inbound", {"query_string": {"since": "soon"}}, 406),
        ("GET", "/optouts/0830000000", {}, 200),
        ("DELETE", "/optouts/0830000000", {}, 204),
        ("GET", "/optouts/0830000000", {}, 404),
        ("PUT", "/optouts/0830000000", {}, 201),
        ("PUT", "/optouts/0830000000", {}, 200),
        ("PUT", "/optouts/123", {}, 406),
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


def test_a_refusal_over_a_limit_matches_the_document(checked):
    limited = base_config()
    limited["limits"] = {"recipientsPerDay": 1}
    call = checked(limited)
    hi = {"message": "Hi", "msisdns": ["0830000000"]}
    assert call("POST", "/sendsms", json=hi).status_code == 200
    refused = call("POST", "/sendsms", json=hi)
    assert refused.status_code == 429
    assert refused.get_json()["limit"] == "recipientsPerDay"
    assert refused.headers["Retry-After"].isdigit()
    query = {"message": "Hi", "msisdns": "0840000000"}
    assert call("GET", "/sendsms", query_string=query).status_code == 429


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
