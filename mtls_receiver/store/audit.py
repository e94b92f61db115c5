"""The audit trail costs bounded disk: repeated refusals are coalesced, old rows are purged.

One pipelining connection repeating a refused request wrote a row per request (40,001 rows, 11 MB
in 20 s). Now the first refusal of its kind is written at once, as before (it is audited before it
is answered); identical refusals (same status and reason) from the same peer within :data:`WINDOW`
seconds are only counted in memory, and the counts go to one more row ("repeats": how many, first
and last time), written within :data:`FLUSH_EVERY` seconds and on a clean stop. Every distinct
refusal still gets its own row; accepted requests are never coalesced (they go with their events).

Rows older than ``[store] audit_retention_days`` are deleted in the background, in small batches
so that a purge never holds the write lock for long. The events themselves are never purged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..errors import StoreUnavailable
from ..events import AuditRecord
from .base import AuditRepeats, Store
from .rows import purge_cutoff

__all__ = [
    "FLUSH_EVERY",
    "MAX_KEYS",
    "PURGE_BATCH",
    "PURGE_EVERY",
    "WINDOW",
    "AuditRetention",
    "RefusalCoalescer",
    "refusal_key",
]

log = logging.getLogger("mtls_receiver")

WINDOW = 60.0  # seconds one repeats row collects identical refusals; then the next one is written anew
FLUSH_EVERY = 1.0  # the most a counted refusal waits before its count is written
MAX_KEYS = 10_000  # distinct refusals followed at once, per process (least recently seen go first)
PURGE_EVERY = 3600.0  # seconds between retention runs (the first runs at start)
PURGE_BATCH = 1000  # rows deleted per transaction
PURGE_PAUSE = 0.05  # seconds between batches: requests' commits go in between


def refusal_key(audit: AuditRecord) -> int:
    """What makes two refusals identical: listener, route, peer, status, reason and client certificate.

    Not the method and path: a sender that varies the path of every request (a 404 flood) is still one
    refusal repeated, and its row keeps the first path as a sample. Kept as Python's hash of those
    fields (keyed per process with SipHash, so a sender cannot make two refusals collide on purpose),
    not the fields themselves: a reason can quote request data.
    """
    client = audit.client.fingerprint if audit.client else None
    return hash((audit.listener, audit.route, audit.peer, audit.status, audit.reason, client))


@dataclass(eq=False)
class _Entry:
    """One refusal written as a row: when its window opened, and its repeats since."""

    opened: float  # time.monotonic() when the refusal was written
    first: AuditRecord | None = None  # the first repeat not yet in a row (its at and fields start the row)
    count: int = 0  # repeats not yet written
    last_at: str = ""
    seq: int | None = None  # the row holding this window's repeats, once written


class RefusalCoalescer:
    """In front of the group commit: ``repeat`` says whether a refusal only needs counting."""

    def __init__(
        self, store: Store, window: float = WINDOW, every: float = FLUSH_EVERY, max_keys: int = MAX_KEYS
    ) -> None:
        self.store, self.window, self.every, self.max_keys = store, window, every, max_keys
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._retired: list[_Entry] = []  # left the table with repeats still to write
        self._flusher: asyncio.Task[None] | None = None

    def repeat(self, audit: AuditRecord) -> bool:
        """True when ``audit`` repeats a refusal written within the window: it is counted (and
        written within ``every`` seconds) instead of being written now."""
        key = refusal_key(audit)
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry.opened > self.window:
            return False
        self._entries.move_to_end(key)
        entry.first = entry.first or audit
        entry.count += 1
        entry.last_at = audit.at
        return True

    def written(self, audit: AuditRecord) -> None:
        """``audit``, a refusal, was committed as a row of its own: its repeats are counted from now."""
        self._retire(self._entries.pop(refusal_key(audit), None))
        self._entries[refusal_key(audit)] = _Entry(opened=time.monotonic())
        while len(self._entries) > self.max_keys:
            self._retire(self._entries.popitem(last=False)[1])

    def _retire(self, entry: _Entry | None) -> None:
        if entry is not None and entry.count:
            self._retired.append(entry)

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="audit-coalescer")

    async def stop(self) -> None:
        """Write what is still counted (a clean stop loses no count)."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        with contextlib.suppress(StoreUnavailable):
            await self.flush()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.flush()
            except StoreUnavailable:
                pass  # the counts stay; the next flush tries again
            except Exception:  # a bug: say so, keep counting and flushing
                log.exception("audit coalescer: flush failed")

    async def flush(self) -> None:
        """Write every count gathered since the last flush, in one transaction."""
        self._expire()
        retired, self._retired = self._retired, []
        pending = [entry for entry in (*retired, *self._entries.values()) if entry.count]
        if not pending:
            return
        sent = [(entry, entry.count) for entry in pending]
        try:
            seqs = await self.store.record_repeats(
                [AuditRepeats(_repeats(entry), entry.seq) for entry in pending]
            )
        except BaseException:
            self._retired = retired + self._retired  # to be written by the next flush
            raise
        for (entry, count), seq in zip(sent, seqs, strict=True):
            entry.count -= count  # repeats counted while the write ran stay for the next flush
            entry.seq = seq
            if not entry.count:
                entry.first = None

    def _expire(self) -> None:
        """Windows that closed leave the table (their last counts are written by this flush)."""
        now = time.monotonic()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.opened <= self.window:
                break
            del self._entries[key]
            self._retire(entry)


def _repeats(entry: _Entry) -> AuditRecord:
    assert entry.first is not None
    return replace(entry.first, count=entry.count, last_at=entry.last_at)


class AuditRetention:
    """Deletes audit rows older than ``days()`` days: at start, then every PURGE_EVERY seconds."""

    def __init__(self, store: Store, days: Callable[[], float], every: float = PURGE_EVERY) -> None:
        self.store, self.days, self.every = store, days, every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="audit-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                purged = await self.purge()
                if purged:
                    log.info("audit retention: deleted %d row(s) older than %g days", purged, self.days())
            except StoreUnavailable as exc:
                log.warning("audit retention: %s; trying again in %gs", exc, self.every)
            except Exception:
                log.exception("audit retention failed; trying again in %gs", self.every)
            await asyncio.sleep(self.every)

    async def purge(self) -> int:
        """Delete every row older than the retention, batch by batch; returns how many."""
        before, total = purge_cutoff(self.days()), 0
        while deleted := await self.store.purge_audit(before, PURGE_BATCH):
            total += deleted
            await asyncio.sleep(PURGE_PAUSE)
        return total
