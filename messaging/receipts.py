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
from messaging.errors import NotFound, ReceiptRejected
from messaging.providers.base import DELIVERED, FAILED, Provider, Receipt, StatusUpdate
from messaging.queries.status import (
    ANY_PROVIDER,
    Owner,
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


def record_updates(
    database: Database, updates: list[StatusUpdate], owner: Owner = ANY_PROVIDER
) -> ReceiptOutcome:
    """Store final statuses for messages still `sent` (of `owner`, the provider that pushed
    them); the first final answer per id wins.

    Final statuses for ids no message carries yet are kept for the send path to apply.
    """
    final: dict[str, StatusUpdate] = {}
    for update in updates:
        if update.status in FINAL:
            final.setdefault(update.provider_id, update)
    provider_ids = list(dict.fromkeys(update.provider_id for update in updates))
    if not provider_ids:
        return ReceiptOutcome(0, 0, ())
    updated, known = _store(database, final, provider_ids, owner)
    unknown = [pid for pid in provider_ids if pid not in known]
    early = [final[pid] for pid in unknown if pid in final]
    kept = 0
    if early:
        with database.transaction() as cur:
            arrived = keep_early_receipts(cur, early, owner)
        kept = len(early) - len(arrived)
        if arrived:  # their batch was written between the two transactions
            updated += _store(database, final, sorted(arrived), owner)[0]
            unknown = [pid for pid in unknown if pid not in arrived]
    return ReceiptOutcome(len(updates), updated, tuple(unknown), kept)


def _store(database: Database, final: dict, provider_ids, owner: Owner) -> tuple[int, set]:
    """Apply the final statuses among these ids; return (messages changed, ids known)."""
    with database.transaction() as cur:
        unresolved, known = lock_unresolved_by_provider_id(cur, provider_ids, owner)
        stored = [final[pid] for pid in dict.fromkeys(pid for _, pid in unresolved) if pid in final]
        updated = apply_status_updates(cur, stored, "receipt", owner) if stored else 0
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


def configured_providers(name: str) -> list[tuple[str, Provider]]:
    """Return [(configured name, plugin)] a push to /callbacks/<name> may come from: the
    provider of that configured name (case-insensitive), else every one of that plugin
    (two accounts of one provider: each checks the push in turn). NotFound when none."""
    current = services()
    plugins = [(c.key, current.plugin_of(c.key)) for c in current.providers]
    lowered = name.lower()
    found = [(key, plugin) for key, plugin in plugins if key.lower() == lowered] or [
        (key, plugin) for key, plugin in plugins if plugin.name.lower() == lowered
    ]
    if not found:
        raise NotFound(f"no provider {name!r} is configured here")
    return found


def checked_push(name: str, capability: str, parse: str):
    """Return (configured name, plugin, what it read) for the push being handled: the
    first provider of that name declaring `capability` whose check it passes. Raises
    NotFound when none declares it, and the first provider's ReceiptRejected when every
    check fails."""
    found = configured_providers(name)
    candidates = [(key, plugin) for key, plugin in found if getattr(plugin, capability)]
    if not candidates:
        named = found[0][1].name
        if capability == "takes_receipts":
            raise NotFound(f"provider {named} takes no pushed receipts")
        raise NotFound(f"provider {named} pushes no replies")
    push = pushed_request()
    rejected = None
    for key, plugin in candidates:
        try:
            return key, plugin, getattr(plugin, parse)(push)
        except ReceiptRejected as err:
            rejected = rejected or err
    raise rejected


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
      - {in: path, name: provider, description: "the provider's configured name (its id,
          else smsProvider.name)"}
    responses:
      200:
        description: Receipt read and stored.
        content: {application/json: {schema: ReceiptResponse}}
      403: The receipt failed the provider's check.
      404: Not the configured provider, or it takes no receipts.
    errors: [413, 500, 503]
    """
    key, configured, updates = checked_push(provider, "takes_receipts", "parse_receipt")
    outcome = record_updates(services().db, updates, services().owner(key))
    if outcome.unknown:
        unknown = outcome.unknown
        log.warning(
            "receipt from %s for %d unknown message id(s), %d final status(es) kept for "
            "their message: %s%s",
            key,
            len(unknown),
            outcome.kept,
            ", ".join(unknown[:LOGGED_UNKNOWN_IDS]),
            " ..." if len(unknown) > LOGGED_UNKNOWN_IDS else "",
        )
    log.info(
        "receipt from %s: %d update(s), %d stored",
        key,
        outcome.received,
        outcome.updated,
    )
    return jsonify(receipt_response_schema.dump(outcome))
