"""PostgreSQL backend (asyncpg): one inbox shared by several receiver instances.

Same promises as SQLite: ``record`` returns only after COMMIT with ``synchronous_commit = on``,
which every connection sets itself (a database or role default of ``off`` would acknowledge
commits that a crash of the database server can still lose), a
unique constraint on (provider, dedup_key) stores an event once whichever instance got it, and
the outbox is written in the same transaction. Forwarders of all instances claim due events with
``FOR UPDATE SKIP LOCKED`` and a lease, so one instance delivers an event at a time and another
takes over when a lease runs out. Requests of one instance share commits (group commit).

A connection that fails in any way (the server shut down mid-query, or asyncpg's protocol left in
a state it cannot leave: "cannot switch to state 15") is terminated and the pool opens a new one;
a failure the connection handling does not recognise replaces the whole pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from ..config import redact_dsn
from ..errors import StoreUnavailable
from ..events import AttemptOutcome, AuditRecord, Claim, DeliveryAttempt, NewEvent, StoredAnswer, StoredEvent
from .base import Access, AuditCount, AuditQuery, AuditRepeats, Receipt, Write
from .group_commit import GroupCommit, GroupCommitted
from .reads import QUERY_TIMEOUT, ConsoleReads
from .rows import (
    ADD_REPEATS,
    ANSWER_OF,
    ANSWER_RETENTION,
    ATTEMPTS_OF,
    AUDIT_SUMMARY,
    DEAD_SINCE,
    EVENT_ARITY,
    EVENT_BY_ID,
    EVENT_COLUMNS,
    EVENT_INSERT_COLUMNS,
    EVENT_TO_REPLAY,
    EVENTS_FROM,
    FINISH_ATTEMPT,
    FINISH_REQUEST,
    FORGET_ANSWERS,
    INSERT_ATTEMPT,
    INSERT_AUDIT,
    INSERT_REPEATS,
    LIST_AUDIT,
    PURGE_AUDIT,
    QUEUE_EVENT,
    REPLAY,
    STATS,
    STORED_SINCE,
    answer_row,
    attempt_row,
    audit_from_row,
    audit_row,
    audit_where,
    event_from_row,
    event_row,
    new_event_id,
    numbered,
    order_key,
    outcome_row,
    repeats_row,
    replay_row,
    values,
)

__all__ = ["MIGRATIONS", "PostgresStore", "SCHEMA_VERSION", "SERVER_SETTINGS"]

T = TypeVar("T")

log = logging.getLogger("mtls_receiver")

_MIGRATION_LOCK = 7_324_001  # pg_advisory_xact_lock key: one instance migrates at a time

#: schema version -> the statements that reach it from the one before
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    provider TEXT NOT NULL,
    route TEXT NOT NULL,
    kind TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL,
    peer TEXT NOT NULL,
    client_subject TEXT,
    client_issuer TEXT,
    client_fingerprint TEXT,
    verified_by TEXT NOT NULL DEFAULT '',
    UNIQUE (provider, dedup_key)
);
CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    at TEXT NOT NULL,
    listener TEXT NOT NULL,
    route TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    peer TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    client_subject TEXT,
    client_issuer TEXT,
    client_fingerprint TEXT
);
CREATE TABLE requests (
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    status INTEGER,
    content_type TEXT,
    body BYTEA,
    PRIMARY KEY (route, key)
);
CREATE TABLE outbox (
    event_id TEXT PRIMARY KEY REFERENCES events (id),
    seq BIGINT NOT NULL,
    order_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_order ON outbox (order_key, seq);
CREATE TABLE attempts (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id),
    number INTEGER NOT NULL,
    at TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT NOT NULL
);
CREATE INDEX attempts_event ON attempts (event_id, number);
""",
    # due events in arrival order, without reading and sorting every pending row of a backlog
    2: """
DROP INDEX outbox_due;
CREATE INDEX outbox_pending ON outbox (status, seq);
""",
    # a fencing token per lease: an attempt's outcome is written only while its lease is the event's
    3: """
ALTER TABLE outbox ADD COLUMN lease_token BIGINT NOT NULL DEFAULT 0;
""",
    # repeats of one refusal are one row (store/audit.py): how many, and when the last came
    4: """
ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit ADD COLUMN last_at TEXT;
""",
    # one row that readiness probes update through the group commit: a real commit to the inbox
    5: """
CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at DOUBLE PRECISION NOT NULL);
INSERT INTO health (id, checked_at) VALUES (1, 0);
""",
}
SCHEMA_VERSION = max(MIGRATIONS)

