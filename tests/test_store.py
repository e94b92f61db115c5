"""The inbox, one suite for both backends (SQLite and PostgreSQL): dedup, group commit, audit rows,
the outbox, synchronous answers; then SQLite's own durability settings, upgrades and failing closed."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from support import Pki, audit, client_context, https_post, pix

from mtls_receiver.config import StoreConfig
from mtls_receiver.errors import StoreUnavailable
from mtls_receiver.events import AttemptOutcome, DeliveryAttempt, NewEvent, StoredAnswer
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.store import Store, open_store
from mtls_receiver.store.sqlite import CLAIM_DUE, MIGRATIONS, SCHEMA_VERSION, SQLiteStore


@pytest.fixture
async def receiver(store_config: StoreConfig, write_config, start_receiver) -> Receiver:  # type: ignore[no-untyped-def]
    config = write_config()
    return await start_receiver(dataclasses.replace(config, store=store_config))


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "inbox.db")
    await store.open()
    yield store  # type: ignore[misc]
    await store.close()


async def test_wal_and_synchronous_full(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    assert store._db is not None
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


async def test_dedup_by_provider_and_key(store: Store) -> None:
    first = await store.record("efi", "/webhook", [NewEvent("pix", "E1", {"n": 1})], audit())
    again = await store.record("efi", "/webhook", [NewEvent("pix", "E1", {"n": 2})], audit())
    other = await store.record("infi", "/infi", [NewEvent("pix", "E1", {"n": 3})], audit())
    assert (len(first.stored), first.duplicates) == (1, 0)
    assert (again.stored, again.duplicates) == ((), 1)
    assert len(other.stored) == 1
    events = await store.list_events()
    assert [(e.provider, e.payload["n"]) for e in events] == [("infi", 3), ("efi", 1)]
    assert len(await store.list_audit()) == 3


async def test_concurrent_writes_share_commits(store: Store) -> None:
    writes = [store.record("efi", "/webhook", [NewEvent("pix", f"E{i}", {})], audit()) for i in range(60)]
    receipts = await asyncio.gather(*writes)
    assert all(len(r.stored) == 1 for r in receipts)
    assert len(await store.list_events(limit=100)) == 60
    assert store.group_commit.commits < 60  # type: ignore[attr-defined]  # group commit: one transaction served several


async def test_rows_survive_reopen(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "inbox.db")
    await store.open()
    await store.record("efi", "/webhook", [NewEvent("pix", "E1", {"valor": "1.00"})], audit())
    await store.close()
    with sqlite3.connect(tmp_path / "inbox.db") as db:
        assert db.execute("SELECT dedup_key, payload FROM events").fetchall() == [("E1", '{"valor":"1.00"}')]
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7


async def test_same_pix_twice_is_one_event(receiver: Receiver, pki: Pki) -> None:
    body = {"pix": [pix("E1803615022211340s08793XPJ")]}
    for _ in range(2):
        answer = await https_post(receiver.port(), "/webhook/pix", body, client_context(pki, pki.client))
        assert answer.status == 200
    assert [e.dedup_key for e in await receiver.store.list_events()] == ["E1803615022211340s08793XPJ"]
    assert [a.status for a in await receiver.store.list_audit()] == [200, 200]


async def test_multi_item_notification_is_one_event_per_item(receiver: Receiver, pki: Pki) -> None:
    body = {"pix": [pix("EA"), pix("EB"), pix("EC"), pix("EA")]}
    answer = await https_post(receiver.port(), "/webhook/pix", body, client_context(pki, pki.client))
    assert answer.status == 200
    assert sorted(e.dedup_key for e in await receiver.store.list_events()) == ["EA", "EB", "EC"]


async def test_refund_progress_is_a_new_event(receiver: Receiver, pki: Pki) -> None:
    def refund(status: str) -> dict[str, object]:
        return {
            "pix": [
                pix("E1", devolucoes=[{"id": "D1", "rtrId": "D" * 32, "valor": "1.00", "status": status}])
            ]
        }

    for status in ("EM_PROCESSAMENTO", "EM_PROCESSAMENTO", "DEVOLVIDO"):
        await https_post(receiver.port(), "/webhook/pix", refund(status), client_context(pki, pki.client))
    assert sorted(e.dedup_key for e in await receiver.store.list_events()) == [
        "E1|D1:DEVOLVIDO",
        "E1|D1:EM_PROCESSAMENTO",
    ]


async def test_locked_database_answers_503_not_200(write_config, pki: Pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Nothing acknowledged unstored: when the commit cannot happen the sender is told to retry."""
    config = write_config()
    receiver = Receiver(config, store=SQLiteStore(config.store.path, busy_timeout_ms=200))
    await receiver.start()
    blocker = sqlite3.connect(config.store.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        answer = await https_post(
            receiver.port(), "/webhook/pix", {"pix": [pix("E1")]}, client_context(pki, pki.client)
        )
        assert answer.status == 503
        blocker.execute("ROLLBACK")
        answer = await https_post(
            receiver.port(), "/webhook/pix", {"pix": [pix("E1")]}, client_context(pki, pki.client)
        )
        assert answer.status == 200
        assert [e.dedup_key for e in await receiver.store.list_events()] == ["E1"]
    finally:
        blocker.close()
        await receiver.stop()


async def test_version_1_inbox_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "inbox.db"
    with sqlite3.connect(path) as db:  # the first release's schema, with one event in it
        db.executescript(
            MIGRATIONS[1]  # events and audit
            + "INSERT INTO events (id, provider, route, kind, dedup_key, payload, received_at, peer)"
            " VALUES ('evt_old', 'efi', '/webhook', 'pix', 'E0', '{}', 't', 'p');"
            "INSERT INTO audit (at, listener, route, method, path, peer, status, reason)"
            " VALUES ('t', 'main', '/webhook', 'POST', '/webhook', 'p', 200, 'accepted pix');"
            "PRAGMA user_version = 1;"
        )
    store = SQLiteStore(path)
    await store.open()
    try:
        assert [e.id for e in await store.list_events()] == ["evt_old"]
        assert [(a.reason, a.count, a.last_at) for a in await store.list_audit()] == [
            ("accepted pix", 1, None)
        ]
        claim = await store.claim_request("/auth", "k", 1000.0, stale_after=30)
        assert claim.state == "new"
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_new_inbox_directory_is_fsynced_with_its_parent(tmp_path: Path) -> None:
    """The directories made for a new inbox, and the one they were made in, are fsynced (seen with
    strace): otherwise a power cut can take away a directory whose inbox SQLite had synced."""
    if shutil.which("strace") is None:
        if os.environ.get("CI"):
            pytest.fail("strace is missing; .ci/run installs it")
        pytest.skip("strace is not installed")
    path = tmp_path / "new" / "deeper" / "inbox.db"
    script = (
        "import asyncio, sys; from pathlib import Path\n"
        "from mtls_receiver.store.sqlite import SQLiteStore\n"
        "async def main():\n    s = SQLiteStore(Path(sys.argv[1])); await s.open(); await s.close()\n"
        "asyncio.run(main())"
    )
    command = ["strace", "-f", "-qq", "-y", "-e", "trace=fsync", sys.executable, "-c", script, str(path)]
    traced = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert traced.returncode == 0, traced.stderr
    synced = set(re.findall(r"fsync\(\d+<([^>]+)>\)", traced.stderr))
    assert {str(tmp_path), str(tmp_path / "new"), str(tmp_path / "new" / "deeper")} <= synced, synced


# --- the outbox and synchronous answers, both backends --------------------------------------------


async def test_outbox_claims_lease_and_finish(store: Store) -> None:
    receipt = await store.record(
        "efi", "/webhook", [NewEvent("pix", "E1", {}, order_key="E1")], audit(), queue=True
    )
    (event_id,) = receipt.stored
    (claimed,) = await store.claim_due(now=1000.0, limit=10, lease=30)
    assert claimed.id == event_id and claimed.status == "pending"
    assert await store.claim_due(now=1001.0, limit=10, lease=30) == []  # leased
    (again,) = await store.claim_due(now=1031.0, limit=10, lease=30)  # the lease ran out: another may take it
    assert again.id == event_id
    attempt = DeliveryAttempt(1, "t", 5, 503, "HTTP 503")
    await store.finish_attempts([AttemptOutcome(event_id, attempt, "pending", 2000.0, again.lease_token)])
    assert await store.claim_due(now=1999.0, limit=10, lease=30) == []  # not due yet
    (last,) = await store.claim_due(now=2000.0, limit=10, lease=30)
    delivered = DeliveryAttempt(2, "t", 5, 204, "")
    await store.finish_attempts([AttemptOutcome(event_id, delivered, "delivered", 2000.0, last.lease_token)])
    found = await store.get_event(event_id)
    assert (
        found is not None
        and found[0].status == "delivered"
        and [a.status_code for a in found[1]] == [503, 204]
    )
    assert (await store.stats())["delivered"] == 1


async def test_outbox_keeps_order_per_key(store: Store) -> None:
    first = (
        await store.record("efi", "/w", [NewEvent("pix", "E1|a", {}, order_key="E1")], audit(), queue=True)
    ).stored
    second = (
        await store.record("efi", "/w", [NewEvent("pix", "E1|b", {}, order_key="E1")], audit(), queue=True)
    ).stored
    other = (
        await store.record("efi", "/w", [NewEvent("pix", "E2", {}, order_key="E2")], audit(), queue=True)
    ).stored
    claimed = await store.claim_due(now=1.0, limit=10, lease=30)
    assert [e.id for e in claimed] == [first[0], other[0]]  # the second E1 waits for the first
    attempt = DeliveryAttempt(1, "t", 1, 200, "")
    await store.finish_attempts([AttemptOutcome(first[0], attempt, "delivered", 1.0, claimed[0].lease_token)])
    assert [e.id for e in await store.claim_due(now=2.0, limit=10, lease=30)] == [second[0]]


async def test_outbox_records_many_attempts_at_once(store: Store) -> None:
    stored = [
        (await store.record("efi", "/w", [NewEvent("pix", f"E{i}", {})], audit(), queue=True)).stored[0]
        for i in range(3)
    ]
    token = {event.id: event.lease_token for event in await store.claim_due(now=1.0, limit=10, lease=30)}
    assert len(token) == 3
    failed = DeliveryAttempt(1, "t", 1, 500, "HTTP 500")
    await store.finish_attempts(
        [
            AttemptOutcome(
                stored[0], DeliveryAttempt(1, "t", 1, 200, ""), "delivered", 1.0, token[stored[0]]
            ),
            AttemptOutcome(stored[1], failed, "pending", 5.0, token[stored[1]]),
            AttemptOutcome(
                stored[2], DeliveryAttempt(1, "t", 1, None, "refused"), "dead", 1.0, token[stored[2]]
            ),
        ]
    )
    statuses = {event.id: event.status for event in await store.list_events()}
    assert [statuses[event_id] for event_id in stored] == ["delivered", "pending", "dead"]
    assert [e.id for e in await store.claim_due(now=6.0, limit=10, lease=30)] == [
        stored[1]
    ]  # lease released, due


async def test_dead_events_replay(store: Store) -> None:
    (event_id,) = (await store.record("efi", "/w", [NewEvent("pix", "E1", {})], audit(), queue=True)).stored
    (leased,) = await store.claim_due(now=1.0, limit=1, lease=30)
    refused = DeliveryAttempt(1, "t", 1, None, "refused")
    await store.finish_attempts([AttemptOutcome(event_id, refused, "dead", 1.0, leased.lease_token)])
    assert [e.id for e in await store.list_events(status="dead")] == [event_id]
    assert await store.replay(all_dead=True, dead_since="2000") == 1
    assert [e.id for e in await store.claim_due(now=2.0, limit=5, lease=30)] == [event_id]
    assert await store.replay(["evt_missing"]) == 0


async def test_synchronous_answers_once_per_key(store: Store) -> None:
    assert (await store.claim_request("/auth", "k1", now=100.0, stale_after=10)).state == "new"
    assert (await store.claim_request("/auth", "k1", now=101.0, stale_after=10)).state == "in_progress"
    assert (await store.claim_request("/auth", "k2", now=101.0, stale_after=10)).state == "new"
    await store.finish_request("/auth", "k1", StoredAnswer(200, "application/json", b'{"ok":1}'), now=102.0)
    done = await store.claim_request("/auth", "k1", now=103.0, stale_after=10)
    assert done.state == "done" and done.answer == StoredAnswer(200, "application/json", b'{"ok":1}')
    assert (
        await store.claim_request("/auth", "k2", now=200.0, stale_after=10)
    ).state == "new"  # abandoned: taken over
    assert await store.check_writable()


async def test_a_commit_waits_for_the_senders_it_last_answered(store_config: StoreConfig) -> None:
    """Senders answered together come back together, each after its own pause: their next writes
    share one commit, which goes as soon as all of them are in, not after ``commit_delay`` (30 s
    here, against the test's 10 s deadline). A sender gone quiet costs one wait of the delay."""
    store = open_store(dataclasses.replace(store_config, commit_delay=30))
    await store.open()

    async def sender(n: int, rounds: int) -> None:
        for r in range(rounds):
            await store.record("efi", "/webhook", [NewEvent("pix", f"E-{n}-{r}-{rounds}", {})], audit())
            await asyncio.sleep(0.001 * n)

    try:
        async with asyncio.timeout(10):
            await store.record("efi", "/webhook", [NewEvent("pix", "E-ALONE", {})], audit())
            assert (
                store.group_commit.commits == 1
            )  # nothing else was arriving: committed at once, without the delay
            await asyncio.gather(*(sender(n, rounds=4) for n in range(5)))
            assert store.group_commit.commits == 1 + 4  # one commit per round of the five senders
            store.group_commit.commit_delay = (
                0.2  # one sender stops: the first round without it waits the delay
            )
            await asyncio.gather(*(sender(n, rounds=3) for n in range(4)))
            assert store.group_commit.commits == 5 + 3
    finally:
        await store.close()


async def test_claiming_from_a_backlog_reads_pending_rows_in_order_not_all_of_them(
    sqlite_store: SQLiteStore,
) -> None:
    """With thousands pending, a claim must not read and sort every pending row (it did: 20 ms each)."""
    assert sqlite_store._db is not None
    plan = " | ".join(
        row[3] for row in sqlite_store._db.execute("EXPLAIN QUERY PLAN " + CLAIM_DUE, (0, 0, 1))
    )
    assert "outbox_pending" in plan and "TEMP B-TREE" not in plan, plan


# --- the writer survives anything; readiness is a real commit (issue 17, items 7 and 8) ----------


async def test_a_failed_commit_of_any_kind_is_answered_503_and_the_writer_goes_on(store: Store) -> None:
    """A commit that raises something no one foresaw (here: a payload the JSON encoder refuses)
    answers its batch 503, and the next write is stored: the writer lives on."""
    async with asyncio.timeout(10):  # before: that write was never answered, the next got "store is not open"
        with pytest.raises(StoreUnavailable, match="commit failed: .*TypeError"):
            await store.record("efi", "/webhook", [NewEvent("pix", "E-BAD", {"x": object()})], audit())
        receipt = await store.record("efi", "/webhook", [NewEvent("pix", "E-GOOD", {})], audit())
    assert len(receipt.stored) == 1
    assert [e.dedup_key for e in await store.list_events()] == ["E-GOOD"]
    assert await store.check_writable()


async def test_check_writable_is_false_after_requests_failed_to_commit(store: Store) -> None:
    """Requests answered 503 since the last probe make the next probe say "not ready", even though
    the probe's own small commit succeeds (on a full disk it may fit where events no longer do);
    the probe after that, with nothing failed in between, says ready again."""
    with pytest.raises(StoreUnavailable, match="commit failed"):
        await store.record("efi", "/webhook", [NewEvent("pix", "E-BAD", {"x": object()})], audit())
    assert not await store.check_writable()
    assert await store.check_writable()


async def test_check_writable_is_false_once_the_writer_is_gone(store: Store) -> None:
    """Readiness asks the writer for a real commit: a dead writer is not ready (the old probe,
    CREATE TEMP TABLE on the side, said ready)."""
    assert await store.check_writable()
    writer = store.group_commit._writer  # type: ignore[attr-defined]
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    assert not await store.check_writable()


async def test_check_writable_commits_through_the_writer(store: Store) -> None:
    before = store.group_commit.commits  # type: ignore[attr-defined]
    assert await store.check_writable()
    assert store.group_commit.commits == before + 1  # type: ignore[attr-defined]
