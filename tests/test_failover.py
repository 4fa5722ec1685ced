"""Several providers (issue 18): failover without doubles, health-weighted choice that
recovers step by step, routing rules, and receipts and polls following the provider that
carried each message. The providers are two Clickatell-shaped fakes, real HTTP servers."""

import re
import threading
import time
from collections import Counter

import pytest

from messaging import dispatch, service
from messaging.config import ConfigError, config_from_mapping
from messaging.health import WindowCounts, next_factor
from messaging.settings import HealthSettings
from tests.conftest import base_config, rows
from tests.providers.fakes import FakeProvider, Reply
from tests.test_reconcile import assert_counters_match_messages

PRIMARY, BACKUP = "Clickatell", "clickatell-backup"


class ClickatellFake:
    """Clickatell's legacy REST: accepts batches (ids m1, m2, ... of its own, so both fakes
    hand out the same ids), answers status queries "004" delivered, and refuses every send
    with `refusal` (status, body) once `down_after` batches went through or `down` is set.
    Per-number errors come from `rejects` (number -> error code)."""

    def __init__(self, latency=0.02, down_after=None):
        self.latency = latency
        self.down_after = down_after
        self.down = threading.Event()
        self.refusal = (503, {"error": "busy"})
        self.rejects: dict[str, str] = {}
        self.received: Counter[str] = Counter()
        self.batches: list[int] = []  # sizes of the accepted batches
        self.refused = 0
        self.issued: dict[str, str] = {}  # provider id -> number
        self.polled: list[str] = []
        self._lock = threading.Lock()
        self.server = FakeProvider()
        self.server.default = self.answer
        self.url = self.server.url

    def answer(self, recorded) -> Reply:
        if recorded.method == "GET":
            provider_id = recorded.path.rsplit("/", 1)[-1]
            with self._lock:
                self.polled.append(provider_id)
            return Reply(200, {"data": {"apiMessageId": provider_id, "messageStatus": "004"}})
        time.sleep(self.latency)
        with self._lock:
            if self.down_after is not None and len(self.batches) >= self.down_after:
                self.down.set()
            if self.down.is_set():
                self.refused += 1
                return Reply(*self.refusal)
            entries = []
            for number in recorded.json["to"]:
                self.received[number] += 1
                if number in self.rejects:
                    code = self.rejects[number]
                    error = {"code": code, "description": f"error {code}"}
                    entries.append({"accepted": False, "to": number, "error": error})
                    continue
                provider_id = f"m{len(self.issued) + 1}"
                self.issued[provider_id] = number
                entries.append({"accepted": True, "to": number, "apiMessageId": provider_id})
            self.batches.append(len(entries))
        return Reply(202, {"data": {"message": entries}})

    def stop(self):
        self.server.stop()


@pytest.fixture
def fakes():
    primary, backup = ClickatellFake(), ClickatellFake()
    yield primary, backup
    primary.stop()
    backup.stop()


def provider(url, secret, **settings):
    return {
        "name": "Clickatell",
        "url": url,
        "token": "t",
        "timeout": 5,
        "retries": 0,
        "options": {"callbackSecret": secret},
        **settings,
    }


def two_providers(primary, backup, backup_settings=None, **health):
    config = base_config(
        **provider(primary.url, "secret-a", maxBatchSize=100, maxRecipients=100_000),
        waitSeconds=120,
        maxConcurrentRequests=2,
    )
    config["smsProviders"] = [
        {**provider(backup.url, "secret-b", id=BACKUP, maxBatchSize=50), **(backup_settings or {})}
    ]
    config["providerHealth"] = {
        "window": "3s",
        "minCalls": 2,
        "recoveryInterval": "1s",
        "recoveryStep": 0.5,
        **health,
    }
    return config


def numbers(count, prefix="083"):
    return [f"{prefix}{n:07d}" for n in range(count)]


def international(local):
    return "27" + local[1:]


def wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def factor_of(services, name):
    return services.health.refresh().get(name, 1.0)


