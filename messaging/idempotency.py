"""Idempotency-Key: the same key from the same caller within 24 h gets the first answer again.

A key is claimed in the transaction that records its send, so from the moment a send
has a refNumber the key belongs to that send for good: a repeat never makes a second
send, whatever happened to the first request (a database outage mid-send, a killed
worker). A repeat gets the stored answer, or the send's answer built from the database
once it is finished (or closed by reconcile), or at once a 409 naming its refNumber
while it is still running.
"""

import hashlib
import json
import logging
import re
from collections.abc import Callable

from messaging.db import Database
from messaging.errors import Conflict, InvalidInput, LimitExceeded, ServiceUnavailable
from messaging.queries.idempotency import (
    claim_idempotency_key,
    idempotent_response,
    store_idempotent_response,
)

log = logging.getLogger(__name__)

KEY_FORMAT = re.compile(r"^[\x21-\x7e]{1,255}$")

# claim(cur, sendlog_id): called in the transaction that records the send.
Claim = Callable[[object, int], None]
Answer = tuple[int, dict]


class _Taken(Exception):
    """The key already belongs to a send: undo this request's record and answer that one."""


def fingerprint(*parts) -> str:
    """Hash what identifies a request, so a key reused for another request is caught."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def run_once(
    db: Database,
    identity: str,
    key: str,
    request_fingerprint: str,
    produce: Callable[[Claim], Answer],
    answer_for_send: Callable[[int], Answer],
) -> Answer:
    """Return the answer, (HTTP status, body), of the one send made for (identity, key).

    `produce(claim)` records and makes the send, calling `claim(cur, sendlog_id)` in the
    transaction that records it; `answer_for_send(sendlog_id)` builds the answer of a
    send from the database (raising Conflict while it is still running).
    """
    if not KEY_FORMAT.match(key):
        raise InvalidInput("Idempotency-Key must be 1-255 visible ASCII characters")

    def claim(cur, sendlog_id: int) -> None:
        if not claim_idempotency_key(cur, identity, key, request_fingerprint, sendlog_id):
            raise _Taken

    try:
        answer = produce(claim)
    except _Taken:
        return _replay(db, identity, key, request_fingerprint, answer_for_send)
    except LimitExceeded:
        # A repeat is no new send: over its caller's limit now or not, it gets the answer
        # of the send its key names (the limit was counted once, by that send).
        with db.transaction() as cur:
            if idempotent_response(cur, identity, key) is None:
                raise
        return _replay(db, identity, key, request_fingerprint, answer_for_send)
    status, body = answer
    try:
        with db.transaction() as cur:
            store_idempotent_response(cur, identity, key, status, json.dumps(body))
    except ServiceUnavailable:
        # The key still names the send, so a repeat answers from the send itself.
        log.warning("could not store the answer for an Idempotency-Key; repeats rebuild it")
    return answer


def _replay(db, identity, key, request_fingerprint, answer_for_send) -> dict:
    with db.transaction() as cur:
        row = idempotent_response(cur, identity, key)
    if row is None:  # it expired in between: rare enough to let the caller try again
        raise Conflict("the Idempotency-Key expired just now; send the request again")
    stored_fingerprint, status, body, sendlog_id = row
    if stored_fingerprint != request_fingerprint:
        raise InvalidInput("Idempotency-Key was already used for a different request")
    if body is not None:
        return status or 200, body
    if sendlog_id is None:  # claimed before keys named their send (migration 0009)
        raise Conflict("a request with this Idempotency-Key is still in progress")
    return answer_for_send(sendlog_id)
