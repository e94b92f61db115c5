"""Group commit, shared by both backends: requests queue their writes, one task commits all
that is queued in one transaction (one fsync), then answers every one of them.

How long a commit waits for company: senders that were just answered tend to come back with
their next request, so a commit expects as many writes as the last one held plus those that
arrived while it ran. It goes as soon as that many are queued, or after ``commit_delay`` if
they do not all come (a sender went quiet). A fixed delay instead kept every group of
requests waiting for the whole delay after the last of them had arrived."""

from __future__ import annotations

import asyncio
import contextlib
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
        self._wake = asyncio.Event()  # something is queued
        self._gathered = asyncio.Event()  # as many writes are queued as the next commit expects
        self._expected = 0
        self._writer: asyncio.Task[None] | None = None
        self.commit_delay = commit_delay
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
        if len(self._queue) >= self._expected:
            self._gathered.set()
        return await done

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self.commit_delay and len(self._queue) < self._expected:
                await self._gather()
            self._wake.clear()
            batch, self._queue = self._queue, []
            try:
                receipts = await self._commit_batch(batch)
                self.commits += 1
            except (StoreUnavailable, OSError) as exc:
                for write in batch:
                    if not write.done.done():
                        write.done.set_exception(StoreUnavailable(f"commit failed: {exc}"))
                continue
            self._expected = len(batch) + len(self._queue)  # who was answered, and who came meanwhile
            for write, receipt in zip(batch, receipts):
                if not write.done.done():
                    write.done.set_result(receipt)

    async def _gather(self) -> None:
        """Wait, at most ``commit_delay``, until the writes the commit expects are queued."""
        self._gathered.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.commit_delay):
                await self._gathered.wait()
