"""Row <-> dataclass conversions both backends share (their SELECTs return the same columns)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..events import StoredEvent
from ..tls import ClientIdentity

__all__ = ["EVENT_COLUMNS", "EVENTS_FROM", "event_from_row", "identity_columns", "identity_from_columns"]

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
