"""Group commit, shared by both backends: requests queue their writes, one task commits all
that is queued in one transaction (one fsync), then answers every one of them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import StoreUnavailable
from ..events import AuditRecord, NewEvent
from . import Receipt

__all__ = ["GroupCommit", "Write"]


@dataclass
class Write:
    """One request's rows: its new events (maybe queued for forwarding) and its audit row."""

    provider: str
    route: str
    events: Sequence[NewEvent]
    audit: AuditRecord
    verified_by: str
    queue: bool
    done: asyncio.Future[Receipt]


class GroupCommit:
    """Mixin for a store: ``record`` queues, ``_commit_batch`` (the backend's) commits a whole batch."""

    def __init__(self, commit_delay: float = 0.0) -> None:
        self._queue: list[Write] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.commit_delay = commit_delay
        self._last_batch = 0
        self.commits = 0  # transactions committed: shows group commit at work

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="group-commit")

    async def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None

    async def _commit_batch(self, batch: list[Write]) -> list[Receipt]:
        raise NotImplementedError

    async def record(self, provider: str, route: str, events: Sequence[NewEvent], audit: AuditRecord,
                     verified_by: str = "", queue: bool = False) -> Receipt:
        if self._writer is None or self._writer.done():
            raise StoreUnavailable("store is not open")
        done: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.append(Write(provider, route, events, audit, verified_by, queue, done))
        self._wake.set()
        return await done

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.commit_delay and self._last_batch > 1:
                # Requests are arriving together: a moment's wait lets more of them share the
                # fsync (PostgreSQL's commit_delay). One request alone is never held back.
                await asyncio.sleep(self.commit_delay)
            self._wake.clear()
            batch, self._queue = self._queue, []
            self._last_batch = len(batch)
            try:
                receipts = await self._commit_batch(batch)
                self.commits += 1
            except (StoreUnavailable, OSError) as exc:
                for write in batch:
                    if not write.done.done():
                        write.done.set_exception(StoreUnavailable(f"commit failed: {exc}"))
                continue
            for write, receipt in zip(batch, receipts):
                if not write.done.done():
                    write.done.set_result(receipt)