def test_a_provider_going_down_mid_send_hands_the_rest_to_the_other_each_message_once(
    make_app, db, fakes
):
    primary, backup = fakes
    primary.down_after = 5  # 500 recipients, then 503 for every request
    app = make_app(two_providers(primary, backup, {"weight": 0}))  # a standby
    client = app.test_client()
    services = app.extensions["messaging"]
    sent = numbers(2000)

    body = client.post("/sendsms", json={"message": "hi", "msisdns": sent}).get_json()

    assert (body["messagesSent"], body["queuedNumbers"], body["sendSuccess"]) == (2000, 0, True)
    everyone = primary.received + backup.received
    assert set(everyone) == {international(n) for n in sent}
    assert max(everyone.values()) == 1
    assert sum(primary.batches) == 500 and primary.refused >= 1
    assert sum(backup.batches) == 1500 and max(backup.batches) <= 50  # split to its size
    carried = dict(rows(db, "SELECT provider, count(*) FROM sms GROUP BY 1"))
    assert carried == {PRIMARY: 500, BACKUP: 1500}
    assert rows(db, "SELECT count(*) FROM sms WHERE status = 'sent'") == [(2000,)]
    moved = rows(
        db,
        "SELECT DISTINCT e.smsid, e.status, e.reason FROM sms_events AS e "
        "WHERE e.source = 'failover'",
    )
    backup_ids = {i for (i,) in rows(db, "SELECT id FROM sms WHERE provider = %s", BACKUP)}
    assert moved and {sms_id for sms_id, _, _ in moved} <= backup_ids
    assert all(status == "queued" for _, status, _ in moved)
    assert all(
        reason.startswith(f"moved from {PRIMARY} to {BACKUP}: Error 503") for *_, reason in moved
    )
    wait_until(lambda: factor_of(services, PRIMARY) == 0.0)  # judged once a second
    assert_counters_match_messages(db)

    # A moved message's history says so, before it was sent by the other provider.
    number = next(n for n in sent if int(international(n)[-4:]) >= 1500)
    history = client.get(f"/sends/{body['refNumber']}/messages/{number}").get_json()
    assert history["provider"] == BACKUP
    assert [event["source"] for event in history["events"]][-2:] == ["failover", "send"]


def test_receipts_and_polls_reach_the_rows_of_the_provider_that_carried_them(make_app, db, fakes):
    primary, backup = fakes
    primary.down_after = 2
    app = make_app(two_providers(primary, backup, {"weight": 0}))
    client = app.test_client()
    client.post("/sendsms", json={"message": "hi", "msisdns": numbers(400)})
    # Both providers handed out m1, m2, ...: the same ids, for different messages.
    assert {"m1", "m2", "m3"} <= primary.issued.keys() & backup.issued.keys()

    to_backup = client.post(
        "/callbacks/clickatell-backup?secret=secret-b", json={"apiMsgId": "m1", "status": "005"}
    )
    to_primary = client.post(
        "/callbacks/Clickatell?secret=secret-a", json={"apiMsgId": "m2", "status": "004"}
    )
    wrong_secret = client.post(
        "/callbacks/clickatell-backup?secret=secret-a", json={"apiMsgId": "m3", "status": "004"}
    )

    assert to_backup.get_json()["updated"] == 1 and to_primary.get_json()["updated"] == 1
    assert wrong_secret.status_code == 403
    settled = rows(db, "SELECT provider, providerid, status FROM sms WHERE status <> 'sent'")
    assert sorted(settled) == [(PRIMARY, "m2", "delivered"), (BACKUP, "m1", "failed")]

    result = app.test_cli_runner().invoke(args=["poll-status"])

    assert result.exit_code == 0, result.output
    assert "checked 398" in result.output
    assert sorted(primary.polled) == sorted(set(primary.issued) - {"m2"})
    assert sorted(backup.polled) == sorted(set(backup.issued) - {"m1"})
    assert rows(db, "SELECT status, count(*) FROM sms GROUP BY 1 ORDER BY 1") == [
        ("delivered", 399),
        ("failed", 1),
    ]
    assert_counters_match_messages(db)


def test_the_weight_of_a_provider_that_returns_climbs_back_step_by_step(make_app, db, fakes):
    primary, backup = fakes
    primary.down.set()
    app = make_app(two_providers(primary, backup, {"weight": 1}))
    services = app.extensions["messaging"]
    client = app.test_client()
    first = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(600)}).get_json()
    assert first["messagesSent"] == 600 and sum(backup.batches) == 600
    wait_until(lambda: factor_of(services, PRIMARY) == 0.0)  # judged once a second

    primary.down.clear()  # it is back: once its failures leave the window, it earns weight
    steps = [wait_until(lambda: factor_of(services, PRIMARY) == 0.5 and 0.5)]
    steps.append(wait_until(lambda: factor_of(services, PRIMARY) == 1.0 and 1.0))

    assert steps == [0.5, 1.0]
    metrics = client.get("/metrics").text
    assert re.search(r'messaging_provider_weight\{provider="Clickatell"\} 1\.0', metrics)
    assert re.search(r'messaging_provider_weight\{provider="clickatell-backup"\} 1\.0', metrics)
    stats = app.test_cli_runner().invoke(args=["stats"]).output
    assert "Clickatell           1 x 1.00 = 1.00" in stats
    health = client.get("/healthz").get_json()
    assert [p["name"] for p in health["providers"]] == [PRIMARY, BACKUP]
    # Traffic returns to it: a send now goes out through both.
    before = sum(primary.batches)
    client.post("/sendsms", json={"message": "again", "msisdns": numbers(2000, "084")})
    assert sum(primary.batches) > before
    assert max((primary.received + backup.received).values()) == 1


