"""What the operator's page shows: the sends newest first, one send in full, and the
overview of traffic, providers and health. Each function reads in one short transaction
and returns plain data for the templates (admin.py renders it)."""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from messaging import charts
from messaging.dispatch import HEARTBEAT_SECONDS
from messaging.errors import InvalidInput, NotFound
from messaging.polling import POLL_JOB
from messaging.queries import admin as queries
from messaging.queries.sends import find_send
from messaging.sends import MAX_ID
from messaging.services import Services

SENDS_PER_PAGE = 25
RECIPIENTS_PER_PAGE = 50
FAILURE_REASONS_SHOWN = 20
SEND_STATES = ("sending", "scheduled", "done", "cancelled")
# A dispatcher is alive while its heartbeat is this recent (as downgrade.py reckons it).
DISPATCHER_ALIVE_SECONDS = 3 * HEARTBEAT_SECONDS
LATEST_SENDS_SHOWN = 10  # on a non-admin's overview
# Events of hours not yet settled that the provider figures count on each visit, at most
# (each joined with its message: about 5 ms a thousand); past it they wait for their hour.
LIVE_PROVIDER_EVENTS = 20_000


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# --- sends ---


@dataclass(frozen=True)
class SendFilters:
    since: date | None = None
    until: date | None = None  # inclusive: the whole day
    originator: str | None = None
    state: str | None = None
    before: int | None = None  # paging: sends with a smaller id

    def query(self, **changes) -> dict:
        """Return these filters as query parameters (for links), with `changes`."""
        values = {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "originator": self.originator,
            "state": self.state,
            "before": self.before,
            **changes,
        }
        return {key: value for key, value in values.items() if value not in (None, "")}


def send_filters(args) -> SendFilters:
    """Read the list's filters from query parameters; InvalidInput names a bad one."""

    def day(name: str) -> date | None:
        text = args.get(name, "").strip()
        if not text:
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise InvalidInput(f"{name} must be a date as 2026-01-31, not {text[:40]!r}") from None

    state = args.get("state", "").strip() or None
    if state is not None and state not in SEND_STATES:
        raise InvalidInput(f"state must be one of {', '.join(SEND_STATES)}, not {state[:40]!r}")
    before_text = args.get("before", "").strip()
    if before_text and not (before_text.isascii() and before_text.isdigit()):
        raise InvalidInput(f"before must be a refNumber, not {before_text[:40]!r}")
    before = int(before_text) if before_text else None
    since, until = day("since"), day("until")
    if since and until and since > until:
        raise InvalidInput("since must not be after until")
    originator = args.get("originator", "").strip() or None
    if originator is not None and "\x00" in originator:
        raise InvalidInput("originator must not hold a NUL character")
    return SendFilters(since, until, originator, state, min(before, MAX_ID) if before else None)


def progress_of(send: dict) -> dict:
    """Return a send's recipients by state (queued, sent, delivered, failed)."""
    done = send["sent"] + send["delivered"] + send["failed"]
    return {
        "queued": max(0, send["quantity"] - done),
        "sent": send["sent"],
        "delivered": send["delivered"],
        "failed": send["failed"],
    }


def with_progress(send: dict) -> dict:
    counts = progress_of(send)
    return {
        **send,
        "progress": counts,
        "segments": charts.stacked(counts),
        "summary": charts.describe(counts),
    }


def list_sends(services: Services, owner: str | None, filters: SendFilters):
    """Return (one page of sends newest first, the `before` of the next page or None)."""
    until = filters.until + timedelta(days=1) if filters.until else None
    with services.db.transaction() as cur:
        rows = queries.list_sends(
            cur,
            owner=owner,
            originator=filters.originator,
            state=filters.state,
            since=filters.since,
            until=until,
            before=filters.before,
            limit=SENDS_PER_PAGE + 1,
        )
    more = len(rows) > SENDS_PER_PAGE
    rows = rows[:SENDS_PER_PAGE]
    return [with_progress(row) for row in rows], (rows[-1]["id"] if more else None)


def any_dispatching(sends) -> bool:
    return any(send["state"] == "sending" for send in sends)


