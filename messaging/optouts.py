"""Opt-outs: the suppression list, managed by replies, provider errors, the CLI and
`/optouts/<msisdn>`, and applied to every send whoever the caller.

A reply whose first word is one of `inbound.optOutKeywords` (STOP, STOPALL, UNSUBSCRIBE,
CANCEL, END, QUIT) puts its sender on the list; one of `inbound.optInKeywords` (START,
UNSTOP) takes it off (inbound.py). A provider's "recipient opted out" refusal
(`Provider.opt_out_codes`) puts the recipient on it where the batch's answers are recorded
(dispatch.py). A send leaves the numbers on the list out: each gets its sms row `failed`,
reason "opted out", and is counted in `optedOutNumbers` (service.py).
"""

import logging
import string
from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, g, jsonify

from messaging.auth import require_admin
from messaging.errors import InvalidInput, NotFound
from messaging.queries.dispatch import finish_if_done, lock_send
from messaging.queries.optouts import (
    add_optouts,
    find_optout,
    list_optouts,
    remove_optouts,
    sends_queued_for,
    withdraw_from_send,
)
from messaging.schemas import OptOutEntry
from messaging.services import Services
from messaging.services import current as services
from messaging.settings import InboundSettings

log = logging.getLogger(__name__)
bp = Blueprint("optouts", __name__)

OPT_OUT, OPT_IN = "opt-out", "opt-in"
optout_entry_schema = OptOutEntry()


@dataclass(frozen=True)
class Entry:
    msisdn: str
    source: str
    time: datetime  # naive UTC


def keyword_action(settings: InboundSettings, text: str) -> str | None:
    """Return OPT_OUT or OPT_IN when a reply's first word is one of their keywords."""
    words = text.split(maxsplit=1)
    word = words[0].strip(string.punctuation).upper() if words else ""
    if word in settings.opt_out_keywords:
        return OPT_OUT
    if word in settings.opt_in_keywords:
        return OPT_IN
    return None


def normalised(services: Services, raw: str) -> str:
    """Return a number as /normalize gives it, or raise InvalidInput naming it."""
    return all_normalised(services, [raw])[0]


def all_normalised(services: Services, numbers: list[str]) -> list[str]:
    """Return the numbers normalised, first occurrence kept, or raise InvalidInput naming
    the invalid ones."""
    result, invalid = [], []
    for raw in numbers:
        number = services.normaliser.normalise(raw)
        if number is None:
            invalid.append(raw)
        else:
            result.append(number)
    if invalid:
        countries = ", ".join(services.config.provider.countries)
        shown = ", ".join(repr(raw[:40]) for raw in invalid[:5])
        more = f" and {len(invalid) - 5} more" if len(invalid) > 5 else ""
        raise InvalidInput(f"not a valid number for {countries}: {shown}{more}")
    return list(dict.fromkeys(result))


def opt_out(services: Services, numbers: list[str], source: str) -> tuple[list[str], list[str]]:
    """Put numbers on the list and take them out of what is queued; return (added, already
    there), all normalised."""
    wanted = all_normalised(services, numbers)
    with services.db.transaction() as cur:
        added = add_optouts(cur, wanted, source)
    withdraw_queued(services, wanted)
    return added, [number for number in wanted if number not in set(added)]


def withdraw_queued(services: Services, numbers: list[str]) -> int:
    """Take numbers just opted out out of every send's batches not yet handed over: they
    become `failed`, "opted out" (a batch at the provider is beyond recall). One
    transaction per send, each under its row lock like every writer of a send. Returns
    how many recipients were taken out."""
    if not numbers:
        return 0
    with services.db.transaction() as cur:
        send_ids = sends_queued_for(cur, numbers)
    taken = 0
    for send_id in send_ids:
        with services.db.transaction() as cur:
            lock_send(cur, send_id)
            withdrawn = withdraw_from_send(cur, send_id, numbers)
            if withdrawn:
                finish_if_done(cur, send_id)
        if withdrawn:
            log.info("send %s: %d opted-out recipient(s) taken out of it", send_id, withdrawn)
        taken += withdrawn
    return taken


def opt_in(services: Services, numbers: list[str]) -> tuple[list[str], list[str]]:
    """Take numbers off the list; return (removed, not on it), all normalised."""
    wanted = all_normalised(services, numbers)
    with services.db.transaction() as cur:
        removed = remove_optouts(cur, wanted)
    return removed, [number for number in wanted if number not in set(removed)]


def find(services: Services, raw: str) -> Entry:
    """Return a number's entry; raise NotFound when it is not opted out."""
    number = normalised(services, raw)
    with services.db.transaction() as cur:
        row = find_optout(cur, number)
    if row is None:
        raise NotFound(f"{number} is not opted out")
    return Entry(*row)


def entries(services: Services) -> list[Entry]:
    """Return every number on the list, oldest first."""
    with services.db.transaction() as cur:
        return [Entry(*row) for row in list_optouts(cur)]


# --- GET/PUT/DELETE /optouts/<msisdn> ---


@bp.route("/optouts/<anytext:msisdn>", methods=["GET"])
def show(msisdn):
    """Whether a number is opted out, since when and why.

    The number is normalised like /normalize (`0830000000` finds `27830000000`).
    ---
    responses:
      200:
        description: The number is on the suppression list.
        content: {application/json: {schema: OptOutEntry}}
      404: The number is not opted out.
    errors: [406, 500]
    """
    return jsonify(optout_entry_schema.dump(find(services(), msisdn)))


@bp.route("/optouts/<anytext:msisdn>", methods=["PUT"])
def put(msisdn):
    """Opt a number out: no send reaches it, whoever the caller.
    ---
    responses:
      200:
        description: It was opted out already; its entry is unchanged.
        content: {application/json: {schema: OptOutEntry}}
      201:
        description: It is opted out from now on.
        content: {application/json: {schema: OptOutEntry}}
    errors: [406, 500]
    """
    added, _ = opt_out(services(), [msisdn], f"api:{g.identity.name}")
    g.log_summary = f"optout {'added' if added else 'kept'}"
    return jsonify(optout_entry_schema.dump(find(services(), msisdn))), 201 if added else 200


@bp.route("/optouts/<anytext:msisdn>", methods=["DELETE"])
def delete(msisdn):
    """Opt a number back in: sends reach it again (admins only: a number opted out by its
    owner's STOP must not be opted back in by any caller).
    ---
    responses:
      204: {description: It is no longer opted out.}
      403: >-
        The caller has not the admin permission; or a browser sent it cross-site with its
        cookie (an Origin not in authentication.allowedOrigins).
      404: The number was not opted out.
    errors: [406, 500]
    """
    require_admin("Opting a number back in")
    _, missing = opt_in(services(), [msisdn])
    if missing:
        raise NotFound(f"{missing[0]} is not opted out")
    g.log_summary = "optout removed"
    return "", 204
