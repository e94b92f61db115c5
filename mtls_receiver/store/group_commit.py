"""Group commit, which each backend owns one of: requests queue their writes, one task commits
all that is queued in one transaction (one fsync, with the backend's commit function), then
answers every one of them.

How long a commit waits for company: senders that were just answered tend to come back with
their next request, so a commit expects as many writes as the last one held plus those that
arrived while it ran. It goes as soon as that many are queued, or after ``commit_delay`` if
they do not all come (a sender went quiet). A fixed delay instead kept every group of
requests waiting for the whole delay after the last of them had arrived.

The writer never stops while the store is open: whatever a commit raises (a dropped database
connection, a full disk, a bug in a driver), that batch is answered ``StoreUnavailable`` (503,
the senders retry), the backend repairs what it can (reconnects, checkpoints), and the next
batch is tried. An exception that ended the loop once left every later request of that worker
answered 503 until a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from ..errors import StoreUnavailable
from ..events import AuditRecord, NewEvent
from .base import Receipt, Write

__all__ = ["IDLE_AFTER", "PROBE_TIMEOUT", "Commit", "GroupCommit", "GroupCommitted", "Repair"]

log = logging.getLogger("mtls_receiver")

IDLE_AFTER = 1.0  # seconds without writes after which a backend tidies up (SQLite: checkpoint the WAL)
PROBE_TIMEOUT = 5.0  # seconds a readiness probe's commit may take before the store counts as not writable

Commit = Callable[[list[Write]], Awaitable[list[Receipt]]]  # one transaction for a batch, a receipt a write
Repair = Callable[[Exception], Awaitable[None]]  # after a failed commit: mend what it may have broken


class GroupCommit:
    """A store's writer: requests ``enqueue`` their rows, the backend's ``commit`` writes a batch at once.

    The backend may also ``repair`` what a failed commit may have broken (a connection, a full WAL),
    and ``tidy`` up once no write has come for ``IDLE_AFTER`` seconds, when ``tidy_due`` says there is
    something to do (SQLite: give the WAL's disk space back).
    """

    def __init__(
        self,
        commit: Commit,
        commit_delay: float = 0.0,
        *,
        repair: Repair | None = None,
        tidy: Callable[[], Awaitable[None]] | None = None,
        tidy_due: Callable[[], bool] | None = None,
    ) -> None:
        self._commit, self._repair, self._tidy, self._tidy_due = commit, repair, tidy, tidy_due
        self._queue: list[Write] = []
        self._wake = asyncio.Event()  # something is queued
        self._gathered = asyncio.Event()  # as many writes are queued as the next commit expects
        self._expected = 0
        self._writer: asyncio.Task[None] | None = None
        self.commit_delay = commit_delay
        self.commits = 0  # transactions committed: shows group commit at work
        self.failed_commits = 0  # batches answered 503 because their commit failed
        self._requests_failed = False  # a batch with requests' rows failed since the last probe

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="group-commit")

    async def stop(self) -> None:
        """Stop the writer; whatever is still queued is answered 503."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        queued, self._queue = self._queue, []
        _fail(queued, StoreUnavailable("store is closing"))

    @property
    def alive(self) -> bool:
        return self._writer is not None and not self._writer.done()

    def enqueue(
        self,
        provider: str,
        route: str,
        events: Sequence[NewEvent],
        audit: AuditRecord | None,
        verified_by: str,
        queue: bool,
    ) -> asyncio.Future[Receipt]:
        """Queue one request's rows; the future is answered once they are committed (or failed)."""
        if not self.alive:
            raise StoreUnavailable("store is not open")
        done: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.append(Write(provider, route, events, audit, verified_by, queue, done))
        self._wake.set()
        if len(self._queue) >= self._expected:
            self._gathered.set()
        return done

    async def probe(self, timeout: float = PROBE_TIMEOUT) -> bool:
        """Can this process commit to the inbox now? A real commit (the health row) through the writer,
        so a dead or stuck writer, a full disk or a lost database all answer False within ``timeout``.

        False too when requests' commits failed since the last probe and none succeeded after them:
        the probe's few pages may still fit where events no longer do (a full disk's last blocks)."""
        requests_failed, self._requests_failed = self._requests_failed, False
        try:
            done = self.enqueue("-", "-", (), None, "", False)
            async with asyncio.timeout(timeout):
                await asyncio.shield(done)  # a late commit still answers the future; nobody waits for it
        except (StoreUnavailable, TimeoutError):
            return False
        return not requests_failed

    async def _write_loop(self) -> None:
        """Commit what is queued until the store closes (cancelled); no failure ends it."""
        while True:
            if not await self._next_batch():
                if self._tidy is not None:
                    await _guarded("tidying", self._tidy())
                continue
            batch, self._queue = self._queue, []
            try:
                receipts = await self._commit(batch)
            except asyncio.CancelledError:
                _fail(batch, StoreUnavailable("store is closing"))
                raise
            except Exception as exc:  # any failure: answer 503, repair, go on
                self.failed_commits += 1
                self._requests_failed |= any(write.audit is not None for write in batch)
                _fail(batch, StoreUnavailable(f"commit failed: {_describe(exc)}"))
                if not isinstance(exc, (StoreUnavailable, OSError)):
                    log.error(
                        "group commit: unexpected %s; %d request(s) answered 503",
                        _describe(exc),
                        len(batch),
                        exc_info=exc,
                    )
                if self._repair is not None:
                    await _guarded("repair", self._repair(exc))
                continue
            self.commits += 1
            if self._requests_failed and any(write.audit is not None for write in batch):
                self._requests_failed = False  # requests commit again: the failure is over
            self._expected = len(batch) + len(self._queue)  # who was answered, and who came meanwhile
            for write, receipt in zip(batch, receipts, strict=True):
                if not write.done.done():
                    write.done.set_result(receipt)

    async def _next_batch(self) -> bool:
        """Wait for writes (True) or, if the backend has tidying to do, for ``IDLE_AFTER`` quiet
        seconds (False)."""
        if not self._wake.is_set() and self._tidy_due is not None and self._tidy_due():
            try:
                async with asyncio.timeout(IDLE_AFTER):
                    await self._wake.wait()
            except TimeoutError:
                return False
        await self._wake.wait()
        if self.commit_delay and len(self._queue) < self._expected:
            await self._gather()
        self._wake.clear()
        return True

    async def _gather(self) -> None:
        """Wait, at most ``commit_delay``, until the writes the commit expects are queued."""
        self._gathered.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.commit_delay):
                await self._gathered.wait()


