"""Row <-> dataclass conversions both backends share (their SELECTs return the same columns)."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .. import jsoncodec
from ..events import AttemptOutcome, AuditRecord, ClientIdentity, NewEvent, StoredEvent
from .base import Write

__all__ = [
    "AUDIT_ARITY", "AUDIT_COLUMNS", "AUDIT_INSERT_COLUMNS", "EVENT_ARITY", "EVENT_COLUMNS", "EVENT_INSERT_COLUMNS",
    "EVENTS_FROM", "FINISH_ATTEMPT", "INSERT_ATTEMPT", "REPLAY", "attempt_row", "audit_from_row", "audit_row",
    "event_from_row", "event_row", "identity_columns", "identity_from_columns", "new_event_id", "numbered",
    "order_key", "outcome_row", "purge_cutoff", "repeats_row",
]

EVENT_INSERT_COLUMNS = ("id, provider, route, kind, dedup_key, payload, received_at, peer, client_subject,"
                        " client_issuer, client_fingerprint, verified_by")
AUDIT_INSERT_COLUMNS = ("at, listener, route, method, path, peer, status, reason, client_subject, client_issuer,"
                        " client_fingerprint")
EVENT_ARITY = len(EVENT_INSERT_COLUMNS.split(","))  # placeholders per row
AUDIT_ARITY = len(AUDIT_INSERT_COLUMNS.split(","))
AUDIT_COLUMNS = f"{AUDIT_INSERT_COLUMNS}, count, last_at"  # what audit_from_row reads

EVENT_COLUMNS = (
    "e.id, e.provider, e.route, e.kind, e.dedup_key, e.payload, e.received_at, e.peer, e.client_subject,"
    " e.client_issuer, e.client_fingerprint, e.verified_by, COALESCE(o.status, 'stored'), COALESCE(o.attempts, 0)"
)
EVENTS_FROM = "events e LEFT JOIN outbox o ON o.event_id = e.id"

# The outbox statements both backends run as they are (``?`` placeholders; see ``numbered``).
#: an attempt's outcome, written only while the lease it was made under is still the event's: the
#: lease token is a fencing token, so an attempt that outlived its lease cannot overwrite a newer one
FINISH_ATTEMPT = ("UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, lease_until = 0"
                  " WHERE event_id = ? AND lease_token = ? RETURNING event_id")
INSERT_ATTEMPT = ("INSERT INTO attempts (event_id, number, at, duration_ms, status_code, error)"
                  " VALUES (?, ?, ?, ?, ?, ?)")
#: queue an event again; a lease in force is kept (no second delivery at the same time) and its
#: attempt fenced off (a new token), so the event is delivered again once that lease is over
REPLAY = ("INSERT INTO outbox (event_id, seq, order_key, status, next_attempt_at)"
          " VALUES (?, ?, ?, 'pending', 0) ON CONFLICT (event_id) DO UPDATE"
          " SET status = 'pending', attempts = 0, next_attempt_at = 0, lease_token = outbox.lease_token + 1")


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (the shared statements hold no other ``?``)."""
    parts = sql.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1))


def event_from_row(row: Sequence[Any], lease_token: int = 0) -> StoredEvent:
    return StoredEvent(
        id=row[0], provider=row[1], route=row[2], kind=row[3], dedup_key=row[4], payload=json.loads(row[5]),
        received_at=row[6], peer=row[7], client=identity_from_columns(row[8:11]), verified_by=row[11],
        status=row[12], attempts=row[13], lease_token=lease_token,
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
    """INSERT_ATTEMPT's parameters: (event_id, number, at, duration_ms, status_code, error)."""
    attempt = outcome.attempt
    return (outcome.event_id, attempt.number, attempt.at, attempt.duration_ms, attempt.status_code, attempt.error)


def outcome_row(outcome: AttemptOutcome) -> tuple[Any, ...]:
    """FINISH_ATTEMPT's parameters: (status, attempts, next_attempt_at, event_id, lease_token)."""
    return (outcome.status, outcome.attempt.number, outcome.next_attempt_at, outcome.event_id,
            outcome.lease_token)


def audit_row(audit: AuditRecord) -> tuple[Any, ...]:
    """An ``audit`` row, in AUDIT_INSERT_COLUMNS order."""
    return (audit.at, audit.listener, audit.route, audit.method, audit.path, audit.peer, audit.status, audit.reason,
            *identity_columns(audit.client))


def repeats_row(audit: AuditRecord) -> tuple[Any, ...]:
    """A row of coalesced repeats, in AUDIT_COLUMNS order."""
    return (*audit_row(audit), audit.count, audit.last_at)


def audit_from_row(row: Sequence[Any]) -> AuditRecord:
    """An AuditRecord from a SELECT of AUDIT_COLUMNS."""
    return AuditRecord(at=row[0], listener=row[1], route=row[2], method=row[3], path=row[4], peer=row[5],
                       status=row[6], reason=row[7], client=identity_from_columns(row[8:11]), count=row[11],
                       last_at=row[12])


def purge_cutoff(days: float, now: float | None = None) -> str:
    """The ``at`` before which audit rows are purged: ``days`` ago, in the format of AuditRecord.at
    (UTC ISO 8601, fixed width), so rows compare as text."""
    moment = (time.time() if now is None else now) - days * 86400
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")


def order_key(write: Write, event: NewEvent) -> str:
    """Events sharing an order key are delivered in arrival order."""
    return f"{write.provider}:{event.order_key or event.dedup_key}"
