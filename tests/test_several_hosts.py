"""Two app hosts, each with gunicorn and a dispatcher, in network namespaces of their own
on a bridge, against one PostgreSQL: one large send is split between the hosts'
dispatchers, the provider's rate limit holds across them, and when one host dies mid-send
the other finishes it, with nothing lost and nothing sent twice.

The root namespace plays the rest of the network: PostgreSQL (through a forwarder on the
bridge's address, as the server listens on loopback only) and the fake provider, which
tells the hosts apart by their source address."""

import contextlib
import threading
import time
from collections import Counter

import psycopg2.extensions
import pytest
import requests

from messaging.config import config_from_mapping
from messaging.dispatch import lease_seconds
from messaging.providers.base import OUTCOME_UNKNOWN
from tests.conftest import dispatcher_process, gunicorn_server, log_of, rows, through
from tests.netns import private_network
from tests.providers.fakes import FakeProvider, Reply
from tests.tcp_proxy import TcpProxy
from tests.test_dispatch import wait_until
from tests.test_reconcile import assert_counters_match_messages
from tests.test_reliability_crash import clickatell_config, international, numbers

RECIPIENTS = 8000
BATCH = 100
RATE = 10  # maxRequestsPerSecond, for both hosts together
CONCURRENCY = 4  # maxConcurrentRequests: unthrottled, 2 hosts could make 2 x 4 / LATENCY = 80/s
LATENCY = 0.1
HOLD_AT = 6  # host B's request that the provider holds while B is killed


class ProviderOnTheBridge:
    """A Clickatell-shaped fake on `address` answering each request after LATENCY,
    recording when it came, from which host and for which numbers; it holds `hold_from`'s
    request number HOLD_AT until released: a host caught with a batch at the provider."""

    def __init__(self, address: str, hold_from: str):
        self.hold_from = hold_from
        self.calls: list[tuple[float, str, list[str]]] = []
        self.held_batch: list[str] = []
        self.held_at = 0.0
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = FakeProvider(host=address)
        self.server.default = self.answer
        self.url = self.server.url

    def answer(self, recorded) -> Reply:
        to = recorded.json["to"]
        with self._lock:
            self.calls.append((time.monotonic(), recorded.remote_addr, to))
            from_there = sum(1 for _, source, _ in self.calls if source == self.hold_from)
        if recorded.remote_addr == self.hold_from and from_there == HOLD_AT:
            self.held_batch = to
            self.held_at = time.monotonic()
            self.held.set()
            self.release.wait(60)
        else:
            time.sleep(LATENCY)
        accepted = [{"accepted": True, "to": n, "apiMessageId": f"api-{n}"} for n in to]
        return Reply(200, {"data": {"message": accepted}})

    def numbers_from(self, address: str) -> set[str]:
        return {n for _, source, to in self.calls if source == address for n in to}

    def stop(self) -> None:
        self.release.set()
        self.server.stop()


def state_of(base: str, ref: str) -> dict:
    return requests.get(f"{base}/sends/{ref}", timeout=10).json()["send"]