def test_an_account_refusal_moves_the_batch_and_an_unknown_outcome_never_does(make_app, db, fakes):
    primary, backup = fakes
    primary.down.set()
    primary.refusal = (400, {"error": {"code": "301", "description": "No credit"}})
    app = make_app(two_providers(primary, backup, {"weight": 0}))
    client = app.test_client()

    out_of_credit = client.post("/sendsms", json={"message": "a", "msisdns": numbers(3)})

    assert out_of_credit.get_json()["messagesSent"] == 3
    assert sum(backup.batches) == 3
    reasons = {r for (r,) in rows(db, "SELECT reason FROM sms_events WHERE source = 'failover'")}
    assert reasons == {f"moved from {PRIMARY} to {BACKUP}: Error 301: Out of credit"}

    primary.refusal = (500, {"error": "internal"})  # may have been processed
    unknown = client.post("/sendsms", json={"message": "b", "msisdns": numbers(3, "084")})

    assert unknown.get_json()["messagesSent"] == 0
    assert sum(backup.batches) == 3  # nothing more went to the backup
    assert rows(
        db, "SELECT provider, reason, count(*) FROM sms WHERE msisdn LIKE '2784%%' GROUP BY 1, 2"
    ) == [(PRIMARY, "provider outcome unknown", 3)]


def test_a_provider_side_rejection_is_tried_once_elsewhere_and_an_invalid_number_is_not(
    make_app, db, fakes
):
    primary, backup = fakes
    primary.rejects = {"27830000001": "014", "27830000002": "105"}  # MT limit, invalid
    backup.rejects = {"27830000002": "105"}
    app = make_app(two_providers(primary, backup, {"weight": 0}))
    client = app.test_client()

    body = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(3)}).get_json()

    assert body["messagesSent"] == 2
    assert primary.received == Counter(["27830000000", "27830000001", "27830000002"])
    assert backup.received == Counter(["27830000001"])  # the invalid number stays refused
    assert sorted(rows(db, "SELECT msisdn, status, provider, errorcode FROM sms")) == [
        ("27830000000", "sent", PRIMARY, None),
        ("27830000001", "sent", BACKUP, None),
        ("27830000002", "failed", PRIMARY, "105"),
    ]
    (reason,) = rows(db, "SELECT reason FROM sms_events WHERE source = 'failover'")[0]
    assert reason.startswith(f"rejected by {PRIMARY} (error 014)")


def test_a_receipt_that_came_before_its_message_waits_for_its_own_providers(make_app, db, fakes):
    """Both fakes hand out m1, m2, ...: a receipt the primary pushed for its m1 before that
    message was written does not settle the backup's m1."""
    primary, backup = fakes
    config = two_providers(primary, backup, {"countries": ["BW"]})
    config["smsProvider"]["countries"] = ["ZA"]
    client = make_app(config).test_client()
    early = client.post(
        "/callbacks/Clickatell?secret=secret-a", json={"apiMsgId": "m1", "status": "005"}
    )
    assert early.get_json() == {"received": 1, "updated": 0, "unknown": 1}

    client.post("/sendsms", json={"message": "hi", "msisdns": ["72000001"]})  # BW: the backup
    assert rows(db, "SELECT provider, providerid, status FROM sms") == [(BACKUP, "m1", "sent")]
    assert rows(db, "SELECT providerid, provider FROM early_receipts") == [("m1", PRIMARY)]

    client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000001"]})  # ZA: the primary
    assert sorted(rows(db, "SELECT provider, providerid, status FROM sms")) == [
        (PRIMARY, "m1", "failed"),
        (BACKUP, "m1", "sent"),
    ]
    assert rows(db, "SELECT count(*) FROM early_receipts") == [(0,)]
    assert_counters_match_messages(db)


