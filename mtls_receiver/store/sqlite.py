"""SQLite backend: WAL + ``synchronous=FULL``, with group commit.

One thread owns the connection. Requests queue their rows; the writer takes
everything queued, commits it in one transaction (one fsync), then wakes all
of those requests. Under load many requests share one fsync. Events to forward
get their outbox row in that same transaction.

The WAL gives its disk space back (``wal_checkpoint(TRUNCATE)``) when the writer is idle, after a
failed commit, and after every commit while the filesystem is nearly full: on a 2 MiB filesystem
the WAL once filled the disk with copies of a few pages and every request got 503 for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreUnavailable
from ..events import AttemptOutcome, AuditRecord, Claim, DeliveryAttempt, StoredAnswer, StoredEvent
from ..files import make_directories
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
    order_key,
    outcome_row,
    repeats_row,
    replay_row,
    values,
)

__all__ = ["CLAIM_DUE", "LOW_SPACE", "MIGRATIONS", "PROBE_BYTES", "SCHEMA_VERSION", "SQLiteStore"]

log = logging.getLogger("mtls_receiver")

LOW_SPACE = 16 * 1024 * 1024  # bytes free under which every commit is followed by a TRUNCATE checkpoint
_SPACE_CHECK_EVERY = 0.5  # seconds between two looks at the free space (statvfs)
_WAL_SIZE_LIMIT = 4 * 1024 * 1024  # journal_size_limit: the WAL file is cut back to this after a reset
PROBE_BYTES = 16384  # a readiness probe writes about the pages one event's commit writes

#: schema version -> the statements that reach it from the one before
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
    UNIQUE (provider, dedup_key)
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
""",
    2: """
CREATE TABLE requests (
    route TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status INTEGER,
    content_type TEXT,
    body BLOB,
    PRIMARY KEY (route, key)
);
""",
    3: """
ALTER TABLE events ADD COLUMN verified_by TEXT NOT NULL DEFAULT '';
CREATE TABLE outbox (
    event_id TEXT PRIMARY KEY REFERENCES events (id),
    seq INTEGER NOT NULL,
    order_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_order ON outbox (order_key, seq);
CREATE TABLE attempts (
    event_id TEXT NOT NULL REFERENCES events (id),
    number INTEGER NOT NULL,
    at TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT NOT NULL
);
CREATE INDEX attempts_event ON attempts (event_id, number);
""",
    # due events are found in arrival order: with a backlog, an index on (status, next_attempt_at)
    # made every claim read and sort all pending rows (20 ms at 20,000 pending; now microseconds)
    4: """
DROP INDEX outbox_due;
CREATE INDEX outbox_pending ON outbox (status, seq);
""",
    # a fencing token per lease: an attempt's outcome is written only while its lease is the event's
    5: """
ALTER TABLE outbox ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
""",
    # repeats of one refusal are one row (store/audit.py): how many, and when the last came
    6: """
ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit ADD COLUMN last_at TEXT;
""",
    # one row that readiness probes rewrite through the group commit: a real commit to the inbox,
    # as many pages as an event's (a smaller one fitted in a full disk's last WAL frames: ready, yet 503)
    7: """
CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL, pages BLOB);
INSERT INTO health (id, checked_at) VALUES (1, 0);
""",
}
SCHEMA_VERSION = max(MIGRATIONS)
T = TypeVar("T")

#: due events (and lease tokens), oldest first; one waits while an earlier one with its order key is pending
CLAIM_DUE = (
    f"SELECT {EVENT_COLUMNS}, o.lease_token FROM {EVENTS_FROM}"
    " WHERE o.status = 'pending' AND o.next_attempt_at <= ? AND o.lease_until <= ?"
    " AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.order_key = o.order_key AND p.seq < o.seq"
    "                 AND p.status = 'pending')"
    " ORDER BY o.seq LIMIT ?"
)
_MAX_ROWS_PER_INSERT = 500  # 12 columns each: well under SQLite's limit on bound parameters


