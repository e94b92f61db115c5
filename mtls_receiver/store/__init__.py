"""The durable inbox: events and the audit trail, behind one small interface.

Routes talk only to :class:`Store`; a backend promises that ``record`` returns
only after the rows are committed durably, so a 2xx never outruns the disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..config import StoreConfig
from ..events import AuditRecord, Claim, NewEvent, StoredAnswer, StoredEvent

__all__ = ["Receipt", "Store", "open_store"]


@dataclass(frozen=True)
class Receipt:
    """What a write did: the ids of newly stored events and how many were duplicates."""

    stored: tuple[str, ...]
    duplicates: int


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def record(
        self,
        provider: str,
        route: str,
        events: Sequence[NewEvent],
        audit: AuditRecord,
    ) -> Receipt:
        """Store new events (dropping duplicates) and the audit row in one durable commit.

        The events carry the audit row's time, peer and client identity.
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

    async def list_events(self, limit: int = 50) -> list[StoredEvent]: ...

    async def list_audit(self, limit: int = 50) -> list[AuditRecord]: ...


def open_store(config: StoreConfig) -> Store:
    """The backend for a store config (not yet opened)."""
    from .sqlite import SQLiteStore

    return SQLiteStore(config.path)