@pytest.mark.serial
def test_two_hosts_share_a_send_and_its_rate_and_one_dying_mid_send_loses_nothing(
    pg_server, database_url, db, tmp_path
):
    server = psycopg2.extensions.parse_dsn(pg_server)
    if not server.get("host") or server["host"].startswith("/"):
        pytest.skip("the test server is reached by a socket, not TCP: no host can reach it")
    submitted = numbers(RECIPIENTS)
    with contextlib.ExitStack() as stack:
        network = stack.enter_context(private_network("a", "b"))
        a, b = network.hosts["a"], network.hosts["b"]
        fake = ProviderOnTheBridge(network.gateway, hold_from=b.address)
        stack.callback(fake.stop)
        forwarder = TcpProxy(server["host"], int(server.get("port", 5432)), host=network.gateway)
        stack.callback(forwarder.stop)
        url = through(forwarder, database_url)
        config = clickatell_config(
            fake.url,
            maxBatchSize=BATCH,
            maxConcurrentRequests=CONCURRENCY,
            maxRequestsPerSecond=RATE,
        )
        for host in (a, b):
            (tmp_path / host.name).mkdir()
            stack.enter_context(
                dispatcher_process(config, url, tmp_path / host.name, prefix=host.prefix)
            )
        app = {
            host.name: stack.enter_context(
                gunicorn_server(
                    config, url, tmp_path / host.name, host=host.address, prefix=host.prefix
                )
            )
            for host in (a, b)
        }
        wait_until(lambda: rows(db, "SELECT count(*) FROM dispatchers") == [(2,)])

        accepted = requests.post(
            f"{app['a']}/sendsms",
            json={"message": "Water off at 10:00", "msisdns": submitted},
            headers={"Prefer": "respond-async"},
            timeout=30,
        )
        assert accepted.status_code == 202, accepted.text
        ref = accepted.json()["refNumber"]
        assert accepted.headers["Location"].endswith(f"/sends/{ref}")
        assert fake.held.wait(60), f"host B's dispatcher never reached request {HOLD_AT}"
        seen_from_b = state_of(app["b"], ref)  # any host answers for any send
        killed_at = time.monotonic()
        assert len(b.kill()) >= 4  # gunicorn's master and 2 workers, the dispatcher
        fake.release.set()
        after = wait_until(lambda: (s := state_of(app["a"], ref))["state"] == "done" and s)
        done_at = time.monotonic()
        dispatcher_log = log_of(tmp_path / "a", "dispatch")

    assert seen_from_b["state"] == "sending" and seen_from_b["queued"] > 0
    # Both hosts' dispatchers sent batches of the one send while both were up.
    before_kill = Counter(source for at, source, _ in fake.calls if at < killed_at)
    assert before_kill[a.address] >= 3 and before_kill[b.address] >= HOLD_AT, before_kill
    assert {source for _, source, _ in fake.calls} == {a.address, b.address}

    # The shared limit held over any second, and it (not the hosts) set the pace.
    arrivals = sorted(at for at, _, _ in fake.calls)
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert RATE * 0.75 <= busiest <= RATE + 1, busiest

    # Every recipient is recorded once; none reached the provider twice; what B had at the
    # provider when it died is "outcome unknown", settled by A without resending it.
    assert dict(rows(db, "SELECT msisdn, count(*) FROM sms GROUP BY 1")) == {
        international(n): 1 for n in submitted
    }
    assert rows(db, "SELECT count(*) FROM dispatch_batches") == [(0,)]
    reached = Counter(n for _, _, to in fake.calls for n in to)
    assert max(reached.values()) == 1
    by_status: dict = {}
    for msisdn, status, reason in rows(db, "SELECT msisdn, status, reason FROM sms"):
        by_status.setdefault((status, reason), set()).add(msisdn)
    sent, unknown = by_status.pop(("sent", None)), by_status.pop(("failed", OUTCOME_UNKNOWN))
    assert by_status == {}
    assert set(fake.held_batch) <= unknown
    assert len(unknown) % BATCH == 0 and len(unknown) <= CONCURRENCY * BATCH
    assert not unknown & fake.numbers_from(a.address)
    assert fake.numbers_from(a.address) <= sent <= set(reached)
    assert "abandoned at the provider; settled without resending" in dispatcher_log
    # ... once B's lease had run out. B claimed its batch before it took a rate slot, with
    # at most every thread of both hosts (2 x CONCURRENCY) ahead of it.
    lease = lease_seconds(config_from_mapping(config, database_url).provider)
    assert done_at - fake.held_at > lease - 2 * CONCURRENCY / RATE, done_at - fake.held_at
    assert (after["queued"], after["sent"]) == (0, RECIPIENTS - len(unknown))
    assert rows(db, "SELECT status, description FROM sendlog") == [
        ("success", f"{len(unknown)} of {RECIPIENTS} recipients rejected by the provider")
    ]
    assert_counters_match_messages(db)
