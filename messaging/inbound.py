"""Replies (MO messages): `POST /callbacks/<provider>/inbound` and `GET /inbound`.

Not behind user authentication: the configured provider checks pushed replies the way
it checks receipts (a signature or a shared secret, `Provider.parse_inbound`); a push
that fails the check gets 403 and stores nothing. Each reply is stored once (by the
provider's id: a provider repeats a push it thinks we missed), and a reply whose first
word is an opt-out or opt-in keyword puts its sender on the suppression list or takes it
off, in the same transaction (`record_inbound`).
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, jsonify

from messaging.api import load
from messaging.auth import public, require_admin
from messaging.errors import InvalidInput
from messaging.optouts import OPT_IN, OPT_OUT, keyword_action, withdraw_queued
from messaging.providers.base import InboundMessage
from messaging.queries.inbound import (
    INBOUND_COLUMNS,
    count_inbound,
    inbound_since,
    insert_inbound,
)
from messaging.queries.optouts import add_optouts, remove_optouts
from messaging.queries.webhooks import enqueue_webhook
from messaging.receipts import checked_push
from messaging.schemas import InboundMessageSchema, InboundPage, InboundQuery, InboundResponse
from messaging.services import Services
from messaging.services import current as services

log = logging.getLogger(__name__)

INBOUND_WEBHOOK = "message.inbound"
inbound_message_schema = InboundMessageSchema()

bp = Blueprint("inbound", __name__)

inbound_query_schema = InboundQuery()
inbound_page_schema = InboundPage()
inbound_response_schema = InboundResponse()
# GET /inbound without `since`: everything kept.
BEGINNING = datetime(1970, 1, 1)


@dataclass(frozen=True)
class InboundOutcome:
    received: int  # replies in the push
    stored: list[dict]  # those new to us, as stored (INBOUND_COLUMNS)
    opted_out: list[str]  # senders put on the suppression list by this push
    opted_in: list[str]  # senders taken off it

    @property
    def stored_count(self) -> int:
        return len(self.stored)

    @property
    def opted_out_count(self) -> int:
        return len(self.opted_out)

    @property
    def opted_in_count(self) -> int:
        return len(self.opted_in)


@dataclass(frozen=True)
class InboundReport:
    """One page of stored replies (dumped by schemas.InboundPage)."""

    messages: list[dict]
    page: int
    page_size: int
    total: int


def record_inbound(
    services: Services, provider: str, messages: list[InboundMessage]
) -> InboundOutcome:
    """Store pushed replies, each once, and apply their opt-out and opt-in keywords to
    the suppression list, in one transaction; a reply pushed again changes nothing. A
    number opted out so is then taken out of the sends still queued for it."""
    settings = services.config.inbound
    rows = []
    for message in messages:
        sender = services.normaliser.normalise(message.sender) or message.sender.lstrip("+")
        rows.append(
            (
                message.provider_id,
                sender,
                message.recipient,
                message.text,
                keyword_action(settings, message.text),
            )
        )
    with services.db.transaction() as cur:
        stored = [
            dict(zip(INBOUND_COLUMNS, row, strict=True))
            for row in insert_inbound(cur, provider, rows)
        ]
        # The last keyword a sender sent in this push decides, as it would one by one.
        wanted = {row["msisdn"]: row["action"] for row in stored if row["action"] and row["msisdn"]}
        stops = [msisdn for msisdn, action in wanted.items() if action == OPT_OUT]
        starts = [msisdn for msisdn, action in wanted.items() if action == OPT_IN]
        opted_out = add_optouts(cur, stops, f"reply via {provider}") if stops else []
        opted_in = remove_optouts(cur, starts) if starts else []
        if stored and settings.callback_url:
            # In this transaction: a reply is kept and forwarded, or neither.
            enqueue_webhook(
                cur,
                INBOUND_WEBHOOK,
                settings.callback_url,
                {"messages": inbound_message_schema.dump(stored, many=True)},
                events=len(stored),
            )
    if stops:
        withdraw_queued(services, stops)  # out of the queue too, not only of the next send
    return InboundOutcome(len(messages), stored, opted_out, opted_in)


def parse_since(text: str | None) -> datetime:
    """Return `since` (ISO 8601; without an offset, UTC) as naive UTC, or raise InvalidInput."""
    if not text:
        return BEGINNING
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"since {text[:40]!r} is not ISO 8601 (e.g. 2026-01-31T08:00:00Z or 2026-01-31)"
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def inbound_page(services: Services, since: datetime, page: int, page_size: int) -> InboundReport:
    """Return one page of the replies received at or after `since`, oldest first."""
    with services.db.transaction() as cur:
        total = count_inbound(cur, since)
        rows = inbound_since(cur, since, page_size, (page - 1) * page_size)
    messages = [dict(zip(INBOUND_COLUMNS, row, strict=True)) for row in rows]
    return InboundReport(messages, page, page_size, total)


@bp.route("/callbacks/<provider>/inbound", methods=["POST", "GET"])
@public
def receive(provider):
    """Replies (MO messages) pushed by the provider.

    No user credentials: the configured provider checks the push its own way (signature
    or shared secret). Each reply is stored once, by the provider's id; a first word
    that is an opt-out keyword (STOP, ...) puts the sender on the suppression list, an
    opt-in keyword (START, UNSTOP) takes it off.
    ---
    parameters:
      - {in: path, name: provider, description: smsProvider.name}
    responses:
      200:
        description: The replies are stored.
        content: {application/json: {schema: InboundResponse}}
      403: The push failed the provider's check; nothing is stored.
      404: Not the configured provider, or it pushes no replies.
    errors: [406, 413, 500, 503]
    """
    _, configured, messages = checked_push(provider, "takes_inbound", "parse_inbound")
    outcome = record_inbound(services(), configured.name, messages)
    log.info(
        "replies from %s: %d received, %d new, %d opted out, %d opted in",
        configured.name,
        outcome.received,
        outcome.stored_count,
        outcome.opted_out_count,
        outcome.opted_in_count,
    )
    return jsonify(inbound_response_schema.dump(outcome))


@bp.route("/inbound", methods=["GET"])
def list_inbound():
    """Replies received, oldest first, paged (admins only: replies to every caller's sends).
    ---
    parameters:
      - {in: query, schema: InboundQuery}
    responses:
      200:
        description: One page of the replies received since `since`.
        content: {application/json: {schema: InboundPage}}
      403: The caller has not the admin permission.
    errors: [406, 500]
    """
    require_admin("Reading replies")
    query = load(inbound_query_schema)
    report = inbound_page(
        services(), parse_since(query["since"]), query["page"], query["page_size"]
    )
    return jsonify(inbound_page_schema.dump(report))
