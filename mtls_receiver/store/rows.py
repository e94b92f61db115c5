"""Row <-> dataclass conversions both backends share (their SELECTs return the same columns)."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import jsoncodec
from ..events import AttemptOutcome, AuditRecord, NewEvent, StoredEvent
from ..tls import ClientIdentity

if TYPE_CHECKING:
    from .group_commit import Write

__all__ = [
    "AUDIT_ARITY", "AUDIT_INSERT_COLUMNS", "EVENT_ARITY", "EVENT_COLUMNS", "EVENT_INSERT_COLUMNS", "EVENTS_FROM",
    "attempt_row", "audit_row", "event_from_row", "event_row", "identity_columns", "identity_from_columns",
    "new_event_id", "order_key", "outcome_row",
]

EVENT_INSERT_COLUMNS = ("id, provider, route, kind, dedup_key, payload, received_at, peer, client_subject,"
                        " client_issuer, client_fingerprint, verified_by")
AUDIT_INSERT_COLUMNS = ("at, listener, route, method, path, peer, status, reason, client_subject, client_issuer,"
                        " client_fingerprint")
EVENT_ARITY = len(EVENT_INSERT_COLUMNS.split(","))  # placeholders per row
AUDIT_ARITY = len(AUDIT_INSERT_COLUMNS.split(","))

EVENT_COLUMNS = (
    "e.id, e.provider, e.route, e.kind, e.dedup_key, e.payload, e.received_at, e.peer, e.client_subject,"
    " e.client_issuer, e.client_fingerprint, e.verified_by, COALESCE(o.status, 'stored'), COALESCE(o.attempts, 0)"
)
EVENTS_FROM = "events e LEFT JOIN outbox o ON o.event_id = e.id"


def event_from_row(row: Sequence[Any]) -> StoredEvent:
    return StoredEvent(
        id=row[0], provider=row[1], route=row[2], kind=row[3], dedup_key=row[4], payload=json.loads(row[5]),
        received_at=row[6], peer=row[7], client=identity_from_columns(row[8:11]), verified_by=row[11],
        status=row[12], attempts=row[13],
    )


def identity_columns(client: ClientIdentity | None) -> tuple[str | None, str | None, str | None]:
    return (client.subject, client.issuer, client.fingerprint) if client else (None, None, None)


def identity_from_columns(columns: Sequence[str | None]) -> ClientIdentity | None:
    subject, issuer, fingerprint = columns
    if subject is None or issuer is None or fingerprint is None:
        return None
    return ClientIdentity(subject=subject, issuer=issuer, fingerprint=fingerprint)


_ids = random.Random(os.urandom(32))  # ids need to be unique, not secret: no system call per id


def new_event_id() -> str:
    """``evt_`` and 32 hex digits: the time in milliseconds, then 80 random bits.

    Ids that grow with time keep index inserts on the last page (a random id would
    dirty one more index page per event at every commit).
    """
    return f"evt_{time.time_ns() // 1_000_000:012x}{_ids.getrandbits(80):020x}"


def event_row(event_id: str, write: Write, event: NewEvent) -> tuple[Any, ...]:
    """An ``events`` row, in EVENT_INSERT_COLUMNS order."""
    audit = write.audit
    assert audit is not None, "events come with their request's audit row; only a readiness probe has none"
    payload = jsoncodec.dumps(event.payload)
    return (event_id, write.provider, write.route, event.kind, event.dedup_key, payload, audit.at, audit.peer,
            *identity_columns(audit.client), write.verified_by)


def attempt_row(outcome: AttemptOutcome) -> tuple[Any, ...]:
    """Columns (event_id, number, at, duration_ms, status_code, error) of ``attempts``."""
    attempt = outcome.attempt
    return (outcome.event_id, attempt.number, attempt.at, attempt.duration_ms, attempt.status_code, attempt.error)


def outcome_row(outcome: AttemptOutcome) -> tuple[Any, ...]:
    """(status, attempts, next_attempt_at, event_id): the outbox update an attempt makes."""
    return (outcome.status, outcome.attempt.number, outcome.next_attempt_at, outcome.event_id)


def audit_row(audit: AuditRecord) -> tuple[Any, ...]:
    """An ``audit`` row, in AUDIT_INSERT_COLUMNS order."""
    return (audit.at, audit.listener, audit.route, audit.method, audit.path, audit.peer, audit.status, audit.reason,
            *identity_columns(audit.client))


def order_key(write: Write, event: NewEvent) -> str:
    """Events sharing an order key are delivered in arrival order."""
    return f"{write.provider}:{event.order_key or event.dedup_key}"
