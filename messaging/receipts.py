"""Pushed delivery receipts: `POST /callbacks/<provider>`.

Not behind user authentication: the configured provider checks each receipt its own
way (a signature or a shared secret, `Provider.parse_receipt`); a receipt that fails
the check gets 403 and changes nothing. The rule for storing: a message still `sent`
takes the first final status (`delivered` or `failed`) that arrives; a final status is
never changed by a later receipt, so duplicates and reordered receipts are harmless.
Receipts that say "still in flight" change nothing.

A receipt can overtake its message: the provider may report a message delivered while
the rest of its batch is still going out, before the batch's sms rows are written. A
final status for a provider id no message carries yet is kept (`early_receipts`) and
applied by the send path when it writes that row; one never matched within 24 hours is
logged and dropped by poll-status. Either way the receipt is answered 200 (a provider
would otherwise retry it for days), counting the id as unknown.
"""

import logging
from dataclasses import dataclass

from flask import Blueprint, jsonify, request
from requests.structures import CaseInsensitiveDict

from messaging.auth import public
from messaging.db import Database
from messaging.errors import NotFound
from messaging.providers.base import DELIVERED, FAILED, Provider, Receipt, StatusUpdate
from messaging.queries.status import (
    apply_status_updates,
    drop_early_receipts,
    keep_early_receipts,
    lock_unresolved_by_provider_id,
)
from messaging.schemas import ReceiptResponse
from messaging.services import current as services

log = logging.getLogger(__name__)

bp = Blueprint("receipts", __name__)

FINAL = (DELIVERED, FAILED)
LOGGED_UNKNOWN_IDS = 5
receipt_response_schema = ReceiptResponse()
# How long a final status for an id no message carries yet waits for its message.
EARLY_RECEIPT_SECONDS = 24 * 3600


@dataclass(frozen=True)
class ReceiptOutcome:
    received: int  # status updates in the receipt
    updated: int  # messages moved to a final status
    unknown: tuple[str, ...]  # provider ids matching no message (yet)
    kept: int = 0  # final statuses of unknown ids kept for their message

    @property
    def unknown_count(self) -> int:
        return len(self.unknown)


def record_updates(database: Database, updates: list[StatusUpdate]) -> ReceiptOutcome:
    """Store final statuses for messages still `sent`; the first final answer per id wins.

    Final statuses for ids no message carries yet are kept for the send path to apply.
    """
    final: dict[str, StatusUpdate] = {}
    for update in updates:
        if update.status in FINAL:
            final.setdefault(update.provider_id, update)
    provider_ids = list(dict.fromkeys(update.provider_id for update in updates))
    if not provider_ids:
        return ReceiptOutcome(0, 0, ())
    updated, known = _store(database, final, provider_ids)
    unknown = [pid for pid in provider_ids if pid not in known]
    early = [final[pid] for pid in unknown if pid in final]
    kept = 0
    if early:
        with database.transaction() as cur:
            arrived = keep_early_receipts(cur, early)
        kept = len(early) - len(arrived)
        if arrived:  # their batch was written between the two transactions
            updated += _store(database, final, sorted(arrived))[0]
            unknown = [pid for pid in unknown if pid not in arrived]
    return ReceiptOutcome(len(updates), updated, tuple(unknown), kept)


def _store(database: Database, final: dict[str, StatusUpdate], provider_ids) -> tuple[int, set]:
    """Apply the final statuses among these ids; return (messages changed, ids known)."""
    with database.transaction() as cur:
        unresolved, known = lock_unresolved_by_provider_id(cur, provider_ids)
        stored = [final[pid] for pid in dict.fromkeys(pid for _, pid in unresolved) if pid in final]
        updated = apply_status_updates(cur, stored, "receipt") if stored else 0
    return updated, known


def drop_unmatched(database: Database) -> int:
    """Drop kept receipts no message claimed within 24 hours, logging them; return how many."""
    with database.transaction() as cur:
        dropped = drop_early_receipts(cur, EARLY_RECEIPT_SECONDS)
    if dropped:
        log.warning(
            "dropped %d receipt(s) for ids no message carried within 24 h: %s%s",
            len(dropped),
            ", ".join(f"{pid} ({status})" for pid, status, _ in dropped[:LOGGED_UNKNOWN_IDS]),
            " ..." if len(dropped) > LOGGED_UNKNOWN_IDS else "",
        )
    return len(dropped)


def configured_provider(name: str) -> Provider:
    """Return the configured provider if `name` (case-insensitive) is it; else NotFound."""
    configured = services().provider
    if name.lower() != configured.name.lower():
        raise NotFound(f"no provider {name!r} is configured here")
    return configured


def pushed_request() -> Receipt:
    """Return the request being handled, as the provider sent it."""
    body = request.get_data(cache=True)  # before form parsing, which reads the cache
    return Receipt(
        method=request.method,
        url=request.url,
        headers=CaseInsensitiveDict(request.headers.items()),
        form=request.values.to_dict(),
        json=request.get_json(silent=True) if request.is_json else None,
        body=body,
    )


@bp.route("/callbacks/<provider>", methods=["POST", "GET"])
# A provider signs the URL it calls: one configured with a trailing slash is answered there.
@bp.route("/callbacks/<provider>/", methods=["POST", "GET"])
@public
def receive(provider):
    """Delivery receipts pushed by the provider.

    No user credentials: the configured provider checks the receipt its own way
    (signature or shared secret). The first final status of a message wins; an unknown
    id is answered 200 and logged.
    ---
    parameters:
      - {in: path, name: provider, description: smsProvider.name}
    responses:
      200:
        description: Receipt read and stored.
        content: {application/json: {schema: ReceiptResponse}}
      403: The receipt failed the provider's check.
      404: Not the configured provider, or it takes no receipts.
    errors: [413, 500, 503]
    """
    configured = configured_provider(provider)
    if not configured.takes_receipts:
        raise NotFound(f"provider {configured.name} takes no pushed receipts")
    updates = configured.parse_receipt(pushed_request())
    outcome = record_updates(services().db, updates)
    if outcome.unknown:
        unknown = outcome.unknown
        log.warning(
            "receipt from %s for %d unknown message id(s), %d final status(es) kept for "
            "their message: %s%s",
            configured.name,
            len(unknown),
            outcome.kept,
            ", ".join(unknown[:LOGGED_UNKNOWN_IDS]),
            " ..." if len(unknown) > LOGGED_UNKNOWN_IDS else "",
        )
    log.info(
        "receipt from %s: %d update(s), %d stored",
        configured.name,
        outcome.received,
        outcome.updated,
    )
    return jsonify(receipt_response_schema.dump(outcome))