class _BatchRows:
    """A group commit's rows: events as multi-row INSERTs, outbox entries for the ones stored, audit rows."""

    def __init__(self, batch: list[Write]) -> None:
        self.probed = any(write.audit is None for write in batch)  # a readiness probe is in the batch
        self.ids: list[list[str]] = []
        self.events: list[list[Any]] = [[]]  # flat parameters, one list per INSERT statement
        self.queued: list[tuple[str, str]] = []  # (event id, order key) to put in the outbox if stored
        for write in batch:
            ids = []
            for event in write.events:
                event_id = new_event_id()
                ids.append(event_id)
                if len(self.events[-1]) >= _MAX_ROWS_PER_INSERT * EVENT_ARITY:
                    self.events.append([])
                self.events[-1].extend(event_row(event_id, write, event))
                if write.queue:
                    self.queued.append((event_id, order_key(write, event)))
            self.ids.append(ids)
        self.audits = [audit_row(write.audit) for write in batch if write.audit is not None]

    def insert(self, db: sqlite3.Connection) -> dict[str, int]:
        """Runs in the writer thread, inside the transaction: the stored events' ids and sequence numbers."""
        stored: dict[str, int] = {}
        for params in self.events:
            if params:
                stored.update(db.execute(_insert_events_sql(len(params) // EVENT_ARITY), params).fetchall())
        outbox = [(event_id, stored[event_id], key) for event_id, key in self.queued if event_id in stored]
        if outbox:
            db.executemany(QUEUE_EVENT, outbox)
        db.executemany(INSERT_AUDIT, self.audits)
        if self.probed:
            db.execute(
                "UPDATE health SET checked_at = ?, pages = zeroblob(?) WHERE id = 1",
                (time.time(), PROBE_BYTES),
            )
        return stored

    def receipts(self, stored: dict[str, int]) -> list[Receipt]:
        receipts = []
        for ids in self.ids:
            new = tuple(event_id for event_id in ids if event_id in stored)
            receipts.append(Receipt(stored=new, duplicates=len(ids) - len(new)))
        return receipts


@functools.lru_cache(maxsize=64)
def _insert_events_sql(rows: int) -> str:
    rows_values = ", ".join([f"({values(EVENT_ARITY)})"] * rows)
    return (
        f"INSERT INTO events ({EVENT_INSERT_COLUMNS}) VALUES {rows_values}"
        " ON CONFLICT (provider, dedup_key) DO NOTHING RETURNING id, seq"
    )


class SQLiteStore(ConsoleReads, GroupCommitted):
    def __init__(
        self,
        path: Path,
        busy_timeout_ms: int = 5000,
        access: Access = Access.SERVE,
        commit_delay: float = 0.0,
    ) -> None:
        self.path = path
        self.access = access
        self.busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._reads_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reads")
        self._reader: sqlite3.Connection | None = None  # the console's reads (select), opened when needed
        self._db: sqlite3.Connection | None = None
        self._forwarder_lock: int | None = None  # file descriptor of the flock every forwarder holds
        self._checkpoint_due = False  # the WAL may hold pages (or a commit failed) since the last checkpoint
        self._checkpoint_failing = False  # said once in the log, not every idle second
        self._low_space = False  # the filesystem was nearly full when last looked at
        self._space_checked = 0.0
        self.group_commit = GroupCommit(
            self._commit_batch,
            commit_delay,
            repair=self._after_failure,
            tidy=self._checkpoint_reporting,
            tidy_due=lambda: self._checkpoint_due,
        )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.path}: {exc}") from exc

    async def open(self) -> None:
        await self._run(self._connect)
        self.group_commit.start()

    def _connect(self) -> None:
        """Open as ``access`` allows: only a forwarder that is alone may release leases."""
        if self.access is Access.READ:
            self._db = self._connect_read_only()
            self._require_current_schema(self._db)
            return
        if self.access is Access.WRITE:  # an operator's write goes to an inbox that exists, as it is
            self._require_inbox()
            db = sqlite3.connect(
                f"{self._uri()}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
            )
            self._db = self._configure(db)
            self._require_current_schema(self._db)
            return
        try:
            make_directories(self.path.parent)  # durably: a new inbox's directory survives a power cut
        except OSError as exc:
            raise StoreUnavailable(
                f"{self.path}: cannot create its directory: {exc.strerror or exc}"
            ) from None
        self._db = self._configure(sqlite3.connect(self.path, isolation_level=None, check_same_thread=False))
        self._transaction(self._migrate)
        # Leases left by a previous run (killed mid-delivery) are released at once instead of
        # waiting for them to expire -- but only when no other forwarder is alive to hold them.
        if self.access is Access.FORWARD and self._lock_forwarding():
            self._transaction(self._release_leases)
            self._share_forwarding()

    @staticmethod
    def _release_leases(db: sqlite3.Connection) -> None:
        db.execute("UPDATE outbox SET lease_until = 0 WHERE lease_until > 0")

    @staticmethod
    def _configure(db: sqlite3.Connection) -> sqlite3.Connection:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        db.execute("PRAGMA busy_timeout=0")  # waits for the write lock are ours: see _when_free
        return db

    def _uri(self) -> str:
        return self.path.resolve().as_uri()

    def _require_inbox(self) -> None:
        if not self.path.is_file():
            raise StoreUnavailable(f"{self.path}: no inbox there (the server creates it at its first start)")

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that cannot write: looking at the inbox leaves every byte of it as it was.

        While a server has the inbox open its ``-wal`` file exists, and a ``mode=ro`` reader sees
        its commits. Without one nobody has it open (the last connection removes it) and the file
        is read as it is (``immutable``): a ``mode=ro`` reader would create ``-wal`` and ``-shm``
        files owned by whoever ran the command, and cannot open it at all in a read-only directory.
        """
        self._require_inbox()
        mode = "mode=ro" if Path(f"{self.path}-wal").exists() else "mode=ro&immutable=1"
        db = sqlite3.connect(f"{self._uri()}?{mode}", uri=True, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=0")  # waits are _when_free's
        return db

    def _schema_version(self, db: sqlite3.Connection) -> int:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.path}: schema version {version} is newer than this program ({SCHEMA_VERSION})"
            )
        return version

    def _require_current_schema(self, db: sqlite3.Connection) -> None:
        """Looking and replaying never migrate (a server of the previous version may still run)."""
        version = self._schema_version(db)
        if version < SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.path}: schema version {version}, this program needs"
                f" {SCHEMA_VERSION}: run `mtls-receiver db migrate` (or start the server)"
            )

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Apply each missing migration in order, in one transaction."""
        version = self._schema_version(db)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in filter(str.strip, MIGRATIONS[target].split(";")):
                db.execute(statement)
        if version != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _lock_forwarding(self) -> bool:
        """Take the inbox's forwarder lock, held while this store is open; True when it is ours alone.

        Every forwarder holds a shared ``flock`` on ``<inbox>-forwarder.lock``. One that starts and
        gets it exclusively is the only forwarder alive (the kernel drops a dead process's locks),
        so leases still marked taken were left by a dead one; otherwise they belong to a live one.
        """
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
            self._forwarder_lock = os.open(f"{self.path}-forwarder.lock", flags, 0o600)
        except OSError as exc:
            log.warning(
                "%s: cannot open the forwarder lock (%s): leases left by a crash just run out",
                self.path,
                exc.strerror or exc,
            )
            return False
        try:
            fcntl.flock(self._forwarder_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another process forwards from %s: leases are left to their holders", self.path)
            self._share_forwarding()
            return False
        return True

    def _share_forwarding(self) -> None:
        """Hold the forwarder lock shared: others may forward too, and none releases our leases.

        Another forwarder holds it exclusively only while it starts; past ``busy_timeout_ms`` we
        go on without it (our leases then merely run out if a later starter releases them).
        """
        assert self._forwarder_lock is not None
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                fcntl.flock(self._forwarder_lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("%s: the forwarder lock stays taken; forwarding without it", self.path)
                    return
                time.sleep(0.01)

    async def close(self) -> None:
        await self.group_commit.stop()
        if self._reader is not None:
            await asyncio.get_running_loop().run_in_executor(self._reads_executor, self._close_reader)
        self._reads_executor.shutdown(wait=True)
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        if self._forwarder_lock is not None:
            os.close(self._forwarder_lock)
            self._forwarder_lock = None
        self._executor.shutdown(wait=True)

    # --- receiving: group commit ---------------------------------------------------------------

    async def _commit_batch(self, batch: list[Write]) -> list[Receipt]:
        """One transaction, one fsync, for every write queued since the last commit.

        The rows are built here, on the event loop; the writer thread only runs SQL, so the
        two threads hardly ever want the interpreter at the same time.
        """
        rows = _BatchRows(batch)
        stored: dict[str, int] = await self._run(self._transaction, rows.insert)
        if self._nearly_full():
            with contextlib.suppress(StoreUnavailable):  # committed already: a checkpoint is only tidying
                await self._run(self._checkpoint)
        return rows.receipts(stored)

    # --- the WAL's disk space ------------------------------------------------------------------

    def _nearly_full(self) -> bool:
        """Less than LOW_SPACE free on the inbox's filesystem (looked at every _SPACE_CHECK_EVERY s)."""
        now = time.monotonic()
        if now - self._space_checked >= _SPACE_CHECK_EVERY:
            self._space_checked = now
            try:
                stat = os.statvfs(self.path.parent)
            except OSError:
                return self._low_space
            low = stat.f_bavail * stat.f_frsize < LOW_SPACE
            if low != self._low_space:
                log.log(
                    logging.WARNING if low else logging.INFO,
                    "%s: %s",
                    self.path.parent,
                    f"less than {LOW_SPACE >> 20} MiB free: checkpointing the WAL after every commit"
                    if low
                    else "free space is back: checkpointing the WAL as usual",
                )
            self._low_space = low
        return self._low_space

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and cut it to zero bytes (in the writer thread).

        Never waits: another process reading or writing makes it "busy", and it is tried again."""
        db = self._require_db()
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        self._checkpoint_due = bool(busy)

    async def _after_failure(self, exc: Exception) -> None:
        """A failed commit may be a full disk that the WAL filled: give its space back."""
        self._checkpoint_due = True
        await self._checkpoint_reporting()

    async def _checkpoint_reporting(self) -> None:
        try:
            await self._run(self._checkpoint)
        except StoreUnavailable as exc:
            self._checkpoint_due = True  # again at the next idle moment, e.g. once space is freed
            if not self._checkpoint_failing:
                log.warning("checkpoint failed (tried again when idle): %s", exc)
            self._checkpoint_failing = True
            return
        if self._checkpoint_failing:
            log.info("%s: checkpoint done, the WAL's disk space is free again", self.path)
        self._checkpoint_failing = False

    def _transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """BEGIN IMMEDIATE .. COMMIT; after a failed one (disk full, I/O error) the next starts clean."""
        db = self._require_db()
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        self._when_free(db.execute, "BEGIN IMMEDIATE")
        self._checkpoint_due = True  # written to the WAL (or failed): a checkpoint is due when idle
        try:
            result = fn(db, *args)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return result

    def _bookkeeping(self, fn: Callable[..., T], *args: Any) -> T:
        """A transaction committed without its own fsync: delivery leases and outcomes.

        Losing the last of them to a power cut only means an event is delivered again
        (deliveries are at-least-once, with a stable webhook-id); the next durable commit
        syncs them anyway. An fsync per delivery would hold the write lock that the
        workers' group commits wait for.
        """
        db = self._require_db()
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            return self._transaction(fn, *args)
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def _when_free(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn`` once the database is not locked by another process, within ``busy_timeout_ms``.

        SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries; workers of one
        receiver hold the write lock for about one fsync, so waiting in short steps keeps
        their group commits flowing instead of stalling on that schedule.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        pause = 0.00005
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if (
                    exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
                    or time.monotonic() > deadline
                ):
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.002)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("store is not open")
        return self._db

    # --- synchronous answers (idempotency) -----------------------------------------------------

    async def claim_request(self, route: str, key: str, now: float, stale_after: float) -> Claim:
        return await self._run(self._transaction, self._claim, route, key, now, stale_after)

    async def finish_request(self, route: str, key: str, answer: StoredAnswer, now: float) -> None:
        await self._run(self._transaction, self._finish, route, key, answer, now)

    @staticmethod
    def _claim(db: sqlite3.Connection, route: str, key: str, now: float, stale_after: float) -> Claim:
        db.execute(FORGET_ANSWERS, (now - ANSWER_RETENTION,))
        row = db.execute(ANSWER_OF, (route, key)).fetchone()
        if row is not None and row[0] == "done":
            return Claim("done", StoredAnswer(status=row[2], content_type=row[3], body=bytes(row[4])))
        if row is not None and row[1] > now - stale_after:
            return Claim("in_progress")
        db.execute(
            "INSERT OR REPLACE INTO requests (route, key, state, started_at) VALUES (?, ?, 'in_progress', ?)",
            (route, key, now),
        )
        return Claim("new")

    @staticmethod
    def _finish(db: sqlite3.Connection, route: str, key: str, answer: StoredAnswer, now: float) -> None:
        db.execute(FINISH_REQUEST, answer_row(route, key, answer, now))

    # --- forwarding: the outbox ----------------------------------------------------------------

    async def claim_due(self, now: float, limit: int, lease: float) -> list[StoredEvent]:
        """Up to ``limit`` due events, leased for ``lease`` seconds; an event waits while an earlier
        one with the same order key is still pending."""
        return await self._run(self._bookkeeping, self._claim_due, now, limit, lease)

    def _claim_due(self, db: sqlite3.Connection, now: float, limit: int, lease: float) -> list[StoredEvent]:
        """Inside BEGIN IMMEDIATE: each due event gets the lease and the next token, atomically."""
        rows = db.execute(CLAIM_DUE, (now, now, limit)).fetchall()
        leased = [(row, row[-1] + 1) for row in rows]
        db.executemany(
            "UPDATE outbox SET lease_until = ?, lease_token = ? WHERE event_id = ?",
            [(now + lease, token, row[0]) for row, token in leased],
        )
        return [event_from_row(row, token) for row, token in leased]

    async def finish_attempts(self, outcomes: Sequence[AttemptOutcome]) -> list[str]:
        """Record attempts whose lease is still their event's; returns the ids of the others."""
        superseded: list[str] = await self._run(self._bookkeeping, self._finish_attempts, outcomes)
        return superseded

    @staticmethod
    def _finish_attempts(db: sqlite3.Connection, outcomes: Sequence[AttemptOutcome]) -> list[str]:
        recorded: list[AttemptOutcome] = []
        superseded: list[AttemptOutcome] = []
        for outcome in outcomes:
            held = db.execute(FINISH_ATTEMPT, outcome_row(outcome)).fetchall()
            (recorded if held else superseded).append(outcome)
        db.executemany(INSERT_ATTEMPT, [attempt_row(outcome) for outcome in recorded])
        return [outcome.event_id for outcome in superseded]

    async def replay(
        self,
        event_ids: Sequence[str] = (),
        dead_since: str | None = None,
        all_dead: bool = False,
        stored_on: Sequence[str] = (),
    ) -> int:
        """Queue events again (attempt count reset); returns how many."""
        return await self._run(
            self._transaction, self._replay, list(event_ids), dead_since, all_dead, set(stored_on)
        )

    @staticmethod
    def _replay(
        db: sqlite3.Connection, event_ids: list[str], since: str | None, all_dead: bool, stored_on: set[str]
    ) -> int:
        if all_dead:
            event_ids += [row[0] for row in db.execute(DEAD_SINCE, (since or "",))]
        if stored_on:
            event_ids += [row[0] for row in db.execute(STORED_SINCE, (since or "",)) if row[1] in stored_on]
        count = 0
        for event_id in event_ids:
            event = db.execute(EVENT_TO_REPLAY, (event_id,)).fetchone()
            if event is None:
                continue
            db.execute(REPLAY, replay_row(event_id, event))
            count += 1
        return count

    # --- reading -------------------------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        """Inbox size and outbox depth by status, for metrics."""
        rows = await self._run(self._select, STATS)
        return {name: count for name, count in rows}

    async def list_events(
        self, limit: int = 50, status: str | None = None, route: str | None = None
    ) -> list[StoredEvent]:
        where, params = ["1 = 1"], []
        if status is not None:
            where.append("COALESCE(o.status, 'stored') = ?")
            params.append(status)
        if route is not None:
            where.append("e.route = ?")
            params.append(route)
        rows = await self._run(
            self._select,
            f"SELECT {EVENT_COLUMNS} FROM {EVENTS_FROM}"
            f" WHERE {' AND '.join(where)} ORDER BY e.seq DESC LIMIT ?",
            *params,
            limit,
        )
        return [event_from_row(row) for row in rows]

    async def get_event(self, event_id: str) -> tuple[StoredEvent, list[DeliveryAttempt]] | None:
        rows = await self._run(self._select, EVENT_BY_ID, event_id)
        if not rows:
            return None
        attempts = await self._run(self._select, f"{ATTEMPTS_OF} ORDER BY rowid", event_id)
        return event_from_row(rows[0]), [DeliveryAttempt(*row) for row in attempts]

    async def list_audit(self, limit: int = 50, query: AuditQuery | None = None) -> list[AuditRecord]:
        where, params = audit_where(query)
        rows = await self._run(self._select, LIST_AUDIT.format(where=where), *params, limit)
        return [audit_from_row(row) for row in rows]

    async def audit_summary(self, query: AuditQuery) -> list[AuditCount]:
        where, params = audit_where(query)
        rows = await self._run(self._select, AUDIT_SUMMARY.format(where=where), *params)
        return [AuditCount(*row) for row in rows]

    # --- the audit trail: coalesced repeats, retention ------------------------------------------

    async def record_repeats(self, repeats: Sequence[AuditRepeats]) -> list[int]:
        """Counts of refusals already audited once: bookkeeping, committed without an fsync of its own."""
        seqs: list[int] = await self._run(self._bookkeeping, self._record_repeats, list(repeats))
        return seqs

    @staticmethod
    def _record_repeats(db: sqlite3.Connection, repeats: list[AuditRepeats]) -> list[int]:
        seqs = []
        for repeat in repeats:
            audit = repeat.audit
            if repeat.seq is None:
                seqs.append(db.execute(INSERT_REPEATS, repeats_row(audit)).fetchone()[0])
            else:
                db.execute(ADD_REPEATS, (audit.count, audit.last_at, repeat.seq))
                seqs.append(repeat.seq)
        return seqs

    async def purge_audit(self, before: str, limit: int) -> int:
        deleted: int = await self._run(
            self._bookkeeping, lambda db: db.execute(PURGE_AUDIT, (limit, before)).rowcount
        )
        return deleted

    async def select(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """A shared read statement (the console's, store/reads.py) on a read-only connection in a thread
        of its own: a search through every payload never holds up the writer's commits. It is
        stopped after QUERY_TIMEOUT seconds."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reads_executor, self._read, sql, params)
        except sqlite3.Error as exc:
            stopped = str(exc) == "interrupted"
            raise StoreUnavailable(
                f"{self.path}: query stopped after {QUERY_TIMEOUT:g} s" if stopped else f"{self.path}: {exc}"
            ) from exc

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """In the reads' thread; their connection is opened on first use."""
        if self._reader is None:
            if self._db is None:
                raise StoreUnavailable("store is not open")
            if self.access is Access.READ:
                self._reader = self._connect_read_only()
            else:
                self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._reader.execute("PRAGMA query_only = ON")
                self._reader.execute("PRAGMA busy_timeout = 0")
        deadline = time.monotonic() + QUERY_TIMEOUT
        self._reader.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        reader = self._reader
        return self._when_free(lambda: reader.execute(sql, params).fetchall())

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _select(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._when_free(lambda: self._require_db().execute(sql, params).fetchall())
