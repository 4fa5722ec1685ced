"""HttpProvider's rules, once: retries, Retry-After, outcome unknown, throttle, parallelism.

Parametrised over plugins only where a plugin changes the rule: how its answer says
"refused for now", and whether a send is one request per recipient.
"""

import logging
import threading
import time
from email.utils import formatdate

import pytest

from bench.fake_provider import TWILIO_SID, fake_provider
from messaging.errors import ProviderError, ProviderUnavailable
from messaging.providers.base import Recipient
from messaging.providers.clickatell import Clickatell
from messaging.providers.http import TokenBucket, retry_after_seconds
from tests.conftest import base_config, free_port, rows
from tests.providers.conftest import plugin, settings
from tests.providers.fakes import ACCEPTS, Reply, clickatell_accepts, twilio_accepts

TWO = [Recipient("27830000001", "11"), Recipient("27830000002", "12")]
UNSAFE_TO_RESEND = ["Clickatell", "ClickatellOne", "Twilio", "AfricasTalking", "Vonage"]
# Failures after which the provider may have processed the request.
MAYBE_PROCESSED = {"read timeout": Reply(202, hang=True), "HTTP 500": Reply(500, "oops")}
RATE_LIMITED = {"messages": [], "error": {"code": 43, "description": "Rate limit exceeded"}}
# Answers a plugin reads as "refused for now", and the error they end in if they last.
REFUSALS = {
    "ClickatellOne 400 error 43": (
        "ClickatellOne",
        Reply(400, RATE_LIMITED),
        "Error 43: Rate limit exceeded",
    ),
    "ClickatellOne 429 error 43": (
        "ClickatellOne",
        Reply(429, RATE_LIMITED),
        "Error 43: Rate limit exceeded",
    ),
    "Twilio 429 error 20429": (
        "Twilio",
        Reply(429, {"code": 20429, "message": "Too Many Requests", "status": 429}),
        "Error 20429: Too many requests",
    ),
    "Vonage 200 status 1": (
        "Vonage",
        Reply(200, {"messages": [{"status": "1", "error-text": "Throughput Rate Exceeded"}]}),
        "Error 1: Throttled",
    ),
}


def clickatell(fake, sleeps, **values):
    fake.default = fake.default or clickatell_accepts
    return plugin("Clickatell", fake, sleeps, **values)


# --- resent: refused, busy, unreachable ---


def test_a_503_is_resent_after_a_backoff(fake, sleeps):
    fake.reply(503, "busy")
    assert all(r.accepted for r in clickatell(fake, sleeps).send_batch(TWO, "x", None))
    assert len(fake.requests) == 2 and fake.requests[0].body == fake.requests[1].body
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 1.0


def test_a_429_is_resent_after_its_retry_after(fake, sleeps):
    fake.reply(429, "slow down", {"Retry-After": "7"})
    assert all(r.accepted for r in clickatell(fake, sleeps).send_batch(TWO, "x", None))
    assert sleeps == [7.0]


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(formatdate(time.time() + 30, usegmt=True)) == pytest.approx(30, 2)
    assert retry_after_seconds(formatdate(time.time() - 30, usegmt=True)) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_down_through_every_retry_raises_provider_unavailable_with_its_retry_after(fake, sleeps):
    for _ in range(3):
        fake.reply(503, "down", {"Retry-After": "5"})
    with pytest.raises(ProviderUnavailable) as caught:
        clickatell(fake, sleeps).send_batch(TWO, "x", None)
    assert caught.value.message == "Error 503: Provider unavailable"
    assert caught.value.retry_after == 5.0
    assert len(fake.requests) == 3 and sleeps == [5.0, 5.0]


def test_a_long_retry_after_is_waited_a_minute_at_most_and_handed_on_whole(fake, sleeps):
    for _ in range(3):
        fake.reply(429, "later", {"Retry-After": "600"})
    with pytest.raises(ProviderUnavailable) as caught:
        clickatell(fake, sleeps).send_batch(TWO, "x", None)
    assert sleeps == [60.0, 60.0]
    assert (caught.value.message, caught.value.retry_after) == (
        "Error 429: Provider unavailable",
        600.0,
    )


