"""Per-caller limits: requests a minute, recipients and international recipients a UTC day,
for each originator (the serviceauth Identity or the API key's name).

A send is charged inside the transaction that records it (service.send_sms): each counter
it uses is one row of caller_usage per originator and window, added to with an upsert
whose row lock makes that caller's concurrent sends, from any process or host, take
turns. A send that would pass a limit raises LimitExceeded, which rolls the whole
transaction back: nothing is recorded, counted or sent. The windows are fixed: the UTC
minute (a caller can make up to twice its requestsPerMinute across a minute's boundary)
and the UTC day.

What counts is what would be sent: valid numbers once de-duplicated, without the
opted-out ones (recorded `failed` "opted out", never sent) or the invalid ones.
"""

import math
from dataclasses import dataclass, fields

from messaging.db import Database
from messaging.errors import LimitExceeded
from messaging.msisdn import Normaliser
from messaging.queries import limits as queries
from messaging.settings import UNLIMITED, Limits


@dataclass(frozen=True)
class Counter:
    name: str  # as config.json and the 429 answer spell it
    attr: str  # of settings.Limits
    unit: str  # the window: "minute" or "day"
    counts: str  # what one unit is, for the error message


COUNTERS = (
    Counter("requestsPerMinute", "requests_per_minute", "minute", "requests"),
    Counter("recipientsPerDay", "recipients_per_day", "day", "recipients"),
    Counter("internationalPerDay", "international_per_day", "day", "international recipients"),
)
NAMES = tuple(counter.name for counter in COUNTERS)


def for_caller(defaults: Limits, own: Limits) -> Limits:
    """Return a caller's limits: its own (an API key's) where set, else the config's."""

    def pick(name: str) -> int | None:
        value = getattr(own, name)
        if value is None:
            return getattr(defaults, name)
        return None if value == UNLIMITED else value

    return Limits(**{field.name: pick(field.name) for field in fields(Limits)})


def limited(limits: Limits | None) -> bool:
    """Tell whether any limit applies (no check, and no database work, otherwise)."""
    return limits is not None and any(getattr(limits, c.attr) is not None for c in COUNTERS)


def charge(
    cur, originator: str, limits: Limits, recipients: list[str], normaliser: Normaliser
) -> None:
    """Count one request of `originator` sending to `recipients` (normalised, to be sent)
    against its limits; raise LimitExceeded, naming the first limit it would pass, which
    must roll the transaction back."""
    amounts = {
        "requestsPerMinute": 1,
        "recipientsPerDay": len(recipients),
        "internationalPerDay": (
            normaliser.count_abroad(recipients) if limits.international_per_day is not None else 0
        ),
    }
    for counter in COUNTERS:
        maximum = getattr(limits, counter.attr)
        amount = amounts[counter.name]
        if maximum is None or amount == 0:
            continue
        used, seconds_left, began = queries.add_usage(
            cur, originator, counter.name, counter.unit, amount
        )
        if began:
            queries.delete_ended_windows(cur, originator)
        if used > maximum:
            remaining = max(0, maximum - (used - amount))
            retry_after = max(1, math.ceil(seconds_left))
            raise LimitExceeded(
                f"{counter.name} limit reached: {remaining} of {maximum} {counter.counts} "
                f"left this UTC {counter.unit}, this request needs {amount}; "
                f"retry in {retry_after} s",
                limit=counter.name,
                retry_after=retry_after,
                max=maximum,
                remaining=remaining,
                requested=amount,
            )


def usage(database: Database, originator: str) -> dict[str, int]:
    """Return what `originator` used in its current windows, by limit name."""
    with database.transaction() as cur:
        return queries.usage(cur, originator)
