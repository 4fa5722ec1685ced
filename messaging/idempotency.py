"""Idempotency-Key: the same key from the same caller within 24 h gets the first answer again."""

import hashlib
import json
import re
import time
from collections.abc import Callable

from messaging.db import Database
from messaging.errors import InvalidInput, MessagingError
from messaging.queries.idempotency import (
    claim_idempotency_key,
    idempotent_response,
    release_idempotency_key,
    store_idempotent_response,
)

KEY_FORMAT = re.compile(r"^[\x21-\x7e]{1,255}$")
# How long a request waits for a concurrent one with the same key to finish.
WAIT_SECONDS = 60.0
POLL_SECONDS = 0.05


class InProgress(MessagingError):
    status_code = 409


def fingerprint(*parts) -> str:
    """Hash what identifies a request, so a key reused for another request is caught."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def run_once(
    db: Database, identity: str, key: str, request_fingerprint: str, produce: Callable[[], dict]
) -> dict:
    """Return produce()'s answer, computed once per (identity, key) however many ask at once."""
    if not KEY_FORMAT.match(key):
        raise InvalidInput("Idempotency-Key must be 1-255 visible ASCII characters")
    with db.transaction() as cur:
        claimed = claim_idempotency_key(cur, identity, key, request_fingerprint)
    if not claimed:
        return _replay(db, identity, key, request_fingerprint)
    try:
        answer = produce()
    except BaseException:
        # Nothing was recorded as answered, so the key may be used again.
        with db.transaction() as cur:
            release_idempotency_key(cur, identity, key)
        raise
    with db.transaction() as cur:
        store_idempotent_response(cur, identity, key, json.dumps(answer))
    return answer


def _replay(db: Database, identity: str, key: str, request_fingerprint: str) -> dict:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with db.transaction() as cur:
            row = idempotent_response(cur, identity, key)
        if row is None:
            raise InProgress("the request with this Idempotency-Key failed; send it again")
        stored_fingerprint, answer = row
        if stored_fingerprint != request_fingerprint:
            raise InvalidInput("Idempotency-Key was already used for a different request")
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            raise InProgress("a request with this Idempotency-Key is still in progress")
        time.sleep(POLL_SECONDS)