def send_detail(services: Services, ref: int, owner: str | None, page: int) -> dict:
    """Return one send: its row and progress, failures by reason, its events over time,
    and one page of recipients with their events. NotFound as GET /sends/<ref> says it."""
    if ref > MAX_ID:
        raise NotFound(f"no send with refNumber {ref}")
    with services.db.transaction() as cur:
        send = find_send(cur, ref, owner)
        if send is None:
            raise NotFound(f"no send with refNumber {ref}")
        for counter in ("sent", "delivered", "failed", "quantity"):
            send[counter] = send[counter] or 0
        reasons = queries.failure_reasons(cur, ref, FAILURE_REASONS_SHOWN)
        queries.count_send_events(cur, ref)
        per_second = queries.send_events_per_second(cur, ref)
        recipients = queries.recipients_page(
            cur, ref, RECIPIENTS_PER_PAGE, (page - 1) * RECIPIENTS_PER_PAGE
        )
        events = queries.events_of_messages(cur, [r["id"] for r in recipients])
    by_message = defaultdict(list)
    for event in events:
        by_message[event["smsid"]].append(event)
    for recipient in recipients:
        recipient["events"] = by_message[recipient["id"]]
    total = send["quantity"]
    return {
        # From the send's row alone: its counters move in the transaction that drops a
        # batch, so what is not counted yet is still queued (a separate read of the batches
        # could fall either side of a batch's commit).
        "send": with_progress(send),
        "reasons": reasons,
        "timeline": _timeline(per_second, send) if per_second else None,
        "recipients": recipients,
        "page": page,
        "pages": max(1, -(-total // RECIPIENTS_PER_PAGE)),
        "cancellable": send["state"] in ("sending", "scheduled"),
    }


def _timeline(per_second, send: dict) -> dict:
    """Turn a send's events per second into cumulative counts per state, in buckets from
    when the send was made up to its last event (or now, while it is dispatching)."""
    first = min(second for second, _, _ in per_second)
    start = min(send["senttime"] or first, first)
    end = utc_now() if send["state"] == "sending" else max(s for s, _, _ in per_second)
    width = charts.bucket_seconds(max(1.0, (end - start).total_seconds() + 1))
    per_bucket = defaultdict(lambda: dict.fromkeys(charts.EVENT_STATES, 0))
    for second, status, events in per_second:
        if status in charts.EVENT_STATES:
            per_bucket[int((second - start).total_seconds() // width)][status] += events
    last_bucket = max(per_bucket, default=0)
    running = dict.fromkeys(charts.EVENT_STATES, 0)
    points = []
    for bucket in range(last_bucket + 1):
        for state in charts.EVENT_STATES:
            running[state] += per_bucket[bucket][state] if bucket in per_bucket else 0
        points.append({"after": (bucket + 1) * width, **running})
    most = max(send["quantity"], *(max(p[s] for s in charts.EVENT_STATES) for p in points))
    return {
        "bucket_seconds": width,
        "points": points,
        "most": most,
        "lines": {
            state: charts.polyline([0, *(p[state] for p in points)], most)
            for state in charts.EVENT_STATES
        },
    }


CSV_COLUMNS = ("msisdn", "code", "reason", "failure kind")


def failed_numbers_csv(services: Services, ref: int, owner: str | None) -> str:
    """Return a send's failed numbers as CSV (msisdn, code, reason, failure kind)."""
    if ref > MAX_ID:
        raise NotFound(f"no send with refNumber {ref}")
    with services.db.transaction() as cur:
        if find_send(cur, ref, owner) is None:
            raise NotFound(f"no send with refNumber {ref}")
        rows = queries.failed_numbers(cur, ref)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(CSV_COLUMNS)
    writer.writerows([_cell(value) for value in row] for row in rows)
    return out.getvalue()


def _cell(value) -> str:
    """A CSV cell a spreadsheet will not run as a formula (OWASP's CSV injection advice)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# --- overview ---


def overview(services: Services, owner: str | None) -> dict:
    """Return the overview: health for everyone; for an admin (owner None) also traffic per
    hour and day, figures per provider and the opt-out count; for anyone else their own
    latest sends instead."""
    now = utc_now()
    window = services.config.delivery_status.window
    with services.db.transaction() as cur:
        health = _health(cur, services, now - timedelta(seconds=window))
    if owner is not None:
        sends, _ = list_sends(services, owner, SendFilters())
        return {"health": health, "sends": sends[:LATEST_SENDS_SHOWN], "admin": False}
    with services.db.transaction() as cur:
        queries.count_new_event_hours(cur)
    with services.db.transaction() as cur:
        settled = queries.settled_hour(cur)
        hours = queries.events_per_hour(cur, _hour(now) - timedelta(days=30), settled)
        unsettled = queries.count_events_since(cur, settled, LIVE_PROVIDER_EVENTS + 1)
        live = unsettled <= LIVE_PROVIDER_EVENTS
        providers = queries.provider_figures(
            cur, services.config.provider.name, _hour(now) - timedelta(hours=23), settled, live
        )
        optouts = queries.count_optouts(cur)
    return {
        "health": health,
        "admin": True,
        "last_day": _hourly_chart(hours, now),
        "last_month": _daily_chart(hours, now),
        "providers": providers_from(providers),
        # None: the figures are up to now; else up to then, the newer events being too many
        # to join with their messages on every visit (a big send in the last hour).
        "providers_until": None if live else settled,
        "optouts": optouts,
    }


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _hourly_chart(hours, now: datetime) -> dict:
    """Events per hour for the last 24 hours (the current one included)."""
    start = _hour(now) - timedelta(hours=23)
    counts = defaultdict(lambda: defaultdict(int))
    for hour, status, events in hours:
        if hour >= start:
            counts[hour][status] += events
    buckets = [
        (f"{start + timedelta(hours=n):%H}:00", dict(counts[start + timedelta(hours=n)]))
        for n in range(24)
    ]
    return _chart(buckets)


def _daily_chart(hours, now: datetime) -> dict:
    """Events per day for the last 30 days (today included)."""
    today = now.date()
    counts = defaultdict(lambda: defaultdict(int))
    for hour, status, events in hours:
        counts[hour.date()][status] += events
    days = [today - timedelta(days=29 - n) for n in range(30)]
    return _chart([(f"{day:%m-%d}", dict(counts[day])) for day in days])


def _chart(buckets) -> dict:
    laid, tallest = charts.columns(buckets)
    totals = {state: sum(c.get(state, 0) for _, c in buckets) for state in charts.EVENT_STATES}
    return {"columns": laid, "tallest": tallest, "totals": totals}


def providers_from(counted) -> list[dict]:
    """Turn provider events counted by (provider, status, seconds to delivery) into each
    provider's figures: messages handed over, delivered and failed, the delivery rate of
    those that reached an outcome, and the median time to delivery."""
    by_provider = defaultdict(lambda: {"status": defaultdict(int), "seconds": defaultdict(int)})
    for name, status, seconds, events in counted:
        figures = by_provider[name]
        figures["status"][status] += int(events)
        if status == "delivered":
            figures["seconds"][float(seconds)] += int(events)
    found = []
    for name in sorted(by_provider):
        status, seconds = by_provider[name]["status"], by_provider[name]["seconds"]
        delivered, failed = status["delivered"], status["failed"]
        outcomes = delivered + failed
        found.append(
            {
                "name": name,
                "sent": status["sent"],
                "delivered": delivered,
                "failed": failed,
                "rate": delivered / outcomes if outcomes else None,
                "median": weighted_median(seconds),
            }
        )
    return found


def weighted_median(counts: dict[float, int]) -> float | None:
    """Return the median of values given with how often each occurs."""
    total = sum(counts.values())
    if not total:
        return None
    middle = [(total - 1) // 2, total // 2]  # the middle one, or the middle two
    seen, found = 0, []
    for value in sorted(counts):
        seen += counts[value]
        while middle and middle[0] < seen:
            middle.pop(0)
            found.append(value)
    return sum(found) / len(found)


def _health(cur, services: Services, window_start: datetime) -> dict:
    queue = queries.dispatch_queue(cur)
    dispatchers = [
        {"name": name, "started": started, "seen": seen, "alive": seen <= DISPATCHER_ALIVE_SECONDS}
        for name, started, seen in queries.dispatchers(cur)
    ]
    unresolved, in_window, oldest = queries.in_flight(cur, window_start)
    run = queries.last_run(cur, POLL_JOB)
    status = services.config.delivery_status
    poll = {
        "enabled": status.enabled,
        "every": status.update_interval,
        "unresolved": unresolved,
        "in_window": in_window,
        "oldest": oldest,
        "last_started": run[0] if run else None,
        "last_finished": run[1] if run else None,
        "summary": run[2] if run else None,
        "ago": float(run[3]) if run and run[3] is not None else None,
    }
    # Overdue: no run within two intervals, while there is something to ask about.
    poll["overdue"] = bool(
        status.enabled
        and in_window
        and (poll["ago"] is None or poll["ago"] > 2 * status.update_interval)
    )
    lag = float(queue["lag"]) if queue["lag"] is not None else None
    return {
        "queue": {**queue, "lag": lag},
        "dispatchers": dispatchers,
        "alive": sum(1 for d in dispatchers if d["alive"]),
        "poll": poll,
    }
