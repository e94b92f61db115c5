"""The console's reads (store/reads.py) on both backends: the same answers from SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mtls_receiver.errors import StoreUnavailable
from mtls_receiver.events import AuditRecord, NewEvent
from mtls_receiver.store import Store, postgres, sqlite
from mtls_receiver.store.reads import EventQuery

NOW = datetime.now(UTC)


def at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+00:00"


def request(
    status: int, reason: str, peer: str = "10.0.0.1", route: str = "/webhook", ago: float = 0
) -> AuditRecord:
    moment = at(NOW - timedelta(seconds=ago))
    return AuditRecord(moment, "main", route, "POST", route + "/pix", peer, status, reason)


def pix(e2e: str) -> NewEvent:
    return NewEvent("pix", e2e, {"endToEndId": e2e, "valor": "1.00", "txid": "100%_\\x"})


async def test_traffic_events_and_refusals(store: Store) -> None:
    await store.record("efi", "/webhook", [pix("E1"), pix("E2")], request(200, "accepted pix"))
    await store.record(
        "efi", "/webhook", [pix("E1")], request(200, "accepted pix", peer="10.0.0.2")
    )  # duplicate
    await store.record("hmac", "/other", [pix("O1")], request(200, "accepted", route="/other"), queue=True)
    await store.record("efi", "/webhook", [], request(401, "hmac: bad signature", peer="10.0.0.9"))
    await store.record(
        "efi", "/webhook", [], request(403, "allowlist: 10.0.0.9 not allowed", peer="10.0.0.9")
    )
    await store.record("efi", "/webhook", [], request(401, "hmac: bad signature", peer="10.0.0.8"))
    await store.record("efi", "/webhook", [], request(401, "hmac: bad signature", ago=7200))  # 2 hours ago

    hour = await store.traffic(NOW - timedelta(hours=1))
    assert (hour["/webhook"].accepted, hour["/webhook"].refused, hour["/webhook"].duplicates) == (2, 3, 1)
    assert (hour["/other"].accepted, hour["/other"].refused, hour["/other"].duplicates) == (1, 0, 0)
    assert (await store.traffic(NOW - timedelta(days=1)))["/webhook"].refused == 4

    assert [e.dedup_key for e in await store.find_events(EventQuery())] == ["O1", "E2", "E1"]
    assert [e.dedup_key for e in await store.find_events(EventQuery(route="/webhook"))] == ["E2", "E1"]
    assert [e.dedup_key for e in await store.find_events(EventQuery(provider="hmac"))] == ["O1"]
    assert [e.dedup_key for e in await store.find_events(EventQuery(status="pending"))] == ["O1"]
    assert [e.dedup_key for e in await store.find_events(EventQuery(status="stored"))] == ["E2", "E1"]
    assert [e.dedup_key for e in await store.find_events(EventQuery(search="E2"))] == ["E2"]
    (first,) = await store.find_events(EventQuery(search="E1"))
    assert [e.id for e in await store.find_events(EventQuery(search=first.id))] == [first.id]
    assert len(await store.find_events(EventQuery(search="100%_\\x"))) == 3  # LIKE's wildcards are literal
    assert await store.find_events(EventQuery(search="100%")) == []  # a whole string value, not a part
    assert await store.find_events(EventQuery(search="%")) == []
    page = EventQuery(limit=1, offset=1)
    assert [e.dedup_key for e in await store.find_events(page)] == ["E2", "E1"]  # one more: a next page
    assert [e.dedup_key for e in await store.find_events(dataclasses.replace(page, offset=2))] == ["E1"]
    assert len(await store.find_events(EventQuery(since=NOW - timedelta(minutes=5)))) == 3
    assert await store.find_events(EventQuery(until=NOW - timedelta(minutes=5))) == []

    since = at(NOW - timedelta(hours=1))
    by_reason = await store.refusal_groups(since, "reason")
    assert [(g.key, g.count, g.others) for g in by_reason] == [
        ("hmac: bad signature", 2, 2),
        ("allowlist: 10.0.0.9 not allowed", 1, 1),
    ]
    by_peer = await store.refusal_groups(since, "peer")
    assert [(g.key, g.count, g.others) for g in by_peer] == [("10.0.0.9", 2, 2), ("10.0.0.8", 1, 1)]
    behind = await store.refusals(since, reason="hmac: bad signature")
    assert [r.peer for r in behind] == ["10.0.0.8", "10.0.0.9"]
    assert [r.reason for r in await store.refusals(since, peer="10.0.0.9")] == [
        "allowlist: 10.0.0.9 not allowed",
        "hmac: bad signature",
    ]


async def test_a_long_search_holds_up_no_commit_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: the console reads on a connection and thread of their own, each within QUERY_TIMEOUT."""
    monkeypatch.setattr(sqlite, "QUERY_TIMEOUT", 1.0)
    store = sqlite.SQLiteStore(tmp_path / "inbox.db")
    await store.open()
    try:
        endless = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)"
            " SELECT COUNT(*) FROM c"
        )
        search = asyncio.create_task(store.select(endless))
        await asyncio.sleep(0.1)
        await asyncio.wait_for(
            store.record("efi", "/webhook", [pix("E1")], request(200, "accepted pix")), 0.5
        )
        assert not search.done()  # the commit did not wait for it
        with pytest.raises(StoreUnavailable, match="query stopped after 1 s"):
            await search
        assert len(await store.find_events(EventQuery())) == 1  # the reads' connection still serves
    finally:
        await store.close()


async def test_postgresql_searches_never_take_the_commits_connections(pg_dsn: str) -> None:
    """PostgreSQL: console reads share the pool with commits. Six long searches at once (more than
    the pool holds) used to take every connection, so a sender's commit waited for them (503 past the
    pool's 5 s); now they run one at a time, each stopped by the server after QUERY_TIMEOUT, not by
    the pool's shorter command timeout."""
    store = postgres.PostgresStore(pg_dsn, pool_size=4)
    await store.open()
    try:
        searches = [asyncio.create_task(store.select("SELECT pg_sleep(6)")) for _ in range(6)]
        await asyncio.sleep(0.3)
        await asyncio.wait_for(
            store.record("efi", "/webhook", [pix("E1")], request(200, "accepted pix")), 2.0
        )
        assert not any(search.done() for search in searches)  # the commit did not wait for them
        first = await asyncio.wait_for(searches[0], 10)  # 6 s: past the pool's 5 s command timeout
        assert len(first) == 1
    finally:
        for search in searches:
            search.cancel()
        await asyncio.gather(*searches, return_exceptions=True)
        await store.close()
