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

from flask import Blueprint, current_app, jsonify, request
from requests.structures import CaseInsensitiveDict

from messaging.db import Database
from messaging.errors import NotFound
from messaging.providers.base import DELIVERED, FAILED, Receipt, StatusUpdate
from messaging.queries.status import apply_status_updates, lock_unresolved_by_provider_id

log = logging.getLogger(__name__)

bp = Blueprint("receipts", __name__)

FINAL = (DELIVERED, FAILED)
LOGGED_UNKNOWN_IDS = 5


@dataclass(frozen=True)
class ReceiptOutcome:
    received: int  # status updates in the receipt
    updated: int  # messages moved to a final status
    unknown: tuple[str, ...]  # provider ids matching no message


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


@bp.route("/callbacks/<provider_name>", methods=["POST", "GET"])
# A provider signs the URL it calls: one configured with a trailing slash is answered there.
@bp.route("/callbacks/<provider_name>/", methods=["POST", "GET"])
def receive(provider_name):
    services = current_app.extensions["messaging"]
    provider = services.provider
    if provider_name.lower() != provider.name.lower():
        raise NotFound(f"no provider {provider_name!r} is configured here")
    body = request.get_data(cache=True)  # before form parsing, which reads the cache
    receipt = Receipt(
        method=request.method,
        url=request.url,
        headers=CaseInsensitiveDict(request.headers.items()),
        form=request.values.to_dict(),
        json=request.get_json(silent=True) if request.is_json else None,
        body=body,
    )
    try:
        updates = provider.parse_receipt(receipt)
    except NotImplementedError:
        raise NotFound(f"provider {provider.name} takes no pushed receipts") from None
    outcome = record_updates(services.db, updates)
    if outcome.unknown:
        unknown = outcome.unknown
        log.warning(
            "receipt from %s for %d unknown message id(s), ignored: %s%s",
            provider.name,
            len(unknown),
            ", ".join(unknown[:LOGGED_UNKNOWN_IDS]),
            " ..." if len(unknown) > LOGGED_UNKNOWN_IDS else "",
        )
    log.info(
        "receipt from %s: %d update(s), %d stored",
        provider.name,
        outcome.received,
        outcome.updated,
    )
    return jsonify(
        {"received": outcome.received, "updated": outcome.updated, "unknown": len(outcome.unknown)}
    )