_UNAVAILABLE = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError)
# the shared statements (rows.py) with PostgreSQL's placeholders
_INSERT_EVENT = numbered(
    f"INSERT INTO events ({EVENT_INSERT_COLUMNS}) VALUES ({values(EVENT_ARITY)})"
    " ON CONFLICT (provider, dedup_key) DO NOTHING RETURNING seq"
)
_QUEUE_EVENT, _INSERT_AUDIT = numbered(QUEUE_EVENT), numbered(INSERT_AUDIT)
_FORGET_ANSWERS, _FINISH_REQUEST = numbered(FORGET_ANSWERS), numbered(FINISH_REQUEST)
_LOCK_ANSWER = numbered(f"{ANSWER_OF} FOR UPDATE")
_FINISH_ATTEMPT, _INSERT_ATTEMPT = numbered(FINISH_ATTEMPT), numbered(INSERT_ATTEMPT)
_REPLAY, _EVENT_TO_REPLAY, _DEAD_SINCE = numbered(REPLAY), numbered(EVENT_TO_REPLAY), numbered(DEAD_SINCE)
_EVENT_BY_ID, _ATTEMPTS_OF = numbered(EVENT_BY_ID), numbered(f"{ATTEMPTS_OF} ORDER BY id")
_STORED_SINCE = numbered(STORED_SINCE)
_INSERT_REPEATS, _ADD_REPEATS = numbered(INSERT_REPEATS), numbered(ADD_REPEATS)
_PURGE_AUDIT = numbered(PURGE_AUDIT)