def test_a_refused_connection_is_resent_then_unavailable(sleeps):
    port = free_port()  # nothing listens there
    provider = plugin("Clickatell", None, sleeps, url=f"http://127.0.0.1:{port}")
    with pytest.raises(ProviderUnavailable) as caught:
        provider.send_batch(TWO, "x", None)
    assert caught.value.message == "Clickatell unreachable (ConnectionError)"
    assert caught.value.retry_after is None
    assert len(sleeps) == 2  # a refused connection never reached the provider: safe to resend


@pytest.mark.parametrize(("name", "refusal", "message"), REFUSALS.values(), ids=REFUSALS)
def test_an_answer_the_plugin_reads_as_refused_for_now_is_resent(
    fake, sleeps, name, refusal, message
):
    fake.script.append(refusal)
    fake.default = ACCEPTS[name]
    [result] = plugin(name, fake, sleeps).send_batch(TWO[:1], "x", "IMQS")
    assert result.accepted and len(fake.requests) == 2 and len(sleeps) == 1


@pytest.mark.parametrize(("name", "refusal", "message"), REFUSALS.values(), ids=REFUSALS)
def test_a_refusal_lasting_every_retry_is_unavailable_with_the_providers_code(
    fake, sleeps, name, refusal, message
):
    fake.default = lambda request: refusal
    with pytest.raises(ProviderUnavailable) as caught:
        plugin(name, fake, sleeps, retries=1).send_batch(TWO[:1], "x", "IMQS")
    assert caught.value.message == message
    assert len(fake.requests) == 2


def test_a_one_request_per_recipient_provider_down_for_all_raises_unavailable(fake, sleeps):
    fake.default = lambda request: Reply(503, "down")
    with pytest.raises(ProviderUnavailable, match="^Error 503: Provider unavailable$"):
        plugin("Twilio", fake, sleeps, retries=0).send_batch(TWO, "x", "+1")


def test_sendsms_fails_with_provider_unavailable_once_the_retry_window_is_over(fake, make_app, db):
    fake.default = lambda request: Reply(503, "down")
    config = base_config(
        name="Clickatell", token="tok", url=fake.url, retries=0, retryWindow="1s", waitSeconds=5
    )
    client = make_app(config).test_client()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000000"]}).get_json()
    assert (body["sendSuccess"], body["statusDescription"]) == (
        False,
        "Error 503: Provider unavailable",
    )
    assert rows(db, "SELECT status, errorcode, reason FROM sms") == [
        ("failed", "503", "Provider unavailable")
    ]


# --- not resent: the provider may have processed it ---


@pytest.mark.parametrize("failure", MAYBE_PROCESSED)
@pytest.mark.parametrize("name", UNSAFE_TO_RESEND)
def test_a_send_that_may_have_been_processed_is_not_resent_and_its_outcome_is_unknown(
    fake, sleeps, name, failure
):
    fake.default = lambda request: MAYBE_PROCESSED[failure]
    results = plugin(name, fake, sleeps, timeout=0.2).send_batch(TWO, "x", "IMQS")
    assert [(r.reference, r.accepted, r.reason) for r in results] == [
        ("11", False, "provider outcome unknown"),
        ("12", False, "provider outcome unknown"),
    ]
    assert len({r.body for r in fake.requests}) == len(fake.requests)  # none sent twice


def test_a_resend_safe_send_that_may_have_been_processed_every_time_is_unknown(fake, sleeps):
    fake.default = lambda request: Reply(500, "oops")
    results = plugin("BulkSMS", fake, sleeps).send_batch(TWO, "x", None)
    assert {r.reason for r in results} == {"provider outcome unknown"}
    assert len(fake.requests) == 3  # resent, since BulkSMS de-duplicates, then given up


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("read timeout", "Clickatell unreachable (ReadTimeout)"),
        ("HTTP 500", "Error 500: Provider unavailable"),
    ],
)
def test_a_status_query_is_resent_whatever_failed_then_unavailable(fake, sleeps, failure, message):
    fake.default = lambda request: MAYBE_PROCESSED[failure]
    with pytest.raises(ProviderUnavailable) as caught:
        plugin("Clickatell", fake, sleeps, timeout=0.2).query_status(["c1"])
    assert caught.value.message == message
    assert len(fake.requests) == 3  # a GET changes nothing, so it is safe to ask again