async def _guarded(what: str, step: Awaitable[None]) -> None:
    """A repair or tidying step: its failure is logged, never the end of the writer."""
    try:
        await step
    except Exception as exc:
        log.warning("group commit: %s failed: %s", what, _describe(exc))


def _fail(writes: Sequence[Write], exc: StoreUnavailable) -> None:
    for write in writes:
        if not write.done.done():
            write.done.set_exception(exc)
            write.done.exception()  # retrieved: a probe nobody awaits any more logs no "never retrieved"


def _describe(exc: BaseException) -> str:
    """Our own errors as they are; anything else with its type, which may be all it says."""
    if isinstance(exc, StoreUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class GroupCommitted:
    """What both backends do alike through their :class:`GroupCommit`: a request's writes, and the
    readiness probe's, go through the one writer."""

    group_commit: GroupCommit

    async def record(
        self,
        provider: str,
        route: str,
        events: Sequence[NewEvent],
        audit: AuditRecord,
        verified_by: str = "",
        queue: bool = False,
    ) -> Receipt:
        return await self.group_commit.enqueue(provider, route, events, audit, verified_by, queue)

    async def check_writable(self) -> bool:
        """Can this process commit to the inbox now? A real (in SQLite fsynced) commit of the health row
        through the writer: a dead or stuck writer, a full disk, a locked file or an unreachable
        database all say False."""
        return await self.group_commit.probe()