def test_routing_rules_send_bw_numbers_through_one_provider_and_za_through_another(
    make_app, db, fakes
):
    primary, backup = fakes
    config = two_providers(primary, backup, {"countries": ["BW"], "maxBatchSize": 500})
    config["smsProvider"]["countries"] = ["ZA"]
    config["smsProviders"].append(
        {**provider(backup.url, "secret-c", id="mascom"), "prefixes": ["26771"], "weight": 0}
    )
    app = make_app(config)
    za, bw, mascom = numbers(150, "083"), ["72000001", "74000002"], ["71000003"]

    body = (
        app.test_client()
        .post("/sendsms", json={"message": "hi", "msisdns": za + bw + mascom})
        .get_json()
    )

    assert body["messagesSent"] == 153 and body["invalidNumbers"] == 0
    assert set(primary.received) == {international(n) for n in za}
    assert set(backup.received) == {"26772000001", "26774000002", "26771000003"}
    assert sorted(rows(db, "SELECT provider, count(*) FROM sms GROUP BY 1")) == [
        ("Clickatell", 150),
        ("clickatell-backup", 3),
    ]


def test_the_original_config_writes_its_provider_name_and_keeps_no_health(make_app, db, fakes):
    primary, _ = fakes
    app = make_app(base_config(**provider(primary.url, "s")))
    app.test_client().post("/sendsms", json={"message": "hi", "msisdns": numbers(2)})

    assert rows(db, "SELECT DISTINCT provider FROM sms") == [("Clickatell",)]
    assert rows(db, "SELECT count(*) FROM provider_calls") == [(0,)]
    assert "providers" not in app.test_client().get("/healthz").get_json()


def test_a_batch_no_provider_takes_now_waits_for_the_back_off(make_app, db, fakes):
    primary, backup = fakes
    primary.down.set()
    backup.down.set()
    app = make_app(two_providers(primary, backup))
    services = app.extensions["messaging"]
    outcome = service.send_sms(services, "hi", numbers(3), None, "t", wait=0)
    worker = dispatch.Worker(services, name="test")

    worker.work_once()

    assert primary.refused == backup.refused == 1
    assert rows(db, "SELECT state, provider, refusedby, lasterror FROM dispatch_batches") == [
        ("ready", None, [], "Error 503: Provider unavailable")
    ]
    assert rows(db, "SELECT count(*) FROM sms") == [(0,)]
    assert service.cancel_send(services, int(outcome.ref_number))["status"] == "cancelled"


@pytest.mark.parametrize(
    ("counts", "factor", "since", "expected"),
    [
        (WindowCounts(accepted=2, refused=3), 1.0, 0, 0.0),  # too many refusals: out
        (WindowCounts(accepted=9, errors=1), 1.0, 0, 1.0),  # within the rate
        (WindowCounts(refused=4), 1.0, 0, 1.0),  # too few calls to judge
        (WindowCounts(), 0.0, 30, 0.0),  # behaving, but not for a step yet
        (WindowCounts(), 0.0, 60, 0.25),  # a step back per healthy interval
        (WindowCounts(accepted=10), 0.75, 61, 1.0),
        (WindowCounts(accepted=9, finals=20, final_seconds=20 * 700), 1.0, 60, 0.75),  # slow
        (WindowCounts(finals=20, final_seconds=20 * 700), 0.5, 10, 0.5),  # slow, step not due
    ],
)
def test_a_provider_loses_weight_when_misbehaving_and_regains_it_in_steps(
    counts, factor, since, expected
):
    assert next_factor(factor, since, counts, HealthSettings())[0] == expected


@pytest.mark.parametrize(
    ("providers", "error"),
    [
        (
            [{"name": "MockProvider"}],
            "smsProviders[0]: the provider name 'MockProvider' is already smsProvider's; "
            'give one of them an "id" of its own',
        ),
        ([{"id": "x"}], "smsProviders[0].name: every provider needs a name"),
        ([{"name": "Twilio", "weight": -1}], "smsProviders[0].weight: expected a number >= 0"),
        ([{"name": "Twilio", "prefixes": ["26x"]}], "smsProviders[0].prefixes: expected a list"),
        ([], "smsProviders: expected a non-empty list of provider objects"),
    ],
)
def test_a_bad_providers_list_is_one_line_naming_the_key(providers, error):
    config = {**base_config(), "smsProviders": providers}
    with pytest.raises(ConfigError) as raised:
        config_from_mapping(config)
    assert str(raised.value).startswith(error)
    assert "\n" not in str(raised.value)


def test_smsproviders_alone_takes_the_service_settings_from_its_first_entry():
    config = config_from_mapping(
        {
            "smsProviders": [
                {"name": "MockProvider", "countries": ["ZA"], "waitSeconds": 3},
                {"name": "MockProvider", "id": "mock-bw", "countries": ["BW"], "weight": 2},
            ]
        }
    )

    assert config.provider.wait_seconds == 3
    assert config.provider.countries == ("ZA", "BW")  # numbers of both are accepted
    assert [(p.key, p.weight, p.route_countries) for p in config.all_providers] == [
        ("MockProvider", 1.0, ("ZA",)),
        ("mock-bw", 2.0, ("BW",)),
    ]