async def schema_version(dsn: str) -> int:
    """The schema version the database is at (0: none yet), read without writing anything."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        version: int = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
    except asyncpg.UndefinedTableError:
        version = 0
    finally:
        await conn.close()
    return version


#: set on every connection, over any database or role default: a 2xx means the commit is on disk
SERVER_SETTINGS = {"synchronous_commit": "on"}


async def migrate(dsn: str) -> tuple[int, int]:
    """Bring the schema to SCHEMA_VERSION; returns (version before, version after)."""
    conn = await asyncpg.connect(dsn, timeout=10, server_settings=SERVER_SETTINGS)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            before = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            if before > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"database schema version {before} is newer than this program ({SCHEMA_VERSION})"
                )
            for version in range(before + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[version])
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
    finally:
        await conn.close()
    return before, SCHEMA_VERSION


class PostgresStore(ConsoleReads, GroupCommitted):
    def __init__(
        self,
        dsn: str,
        pool_size: int = 10,
        timeout: float = 5.0,
        commit_delay: float = 0.0,
        access: Access = Access.SERVE,
    ) -> None:
        self.dsn, self.pool_size, self.timeout, self.access = dsn, pool_size, timeout, access
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()  # one new pool at a time after a failure dropped the old one
        #: the console's reads one at a time (as SQLite's one reads thread): however many searches are
        #: asked for, they hold one of the pool's connections, never all of those the commits need
        self._console_reads = asyncio.Semaphore(1)
        self.group_commit = GroupCommit(self._commit_batch, commit_delay, repair=self._after_failure)

    async def open(self) -> None:
        """Serving processes migrate; nobody releases leases on open: several instances share the
        outbox, and a dead instance's leases simply run out. Inspection opens read-only sessions."""
        try:
            if self.access in (Access.SERVE, Access.FORWARD):
                await migrate(self.dsn)
            else:
                self._require_current_schema(await schema_version(self.dsn))
            self._pool = await self._create_pool()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"{redact_dsn(self.dsn)}: {exc}") from None
        self.group_commit.start()

    def _require_current_schema(self, version: int) -> None:
        """Looking and replaying never migrate (an instance of the previous version may still run)."""
        if version != SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{redact_dsn(self.dsn)}: schema version {version}, this program's is"
                f" {SCHEMA_VERSION}: run `mtls-receiver db migrate` with the newer one"
            )

    def _create_pool(self) -> asyncpg.Pool:
        """A pool whose every connection insists on ``synchronous_commit = on`` (awaited: connected);
        inspection's connections are read-only sessions besides."""
        settings = (
            {**SERVER_SETTINGS, "default_transaction_read_only": "on"}
            if self.access is Access.READ
            else SERVER_SETTINGS
        )
        return asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            timeout=self.timeout,
            command_timeout=self.timeout,
            server_settings=settings,
        )

    async def _after_failure(self, exc: Exception) -> None:
        """A failure ``_transaction`` did not recognise may have left the pool itself broken: replace it."""
        if not isinstance(exc, StoreUnavailable):
            await self._renew_pool()

    async def _renew_pool(self) -> None:
        async with self._pool_lock:
            old, self._pool = self._pool, None
            if old is not None:
                old.terminate()
            try:
                self._pool = await self._create_pool()
            except _UNAVAILABLE as exc:
                log.warning(
                    "%s: no new connection pool yet (%s); the next request tries again",
                    redact_dsn(self.dsn),
                    exc,
                )

    async def close(self) -> None:
        await self.group_commit.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _transaction(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in one transaction; any database trouble is StoreUnavailable (503)."""
        for attempt in range(3):
            pool = await self._current_pool()
            try:
                async with pool.acquire(timeout=self.timeout) as conn:
                    return await _in_transaction(conn, fn, *args)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == 2:
                    raise StoreUnavailable(f"{redact_dsn(self.dsn)}: conflicting writers, gave up") from None
            except _UNAVAILABLE as exc:
                raise StoreUnavailable(f"{redact_dsn(self.dsn)}: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _current_pool(self) -> asyncpg.Pool:
        """The pool, made again if a failure dropped it (``_renew_pool`` found the database away)."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                if not self.group_commit.alive:
                    raise StoreUnavailable("store is not open")
                try:
                    self._pool = await self._create_pool()
                except _UNAVAILABLE as exc:
                    raise StoreUnavailable(f"{redact_dsn(self.dsn)}: {type(exc).__name__}: {exc}") from exc
            return self._pool

    # --- receiving: group commit ---------------------------------------------------------------

    async def _commit_batch(self, batch: list[Write]) -> list[Receipt]:
        receipts: list[Receipt] = await self._transaction(self._insert_batch, batch)
        return receipts

    async def _insert_batch(self, conn: asyncpg.Connection, batch: list[Write]) -> list[Receipt]:
        """Insert in (provider, dedup_key) order: instances inserting the same keys concurrently then
        wait on each other in one order instead of deadlocking."""
        pending = sorted(
            (
                (write.provider, event.dedup_key, n, event)
                for n, write in enumerate(batch)
                for event in write.events
            ),
            key=lambda item: (item[0], item[1]),
        )
        stored: list[list[str]] = [[] for _ in batch]
        for _provider, _key, n, event in pending:
            event_id = await self._insert_event(conn, batch[n], event)
            if event_id is not None:
                stored[n].append(event_id)
        audits = [audit_row(write.audit) for write in batch if write.audit is not None]
        if audits:
            await conn.executemany(_INSERT_AUDIT, audits)
        if len(audits) < len(batch):  # a readiness probe: last, after the rows other instances also lock
            await conn.execute("UPDATE health SET checked_at = extract(epoch FROM now()) WHERE id = 1")
        return [
            Receipt(stored=tuple(ids), duplicates=len(write.events) - len(ids))
            for ids, write in zip(stored, batch, strict=True)
        ]

    @staticmethod
    async def _insert_event(conn: asyncpg.Connection, write: Write, event: NewEvent) -> str | None:
        """The new event's id, or None when (provider, dedup_key) is already stored."""
        event_id = new_event_id()
        seq = await conn.fetchval(_INSERT_EVENT, *event_row(event_id, write, event))
        if seq is None:
            return None
        if write.queue:
            await conn.execute(_QUEUE_EVENT, event_id, seq, order_key(write, event))
        return event_id

    # --- synchronous answers (idempotency) -----------------------------------------------------

    async def claim_request(self, route: str, key: str, now: float, stale_after: float) -> Claim:
        async def claim(conn: asyncpg.Connection) -> Claim:
            await conn.execute(_FORGET_ANSWERS, now - ANSWER_RETENTION)
            inserted = await conn.fetchval(
                "INSERT INTO requests (route, key, state, started_at) VALUES ($1, $2, 'in_progress', $3)"
                " ON CONFLICT (route, key) DO NOTHING RETURNING 1",
                route,
                key,
                now,
            )
            if inserted:
                return Claim("new")
            row = await conn.fetchrow(_LOCK_ANSWER, route, key)
            if row["state"] == "done":
                return Claim("done", StoredAnswer(row["status"], row["content_type"], bytes(row["body"])))
            if row["started_at"] > now - stale_after:
                return Claim("in_progress")
            await conn.execute(
                "UPDATE requests SET started_at = $3 WHERE route = $1 AND key = $2", route, key, now
            )
            return Claim("new")

        return await self._transaction(claim)

    async def finish_request(self, route: str, key: str, answer: StoredAnswer, now: float) -> None:
        async def finish(conn: asyncpg.Connection) -> None:
            await conn.execute(_FINISH_REQUEST, *answer_row(route, key, answer, now))

        await self._transaction(finish)

    # --- forwarding: the outbox, shared by every instance ---------------------------------------

    async def claim_due(self, now: float, limit: int, lease: float) -> list[StoredEvent]:
        async def claim(conn: asyncpg.Connection) -> list[StoredEvent]:
            ids = await conn.fetch(
                "WITH due AS ("
                "  SELECT o.event_id FROM outbox o"
                "  WHERE o.status = 'pending' AND o.next_attempt_at <= $1 AND o.lease_until <= $1"
                "  AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_key = o.order_key AND p.seq < o.seq"
                "                  AND p.status = 'pending')"
                "  ORDER BY o.seq LIMIT $2 FOR UPDATE SKIP LOCKED)"
                " UPDATE outbox SET lease_until = $3, lease_token = outbox.lease_token + 1"
                " FROM due WHERE outbox.event_id = due.event_id"
                " RETURNING outbox.event_id, outbox.lease_token",
                now,
                limit,
                now + lease,
            )
            if not ids:
                return []
            tokens = {r["event_id"]: r["lease_token"] for r in ids}
            rows = await conn.fetch(
                f"SELECT {EVENT_COLUMNS} FROM {EVENTS_FROM} WHERE e.id = ANY($1::text[]) ORDER BY e.seq",
                list(tokens),
            )
            return [event_from_row(row, tokens[row[0]]) for row in rows]

        return await self._transaction(claim)

    async def finish_attempts(self, outcomes: Sequence[AttemptOutcome]) -> list[str]:
        """Record attempts whose lease is still their event's; returns the ids of the others."""

        async def finish(conn: asyncpg.Connection) -> list[str]:
            recorded: list[AttemptOutcome] = []
            superseded: list[AttemptOutcome] = []
            for outcome in outcomes:
                held = await conn.fetchval(_FINISH_ATTEMPT, *outcome_row(outcome))
                (recorded if held is not None else superseded).append(outcome)
            if recorded:
                await conn.executemany(_INSERT_ATTEMPT, [attempt_row(outcome) for outcome in recorded])
            return [outcome.event_id for outcome in superseded]

        superseded: list[str] = await self._transaction(finish)
        return superseded

    async def replay(
        self,
        event_ids: Sequence[str] = (),
        dead_since: str | None = None,
        all_dead: bool = False,
        stored_on: Sequence[str] = (),
    ) -> int:
        async def replay(conn: asyncpg.Connection) -> int:
            ids = list(event_ids)
            if all_dead:
                ids += [r["event_id"] for r in await conn.fetch(_DEAD_SINCE, dead_since or "")]
            if stored_on:
                stored = await conn.fetch(_STORED_SINCE, dead_since or "")
                ids += [r["id"] for r in stored if r["route"] in stored_on]
            count = 0
            for event_id in ids:
                event = await conn.fetchrow(_EVENT_TO_REPLAY, event_id)
                if event is None:
                    continue
                await conn.execute(_REPLAY, *replay_row(event_id, event))
                count += 1
            return count

        return await self._transaction(replay)

    # --- reading -------------------------------------------------------------------------------

    async def list_events(
        self, limit: int = 50, status: str | None = None, route: str | None = None
    ) -> list[StoredEvent]:
        async def select(conn: asyncpg.Connection) -> list[StoredEvent]:
            rows = await conn.fetch(
                f"SELECT {EVENT_COLUMNS} FROM {EVENTS_FROM}"
                " WHERE ($1::text IS NULL OR COALESCE(o.status, 'stored') = $1)"
                " AND ($2::text IS NULL OR e.route = $2) ORDER BY e.seq DESC LIMIT $3",
                status,
                route,
                limit,
            )
            return [event_from_row(row) for row in rows]

        return await self._transaction(select)

    async def get_event(self, event_id: str) -> tuple[StoredEvent, list[DeliveryAttempt]] | None:
        async def select(conn: asyncpg.Connection) -> tuple[StoredEvent, list[DeliveryAttempt]] | None:
            row = await conn.fetchrow(_EVENT_BY_ID, event_id)
            if row is None:
                return None
            attempts = await conn.fetch(_ATTEMPTS_OF, event_id)
            return event_from_row(row), [DeliveryAttempt(*a) for a in attempts]

        return await self._transaction(select)

    async def list_audit(self, limit: int = 50, query: AuditQuery | None = None) -> list[AuditRecord]:
        where, params = audit_where(query)
        statement = numbered(LIST_AUDIT.format(where=where))

        async def select(conn: asyncpg.Connection) -> list[AuditRecord]:
            rows = await conn.fetch(statement, *params, limit)
            return [audit_from_row(row) for row in rows]

        records: list[AuditRecord] = await self._transaction(select)
        return records

    async def audit_summary(self, query: AuditQuery) -> list[AuditCount]:
        where, params = audit_where(query)
        statement = numbered(AUDIT_SUMMARY.format(where=where))

        async def select(conn: asyncpg.Connection) -> list[AuditCount]:
            return [AuditCount(*row) for row in await conn.fetch(statement, *params)]

        counts: list[AuditCount] = await self._transaction(select)
        return counts

    async def record_repeats(self, repeats: Sequence[AuditRepeats]) -> list[int]:
        async def write(conn: asyncpg.Connection) -> list[int]:
            seqs = []
            for repeat in repeats:
                audit = repeat.audit
                if repeat.seq is None:
                    seqs.append(await conn.fetchval(_INSERT_REPEATS, *repeats_row(audit)))
                else:
                    await conn.execute(_ADD_REPEATS, audit.count, audit.last_at, repeat.seq)
                    seqs.append(repeat.seq)
            return seqs

        seqs: list[int] = await self._transaction(write)
        return seqs

    async def purge_audit(self, before: str, limit: int) -> int:
        """Old rows among the ``limit`` oldest (see rows.PURGE_AUDIT for why not ``WHERE at < $2`` alone)."""
        status: str = await self._transaction(lambda conn: conn.execute(_PURGE_AUDIT, limit, before))
        return int(status.split()[-1])

    async def stats(self) -> dict[str, int]:
        async def select(conn: asyncpg.Connection) -> dict[str, int]:
            rows = await conn.fetch(STATS)
            return {name: count for name, count in rows}

        return await self._transaction(select)

    async def select(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        """A shared read statement (the console's, store/reads.py) with PostgreSQL's placeholders,
        stopped by the server after QUERY_TIMEOUT (the pool's shorter command timeout lifted for it)."""
        text = numbered(sql)

        async def select(conn: asyncpg.Connection) -> list[asyncpg.Record]:
            await conn.execute(f"SET LOCAL statement_timeout = {int(QUERY_TIMEOUT * 1000)}")
            rows: list[asyncpg.Record] = await conn.fetch(text, *params, timeout=QUERY_TIMEOUT + 5)
            return rows

        async with self._console_reads:
            return await self._transaction(select)


async def _in_transaction(conn: asyncpg.Connection, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``fn`` in a transaction on ``conn``; a connection that failed other than by an SQL error is
    terminated, so the pool replaces it instead of handing it out again half-broken."""
    try:
        async with conn.transaction():
            return await fn(conn, *args)
    except asyncpg.PostgresError as exc:
        if isinstance(exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)):
            raise
        conn.terminate()  # e.g. "terminating connection due to administrator command"
        raise
    except BaseException as exc:
        conn.terminate()
        if isinstance(exc, Exception) and not isinstance(exc, _UNAVAILABLE):
            raise StoreUnavailable(f"connection dropped after {type(exc).__name__}: {exc}") from exc
        raise
