"""Pushed delivery receipts: `POST /callbacks/<provider>`.

Not behind user authentication: the configured provider checks each receipt its own
way (a signature or a shared secret, `Provider.parse_receipt`); a receipt that fails
the check gets 403 and changes nothing. The rule for storing: a message still `sent`
takes the first final status (`delivered` or `failed`) that arrives; a final status is
never changed by a later receipt, so duplicates and reordered receipts are harmless.
Receipts that say "still in flight" change nothing. An id we do not know is logged and
answered 200 (a provider would otherwise retry it for days).
"""

import logging
from dataclasses import dataclass

from flask import Blueprint, jsonify, request
from requests.structures import CaseInsensitiveDict

from messaging.auth import public
from messaging.db import Database
from messaging.errors import NotFound
from messaging.providers.base import DELIVERED, FAILED, Receipt, StatusUpdate
from messaging.queries.status import apply_status_updates, lock_unresolved_by_provider_id
from messaging.schemas import ReceiptResponse
from messaging.services import current as services

log = logging.getLogger(__name__)

bp = Blueprint("receipts", __name__)

FINAL = (DELIVERED, FAILED)
LOGGED_UNKNOWN_IDS = 5
receipt_response_schema = ReceiptResponse()


@dataclass(frozen=True)
class ReceiptOutcome:
    received: int  # status updates in the receipt
    updated: int  # messages moved to a final status
    unknown: tuple[str, ...]  # provider ids matching no message

    @property
    def unknown_count(self) -> int:
        return len(self.unknown)


def record_updates(database: Database, updates: list[StatusUpdate]) -> ReceiptOutcome:
    """Store final statuses for messages still `sent`; the first final answer per id wins."""
    final: dict[str, StatusUpdate] = {}
    for update in updates:
        if update.status in FINAL:
            final.setdefault(update.provider_id, update)
    provider_ids = list(dict.fromkeys(update.provider_id for update in updates))
    if not provider_ids:
        return ReceiptOutcome(0, 0, ())
    with database.transaction() as cur:
        unresolved, known = lock_unresolved_by_provider_id(cur, provider_ids)
        stored = [final[pid] for pid in dict.fromkeys(pid for _, pid in unresolved) if pid in final]
        updated = 0
        if stored:
            updated = apply_status_updates(cur, stored)
    unknown = tuple(pid for pid in provider_ids if pid not in known)
    return ReceiptOutcome(len(updates), updated, unknown)


@bp.route("/callbacks/<provider>", methods=["POST", "GET"])
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
    configured = services().provider
    if provider.lower() != configured.name.lower():
        raise NotFound(f"no provider {provider!r} is configured here")
    if not configured.takes_receipts:
        raise NotFound(f"provider {configured.name} takes no pushed receipts")
    body = request.get_data(cache=True)  # before form parsing, which reads the cache
    receipt = Receipt(
        method=request.method,
        url=request.url,
        headers=CaseInsensitiveDict(request.headers.items()),
        form=request.values.to_dict(),
        json=request.get_json(silent=True) if request.is_json else None,
        body=body,
    )
    updates = configured.parse_receipt(receipt)
    outcome = record_updates(services().db, updates)
    if outcome.unknown:
        unknown = outcome.unknown
        log.warning(
            "receipt from %s for %d unknown message id(s), ignored: %s%s",
            configured.name,
            len(unknown),
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
