"""SQLite backend: WAL + ``synchronous=FULL``, with group commit.

One thread owns the connection. Requests queue their rows; the writer takes
everything queued, commits it in one transaction (one fsync), then wakes all
of those requests. Under load many requests share one fsync.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StoreUnavailable
from ..events import AuditRecord, Claim, NewEvent, StoredAnswer, StoredEvent
from ..tls import ClientIdentity
from . import Receipt

__all__ = ["SQLiteStore"]

T = TypeVar("T")

SCHEMA_VERSION = 2
ANSWER_RETENTION = 3600.0  # seconds a synchronous answer is kept for repeats (Pomelo asks >= 3 min)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
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
CREATE TABLE IF NOT EXISTS audit (
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
CREATE TABLE IF NOT EXISTS requests (
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
"""


@dataclass
class _Write:
    provider: str
    route: str
    events: Sequence[NewEvent]
    audit: AuditRecord
    done: asyncio.Future[Receipt]


class SQLiteStore:
    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._queue: list[_Write] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0  # transactions committed: shows group commit at work

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def open(self) -> None:
        await self._run(self._connect)
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(f"{self.path}: schema version {version} is newer than this program ({SCHEMA_VERSION})")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db = db

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def record(
        self,
        provider: str,
        route: str,
        events: Sequence[NewEvent],
        audit: AuditRecord,
    ) -> Receipt:
        if self._writer is None or self._writer.done():
            raise StoreUnavailable("store is not open")
        done: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.append(_Write(provider, route, events, audit, done))
        self._wake.set()
        return await done

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            try:
                receipts = await self._run(self._commit, batch)
            except (sqlite3.Error, OSError) as exc:
                for write in batch:
                    if not write.done.done():
                        write.done.set_exception(StoreUnavailable(f"commit failed: {exc}"))
                continue
            for write, receipt in zip(batch, receipts):
                if not write.done.done():
                    write.done.set_result(receipt)

    def _commit(self, batch: list[_Write]) -> list[Receipt]:
        """One transaction, one fsync, for every write queued since the last commit."""
        receipts: list[Receipt] = self._transaction(lambda db: [self._insert(db, write) for write in batch])
        self.commits += 1
        return receipts

    def _insert(self, db: sqlite3.Connection, write: _Write) -> Receipt:
        audit = write.audit
        identity = _identity_columns(audit.client)
        stored: list[str] = []
        for event in write.events:
            event_id = f"evt_{uuid.uuid4().hex}"
            cursor = db.execute(
                "INSERT INTO events (id, provider, route, kind, dedup_key, payload, received_at, peer,"
                " client_subject, client_issuer, client_fingerprint)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (provider, dedup_key) DO NOTHING",
                (event_id, write.provider, write.route, event.kind, event.dedup_key,
                 json.dumps(event.payload, ensure_ascii=False, separators=(",", ":")),
                 audit.at, audit.peer, *identity),
            )
            if cursor.rowcount == 1:
                stored.append(event_id)
        db.execute(
            "INSERT INTO audit (at, listener, route, method, path, peer, status, reason,"
            " client_subject, client_issuer, client_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (audit.at, audit.listener, audit.route, audit.method, audit.path, audit.peer,
             audit.status, audit.reason, *identity),
        )
        return Receipt(stored=tuple(stored), duplicates=len(write.events) - len(stored))

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("store is not open")
        return self._db

    async def claim_request(self, route: str, key: str, now: float, stale_after: float) -> Claim:
        return await self._run(self._transaction, self._claim, route, key, now, stale_after)

    async def finish_request(self, route: str, key: str, answer: StoredAnswer, now: float) -> None:
        await self._run(self._transaction, self._finish, route, key, answer, now)

    def _transaction(self, fn: Any, *args: Any) -> Any:
        db = self._require_db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db, *args)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _claim(db: sqlite3.Connection, route: str, key: str, now: float, stale_after: float) -> Claim:
        db.execute("DELETE FROM requests WHERE finished_at < ?", (now - ANSWER_RETENTION,))
        row = db.execute(
            "SELECT state, started_at, status, content_type, body FROM requests WHERE route = ? AND key = ?",
            (route, key),
        ).fetchone()
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
        db.execute(
            "UPDATE requests SET state = 'done', finished_at = ?, status = ?, content_type = ?, body = ?"
            " WHERE route = ? AND key = ?",
            (now, answer.status, answer.content_type, answer.body, route, key),
        )

    async def list_events(self, limit: int = 50) -> list[StoredEvent]:
        rows = await self._run(self._select, "SELECT id, provider, route, kind, dedup_key, payload, received_at,"
                               " peer, client_subject, client_issuer, client_fingerprint"
                               " FROM events ORDER BY seq DESC LIMIT ?", limit)
        return [
            StoredEvent(id=r[0], provider=r[1], route=r[2], kind=r[3], dedup_key=r[4], payload=json.loads(r[5]),
                        received_at=r[6], peer=r[7], client=_identity(r[8:11]))
            for r in rows
        ]

    async def list_audit(self, limit: int = 50) -> list[AuditRecord]:
        rows = await self._run(self._select, "SELECT at, listener, route, method, path, peer, status, reason,"
                               " client_subject, client_issuer, client_fingerprint"
                               " FROM audit ORDER BY seq DESC LIMIT ?", limit)
        return [AuditRecord(*r[:8], client=_identity(r[8:11])) for r in rows]

    def _select(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return self._require_db().execute(sql, params).fetchall()


def _identity_columns(client: ClientIdentity | None) -> tuple[str | None, str | None, str | None]:
    return (client.subject, client.issuer, client.fingerprint) if client else (None, None, None)


def _identity(columns: Sequence[str | None]) -> ClientIdentity | None:
    subject, issuer, fingerprint = columns
    if subject is None or issuer is None or fingerprint is None:
        return None
    return ClientIdentity(subject=subject, issuer=issuer, fingerprint=fingerprint)
