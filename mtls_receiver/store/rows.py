"""The SQL both backends run and their rows <-> dataclasses (their SELECTs return the same columns).

Statements are written once, with ``?`` placeholders as SQLite takes them; PostgreSQL's backend
runs them through :func:`numbered`. What only one dialect can say stays in its backend.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .. import jsoncodec
from ..events import AttemptOutcome, AuditRecord, ClientIdentity, NewEvent, StoredAnswer, StoredEvent
from .base import AuditQuery, Write

__all__ = [
    "ADD_REPEATS",
    "ANSWER_OF",
    "ANSWER_RETENTION",
    "ATTEMPTS_OF",
    "AUDIT_ARITY",
    "AUDIT_COLUMNS",
    "AUDIT_INSERT_COLUMNS",
    "AUDIT_SUMMARY",
    "DEAD_SINCE",
    "EVENT_ARITY",
    "EVENT_BY_ID",
    "EVENT_COLUMNS",
    "EVENT_INSERT_COLUMNS",
    "EVENT_TO_REPLAY",
    "EVENTS_FROM",
    "FINISH_ATTEMPT",
    "FINISH_REQUEST",
    "FORGET_ANSWERS",
    "INSERT_ATTEMPT",
    "INSERT_AUDIT",
    "INSERT_REPEATS",
    "LIST_AUDIT",
    "PURGE_AUDIT",
    "QUEUE_EVENT",
    "REPLAY",
    "STATS",
    "STORED_SINCE",
    "answer_row",
    "attempt_row",
    "audit_from_row",
    "audit_row",
    "audit_where",
    "event_from_row",
    "event_row",
    "identity_columns",
    "identity_from_columns",
    "new_event_id",
    "numbered",
    "order_key",
    "outcome_row",
    "purge_cutoff",
    "repeats_row",
    "replay_row",
    "values",
]

ANSWER_RETENTION = 3600.0  # seconds a synchronous answer is kept for repeats (senders repeat for minutes)

EVENT_INSERT_COLUMNS = (
    "id, provider, route, kind, dedup_key, payload, received_at, peer, client_subject,"
    " client_issuer, client_fingerprint, verified_by"
)
AUDIT_INSERT_COLUMNS = (
    "at, listener, route, method, path, peer, status, reason, client_subject, client_issuer,"
    " client_fingerprint"
)
EVENT_ARITY = len(EVENT_INSERT_COLUMNS.split(","))  # placeholders per row
AUDIT_ARITY = len(AUDIT_INSERT_COLUMNS.split(","))
AUDIT_COLUMNS = f"{AUDIT_INSERT_COLUMNS}, count, last_at"  # what audit_from_row reads

EVENT_COLUMNS = (
    "e.id, e.provider, e.route, e.kind, e.dedup_key, e.payload, e.received_at, e.peer, e.client_subject,"
    " e.client_issuer, e.client_fingerprint, e.verified_by,"
    " COALESCE(o.status, 'stored'), COALESCE(o.attempts, 0)"
)
EVENTS_FROM = "events e LEFT JOIN outbox o ON o.event_id = e.id"


def values(count: int) -> str:
    """``count`` placeholders, for a VALUES list."""
    return ", ".join("?" * count)


# --- receiving ------------------------------------------------------------------------------------
#: a newly stored event, put in the outbox in the same transaction
QUEUE_EVENT = (
    "INSERT INTO outbox (event_id, seq, order_key, status, next_attempt_at) VALUES (?, ?, ?, 'pending', 0)"
)
INSERT_AUDIT = f"INSERT INTO audit ({AUDIT_INSERT_COLUMNS}) VALUES ({values(AUDIT_ARITY)})"

# --- synchronous answers (idempotency) ------------------------------------------------------------
FORGET_ANSWERS = "DELETE FROM requests WHERE finished_at < ?"  # given before now - ANSWER_RETENTION
ANSWER_OF = "SELECT state, started_at, status, content_type, body FROM requests WHERE route = ? AND key = ?"
FINISH_REQUEST = (
    "UPDATE requests SET state = 'done', finished_at = ?, status = ?, content_type = ?,"
    " body = ? WHERE route = ? AND key = ?"
)

# --- forwarding: the outbox -----------------------------------------------------------------------
#: an attempt's outcome, written only while the lease it was made under is still the event's: the
#: lease token is a fencing token, so an attempt that outlived its lease cannot overwrite a newer one
FINISH_ATTEMPT = (
    "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?, lease_until = 0"
    " WHERE event_id = ? AND lease_token = ? RETURNING event_id"
)
INSERT_ATTEMPT = (
    "INSERT INTO attempts (event_id, number, at, duration_ms, status_code, error) VALUES (?, ?, ?, ?, ?, ?)"
)
#: queue an event again; a lease in force is kept (no second delivery at the same time) and its
#: attempt fenced off (a new token), so the event is delivered again once that lease is over
REPLAY = (
    "INSERT INTO outbox (event_id, seq, order_key, status, next_attempt_at)"
    " VALUES (?, ?, ?, 'pending', 0) ON CONFLICT (event_id) DO UPDATE"
    " SET status = 'pending', attempts = 0, next_attempt_at = 0, lease_token = outbox.lease_token + 1"
)
#: what REPLAY needs of an event (see replay_row)
EVENT_TO_REPLAY = "SELECT seq, provider, dedup_key FROM events WHERE id = ?"
#: the events ``events replay --dead`` queues again: dead ones received since a moment
DEAD_SINCE = (
    "SELECT o.event_id FROM outbox o JOIN events e ON e.id = o.event_id"
    " WHERE o.status = 'dead' AND e.received_at >= ?"
)
#: the events ``events replay --stored`` queues: never queued (stored before forwarding was configured)
STORED_SINCE = (
    "SELECT e.id, e.route FROM events e LEFT JOIN outbox o ON o.event_id = e.id"
    " WHERE o.event_id IS NULL AND e.received_at >= ? ORDER BY e.seq"
)

# --- reading --------------------------------------------------------------------------------------
EVENT_BY_ID = f"SELECT {EVENT_COLUMNS} FROM {EVENTS_FROM} WHERE e.id = ?"
#: an event's attempts; each backend orders them by when they were written (SQLite: rowid; PostgreSQL: id)
ATTEMPTS_OF = "SELECT number, at, duration_ms, status_code, error FROM attempts WHERE event_id = ?"
LIST_AUDIT = f"SELECT {AUDIT_COLUMNS} FROM audit{{where}} ORDER BY seq DESC LIMIT ?"  # where: audit_where
#: requests per route, status and reason (a row of coalesced repeats counts as many)
AUDIT_SUMMARY = (
    "SELECT route, status, reason, SUM(count) AS requests FROM audit{where}"
    " GROUP BY route, status, reason ORDER BY requests DESC, route, status, reason"
)
STATS = "SELECT 'events', COUNT(*) FROM events UNION ALL SELECT status, COUNT(*) FROM outbox GROUP BY status"

# --- the audit trail: coalesced repeats, retention ------------------------------------------------
INSERT_REPEATS = f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({values(AUDIT_ARITY + 2)}) RETURNING seq"
ADD_REPEATS = "UPDATE audit SET count = count + ?, last_at = ? WHERE seq = ?"
#: old rows among the ``?`` oldest: reads at most that many rows (rows are in ``at`` order, give or take
#: the milliseconds between workers), where ``WHERE at < ?`` alone would read the whole table when
#: nothing is old
PURGE_AUDIT = (
    "DELETE FROM audit WHERE seq IN"
    " (SELECT seq FROM (SELECT seq, at FROM audit ORDER BY seq LIMIT ?) oldest WHERE at < ?)"
)


def audit_where(query: AuditQuery | None) -> tuple[str, list[Any]]:
    """`` WHERE ...`` (or nothing) selecting the audit rows ``query`` asks for, and its parameters.

    A row of coalesced repeats is kept when its last repeat is recent enough; the reason is matched
    as a part, in any case (LIKE, with the pattern's own characters escaped).
    """
    if query is None:
        return "", []
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("route", query.route), ("status", query.status), ("peer", query.peer)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.reason is not None:
        clauses.append("LOWER(reason) LIKE ? ESCAPE '!'")
        escaped = query.reason.lower().replace("!", "!!").replace("%", "!%").replace("_", "!_")
        params.append(f"%{escaped}%")
    if query.since is not None:
        clauses.append("COALESCE(last_at, at) >= ?")
        params.append(query.since)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (the shared statements hold no other ``?``)."""
    parts = sql.split("?")
    return "".join(part + (f"${n}" if n < len(parts) else "") for n, part in enumerate(parts, 1))


def event_from_row(row: Sequence[Any], lease_token: int = 0) -> StoredEvent:
    return StoredEvent(
        id=row[0],
        provider=row[1],
        route=row[2],
        kind=row[3],
        dedup_key=row[4],
        payload=json.loads(row[5]),
        received_at=row[6],
        peer=row[7],
        client=identity_from_columns(row[8:11]),
        verified_by=row[11],
        status=row[12],
        attempts=row[13],
        lease_token=lease_token,
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
    return (
        event_id,
        write.provider,
        write.route,
        event.kind,
        event.dedup_key,
        payload,
        audit.at,
        audit.peer,
        *identity_columns(audit.client),
        write.verified_by,
    )


def answer_row(route: str, key: str, answer: StoredAnswer, now: float) -> tuple[Any, ...]:
    """FINISH_REQUEST's parameters."""
    return (now, answer.status, answer.content_type, answer.body, route, key)


def replay_row(event_id: str, event: Sequence[Any]) -> tuple[Any, ...]:
    """REPLAY's parameters from an EVENT_TO_REPLAY row: a replayed event is ordered by its dedup key."""
    seq, provider, dedup_key = event
    return (event_id, seq, f"{provider}:{dedup_key}")


def attempt_row(outcome: AttemptOutcome) -> tuple[Any, ...]:
    """INSERT_ATTEMPT's parameters: (event_id, number, at, duration_ms, status_code, error)."""
    attempt = outcome.attempt
    return (
        outcome.event_id,
        attempt.number,
        attempt.at,
        attempt.duration_ms,
        attempt.status_code,
        attempt.error,
    )


def outcome_row(outcome: AttemptOutcome) -> tuple[Any, ...]:
    """FINISH_ATTEMPT's parameters: (status, attempts, next_attempt_at, event_id, lease_token)."""
    return (
        outcome.status,
        outcome.attempt.number,
        outcome.next_attempt_at,
        outcome.event_id,
        outcome.lease_token,
    )


def audit_row(audit: AuditRecord) -> tuple[Any, ...]:
    """An ``audit`` row, in AUDIT_INSERT_COLUMNS order."""
    return (
        audit.at,
        audit.listener,
        audit.route,
        audit.method,
        audit.path,
        audit.peer,
        audit.status,
        audit.reason,
        *identity_columns(audit.client),
    )


def repeats_row(audit: AuditRecord) -> tuple[Any, ...]:
    """A row of coalesced repeats, in AUDIT_COLUMNS order."""
    return (*audit_row(audit), audit.count, audit.last_at)


def audit_from_row(row: Sequence[Any]) -> AuditRecord:
    """An AuditRecord from a SELECT of AUDIT_COLUMNS."""
    return AuditRecord(
        at=row[0],
        listener=row[1],
        route=row[2],
        method=row[3],
        path=row[4],
        peer=row[5],
        status=row[6],
        reason=row[7],
        client=identity_from_columns(row[8:11]),
        count=row[11],
        last_at=row[12],
    )


def purge_cutoff(days: float, now: float | None = None) -> str:
    """The ``at`` before which audit rows are purged: ``days`` ago, in the format of AuditRecord.at
    (UTC ISO 8601, fixed width), so rows compare as text."""
    moment = (time.time() if now is None else now) - days * 86400
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")


def order_key(write: Write, event: NewEvent) -> str:
    """Events sharing an order key are delivered in arrival order."""
    return f"{write.provider}:{event.order_key or event.dedup_key}"
