"""What every store is and passes around: the :class:`Store` interface and its shared types.

Routes talk only to :class:`Store`; a backend promises that ``record`` returns only after the rows
are committed durably, so a 2xx never outruns the disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from ..events import AttemptOutcome, AuditRecord, Claim, DeliveryAttempt, NewEvent, StoredAnswer, StoredEvent

if TYPE_CHECKING:
    from datetime import datetime

    from .reads import EventQuery, RefusalGroup, RouteTraffic

__all__ = ["Access", "AuditCount", "AuditQuery", "AuditRepeats", "Receipt", "Store", "Write"]


class Access(Enum):
    """What a process may do to the inbox it opens; only a forwarder may ever touch delivery leases.

    Looking at the inbox (``events list``/``show``) must change nothing: a lease released by an
    inspection once made the forwarder deliver a Pix a second time, after its refunds.
    """

    READ = "read"  # inspection: a read-only connection; no migration, no write of any kind
    WRITE = "write"  # operator writes (``events replay``): no migration, leases left to their holders
    SERVE = "serve"  # ``db migrate`` and serving workers: apply missing migrations
    FORWARD = "forward"  # the serving process that forwards: SERVE, and may release leases of a dead one


@dataclass(frozen=True)
class Receipt:
    """What a write did: the ids of newly stored events and how many were duplicates."""

    stored: tuple[str, ...]
    duplicates: int


@dataclass(frozen=True)
class AuditRepeats:
    """Repeats of one refusal not yet written: ``audit`` is the first of them, with ``count`` and
    ``last_at``; ``seq`` is the row already holding earlier repeats of it, if any."""

    audit: AuditRecord
    seq: int | None = None


@dataclass(frozen=True)
class AuditQuery:
    """Which audit rows ``audit list`` and ``audit summary`` look at; each None: any."""

    route: str | None = None
    status: int | None = None
    reason: str | None = None  # a part of the reason, in any case
    peer: str | None = None  # the client address, exactly
    since: str | None = None  # a time as AuditRecord.at writes it (UTC): rows with a request at or after it


@dataclass(frozen=True)
class AuditCount:
    """How many requests one route answered with one status and reason (repeats counted)."""

    route: str
    status: int
    reason: str
    requests: int


@dataclass
class Write:
    """One request's rows: its new events (maybe queued for forwarding) and its audit row."""

    provider: str
    route: str
    events: Sequence[NewEvent]
    audit: AuditRecord | None  # None: a readiness probe, which touches only the health row
    verified_by: str
    queue: bool
    done: asyncio.Future[Receipt]


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def record(
        self,
        provider: str,
        route: str,
        events: Sequence[NewEvent],
        audit: AuditRecord,
        verified_by: str = "",
        queue: bool = False,
    ) -> Receipt:
        """Store new events (dropping duplicates) and the audit row in one durable commit.

        The events carry the audit row's time, peer and client identity; with ``queue``
        each new event is put in the outbox in the same transaction.
        """
        ...

    async def claim_request(self, route: str, key: str, now: float, stale_after: float) -> Claim:
        """Take an idempotency key for a synchronous request, or say who has it / what was answered.

        A key left ``in_progress`` for longer than ``stale_after`` seconds (its process
        died) is taken over.
        """
        ...

    async def finish_request(self, route: str, key: str, answer: StoredAnswer, now: float) -> None:
        """Durably keep the answer given for a key (kept for at least an hour)."""
        ...

    async def claim_due(self, now: float, limit: int, lease: float) -> list[StoredEvent]:
        """Lease up to ``limit`` events due for delivery, oldest first, keeping per-order-key order.

        Each claim gives the event a new ``lease_token``; its attempt's outcome must carry it.
        """
        ...

    async def finish_attempts(self, outcomes: Sequence[AttemptOutcome]) -> list[str]:
        """Record delivery attempts and their events' new statuses, all in one transaction.

        An outcome counts only while its lease is still the event's (``lease_token``, a fencing
        token): one whose lease was taken over by another claim, or replayed, records nothing
        and its event id is returned (superseded).
        """
        ...

    async def replay(
        self,
        event_ids: Sequence[str] = (),
        dead_since: str | None = None,
        all_dead: bool = False,
        stored_on: Sequence[str] = (),
    ) -> int:
        """Queue events for delivery again; returns how many were queued.

        ``all_dead``: also every dead event; ``stored_on``: also every event of these routes that
        was never queued (stored before forwarding was configured); both only those received at or
        after ``dead_since`` when it is given (a time as AuditRecord.at writes it).

        A lease in force is kept (no second delivery at once) but its attempt is fenced off:
        the event is delivered again once that lease is over.
        """
        ...

    async def list_events(
        self, limit: int = 50, status: str | None = None, route: str | None = None
    ) -> list[StoredEvent]: ...

    async def get_event(self, event_id: str) -> tuple[StoredEvent, list[DeliveryAttempt]] | None: ...

    async def list_audit(self, limit: int = 50, query: AuditQuery | None = None) -> list[AuditRecord]:
        """Audit rows matching ``query``, newest first."""
        ...

    async def audit_summary(self, query: AuditQuery) -> list[AuditCount]:
        """Requests matching ``query`` counted by route, status and reason, the most frequent first."""
        ...

    async def record_repeats(self, repeats: Sequence[AuditRepeats]) -> list[int]:
        """Write coalesced repeats of refusals in one transaction: a new row for each without a
        ``seq`` (its ``audit`` carries count and last_at), else add to that row's count and move
        its last_at. Returns each one's row number (``seq``), in order."""
        ...

    async def purge_audit(self, before: str, limit: int) -> int:
        """Delete audit rows older than ``before`` among the ``limit`` oldest; returns how many.

        Bounded by ``limit`` so a purge never holds the write lock long; events are never purged.
        """
        ...

    async def stats(self) -> dict[str, int]:
        """``events`` (inbox size) and the outbox count per status."""
        ...

    async def check_writable(self) -> bool: ...

    # --- the operator console's reads (store/reads.py, shared by both backends) ---

    async def traffic(self, since: datetime) -> dict[str, RouteTraffic]:
        """Requests per route since ``since``: accepted, refused, duplicates."""
        ...

    async def find_events(self, query: EventQuery) -> list[StoredEvent]:
        """Events matching ``query``, newest first; one more than ``query.limit`` if there are more."""
        ...

    async def refusal_groups(self, since: str, by: str, limit: int = 50) -> list[RefusalGroup]:
        """Refusals since ``since`` (an audit ``at``) grouped by ``reason`` or ``peer``."""
        ...

    async def refusals(
        self, since: str, reason: str | None = None, peer: str | None = None, limit: int = 100
    ) -> list[AuditRecord]:
        """The refused requests behind a group, newest first."""
        ...