# --- throttle and parallelism ---


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = []
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return self.now

    def sleep(self, seconds):
        with self.lock:
            self.slept.append(seconds)


def test_token_bucket_spaces_requests_across_threads():
    clock = FakeClock()
    bucket = TokenBucket(4.0, clock, clock.sleep)
    threads = [threading.Thread(target=bucket.acquire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The first goes at once; the others wait 0.25 s apart, each for its own slot.
    assert sorted(clock.slept) == pytest.approx([0.25 * n for n in range(1, 8)])


def test_token_bucket_without_a_rate_never_waits():
    clock = FakeClock()
    bucket = TokenBucket(None, clock, clock.sleep)
    for _ in range(5):
        bucket.acquire()
    assert clock.slept == []


def test_throttle_holds_across_the_batches_of_a_send(fake):
    fake.default = clickatell_accepts
    clock = FakeClock()
    provider = Clickatell(
        settings(fake, "Clickatell", max_requests_per_second=2.0), sleep=clock.sleep, clock=clock
    )
    for number in ("27830000001", "27830000002", "27830000003"):
        provider.send_batch([Recipient(number, number[-1])], "x", None)
    assert clock.slept == pytest.approx([0.5, 1.0])


class CountingThrottle:
    def __init__(self):
        self.acquired = 0

    def acquire(self):
        self.acquired += 1


def test_the_throttle_is_any_object_with_acquire_and_is_asked_before_every_attempt(fake, sleeps):
    fake.reply(503, "busy")
    provider = clickatell(fake, sleeps)
    provider.throttle = CountingThrottle()
    provider.send_batch(TWO, "x", None)
    assert provider.throttle.acquired == len(fake.requests) == 2


def test_parallel_requests_bounds_the_requests_in_flight(fake, sleeps):
    lock = threading.Lock()
    in_flight = []
    most = [0]

    def slow(request):
        with lock:
            in_flight.append(request)
            most[0] = max(most[0], len(in_flight))
        time.sleep(0.2)
        with lock:
            in_flight.remove(request)
        return twilio_accepts(request)

    fake.default = slow
    provider = plugin("Twilio", fake, sleeps)
    assert provider.parallel_requests == 8
    provider.parallel_requests = 2
    recipients = [Recipient(f"2783000000{n}", str(n)) for n in range(6)]
    assert all(r.accepted for r in provider.send_batch(recipients, "x", "+1"))
    assert most[0] == 2


def test_batches_in_flight_at_once_reuse_their_connections(sleeps):
    # The benchmarks' fake: it keeps connections alive and counts them.
    with fake_provider("twilio", latency=0.05) as fake:
        provider = plugin(
            "Twilio",
            None,
            sleeps,
            url=fake.url,
            options={"accountSid": TWILIO_SID},
            max_concurrent_requests=4,
        )
        batches = [[Recipient(f"278{b}{n:07d}", f"{b}{n}") for n in range(16)] for b in range(4)]
        for _ in range(2):  # 4 batches at once, as a dispatcher's 4 workers send them, twice
            threads = [
                threading.Thread(target=provider.send_batch, args=(batch, "x", "+1"))
                for batch in batches
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        seen = fake.stats()

    assert (seen["requests"], seen["distinct"]) == (128, 64)
    # At most 4 batches x 8 requests in flight, each connection kept for the next request.
    assert seen["connections"] <= 32


def test_parallel_requests_must_be_at_least_one(fake, sleeps):
    with pytest.raises(ValueError, match="at least 1"):
        plugin("Twilio", fake, sleeps).parallel_requests = 0


def test_logs_show_timing_but_never_the_token(fake, caplog):
    fake.reply(401, {"error": {"code": "001", "description": "Authentication failed"}})
    provider = Clickatell(settings(fake, "Clickatell", token="very-secret-token"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderError):
        provider.send_batch(TWO, "x", None)
    text = caplog.text
    assert "Clickatell POST /rest/message -> 401 in" in text
    assert "very-secret-token" not in text
