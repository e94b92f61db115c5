"""The audit trail costs bounded disk: identical refusals are one row with a count, old rows are purged.
Both backends (SQLite and PostgreSQL), through a real receiver and a pipelining TLS client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from support import Pki, client_context, config_text, https_post, pix, run_cli, until

from mtls_receiver.config import Config, StoreConfig, load_config
from mtls_receiver.dispatch import utc_now
from mtls_receiver.errors import ConfigError, StoreUnavailable
from mtls_receiver.events import AuditRecord, NewEvent
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.store import Store, open_store
from mtls_receiver.store.audit import PURGE_BATCH, AuditRetention, RefusalCoalescer

OLD = "2020-01-02T03:04:05.678+00:00"  # far older than any retention


@pytest.fixture
async def receiver(
    store_config: StoreConfig,
    write_config: Callable[..., Config],
    start_receiver: Callable[[Config], asyncio.Future[Receiver]],
) -> Receiver:
    return await start_receiver(dataclasses.replace(write_config(), store=store_config))


def refused(
    path: str = "/webhook/pix", body: bytes = b"{", method: str = "POST", close: bool = False
) -> bytes:
    """A request the route refuses (400 for a body that is not JSON) without closing the connection."""
    connection = "close" if close else "keep-alive"
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    ).encode() + body


async def pipeline(port: int, pki: Pki, data: bytes) -> list[int]:
    """Everything written at once on one connection, answers read meanwhile; the statuses, in order."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(pki, pki.client), server_hostname="localhost"
    )

    async def send() -> None:
        writer.write(data)
        await writer.drain()

    sending = asyncio.create_task(send())
    answers = await asyncio.wait_for(reader.read(), 120)
    await sending
    writer.close()
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)]


async def rows_until(
    store: Store, done: Callable[[list[AuditRecord]], bool], timeout: float = 20
) -> list[AuditRecord]:
    rows: list[AuditRecord] = []

    async def reached() -> bool:
        nonlocal rows
        rows = await store.list_audit(100_000)
        return done(rows)

    await until(reached, timeout, lambda: f"audit never got there: {rows[:5]}", interval=0.05)
    return rows


def audit(
    path: str = "/webhook/pix", at: str | None = None, status: int = 400, reason: str = "test"
) -> AuditRecord:
    return AuditRecord(at or utc_now(), "main", "/webhook", "POST", path, "127.0.0.1", status, reason)


# --- coalescing -----------------------------------------------------------------------------------


async def test_a_flood_of_identical_refusals_is_a_few_rows(receiver: Receiver, pki: Pki) -> None:
    flood = 3000
    statuses = await pipeline(receiver.port(), pki, refused() * (flood - 1) + refused(close=True))
    assert statuses == [400] * flood
    rows = await rows_until(receiver.store, lambda rows: sum(row.count for row in rows) == flood)
    assert len(rows) <= 3  # the first refusal, then one row of repeats (two if a minute went by)
    first, repeats = rows[-1], rows[-2]
    assert (first.count, first.last_at, first.reason) == (1, None, "body is not valid JSON")
    assert repeats.count == flood - 1 and repeats.last_at is not None and repeats.at <= repeats.last_at
    assert {(row.path, row.status, row.peer, row.client) for row in rows} == {
        ("/webhook/pix", 400, "127.0.0.1", first.client)
    }


async def test_distinct_refusals_each_get_a_row(receiver: Receiver, pki: Pki) -> None:
    kinds = [
        refused(),
        refused("/nowhere"),
        refused(method="PUT"),
        refused(body=b'{"pix": 1}'),
        refused("/webhook/pix?x=1"),
    ]  # the query is not part of the path: the same as the first
    statuses = await pipeline(receiver.port(), pki, b"".join(kinds * 2) + refused(close=True))
    assert statuses == [400, 404, 405, 400, 400] * 2 + [400]
    rows = await rows_until(receiver.store, lambda rows: sum(row.count for row in rows) == 11)
    seen = {(row.path, row.method, row.status, row.reason) for row in rows}
    assert len(seen) == 4 and {"/nowhere", "/webhook/pix"} == {path for path, *_ in seen}
    assert all(row.count == 1 for row in rows if row.last_at is None)


async def test_a_flood_of_404s_on_random_paths_is_a_few_rows(receiver: Receiver, pki: Pki) -> None:
    """The path is not part of what makes a refusal distinct: varying it per request floods nothing."""
    flood = 500
    requests = b"".join(refused(f"/nowhere/{n}") for n in range(flood - 1)) + refused(
        "/nowhere/last", close=True
    )
    assert await pipeline(receiver.port(), pki, requests) == [404] * flood
    rows = await rows_until(receiver.store, lambda rows: sum(row.count for row in rows) == flood)
    assert len(rows) <= 3 and rows[-1].path == "/nowhere/0"


async def test_accepted_requests_keep_a_row_each(receiver: Receiver, pki: Pki) -> None:
    context = client_context(pki, pki.client)
    for _ in range(3):  # the same Pix: stored once, answered 200 and audited each time
        assert (
            await https_post(receiver.port(), "/webhook/pix", {"pix": [pix("E-SAME")]}, context)
        ).status == 200
    rows = await receiver.store.list_audit()
    assert [(row.status, row.count) for row in rows] == [(200, 1)] * 3


async def test_counts_are_written_on_a_clean_stop(store: Store) -> None:
    coalescer = RefusalCoalescer(store, every=3600)  # the timer never fires: only the stop writes
    coalescer.start()
    first = audit()
    await store.record("efi", "/webhook", (), first)
    coalescer.written(first)
    assert all([coalescer.repeat(audit()) for _ in range(5)])
    await coalescer.stop()
    assert [(row.count, row.last_at is None) for row in await store.list_audit()] == [(5, False), (1, True)]


async def test_later_repeats_add_to_the_same_row(store: Store) -> None:
    coalescer = RefusalCoalescer(store, every=3600)
    coalescer.written(audit())
    for repeats in (2, 3):
        assert all([coalescer.repeat(audit()) for _ in range(repeats)])
        await coalescer.flush()
    assert [row.count for row in await store.list_audit()] == [5]


async def test_a_refusal_pushed_out_of_the_table_is_written_again(store: Store) -> None:
    coalescer = RefusalCoalescer(store, every=3600, max_keys=1)
    coalescer.written(audit("/a", reason="a"))
    assert coalescer.repeat(audit("/a", reason="a"))
    coalescer.written(audit("/b", reason="b"))  # /a leaves the table; its repeat is still written
    assert not coalescer.repeat(audit("/a", reason="a")) and coalescer.repeat(audit("/b", reason="b"))
    await coalescer.flush()
    assert sorted((row.path, row.count) for row in await store.list_audit()) == [("/a", 1), ("/b", 1)]


async def test_a_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    store = open_store(StoreConfig(path=tmp_path / "inbox.db"))
    coalescer = RefusalCoalescer(store, every=3600)
    coalescer.written(audit())
    assert coalescer.repeat(audit())
    with pytest.raises(StoreUnavailable):
        await coalescer.flush()  # the store is not open
    await store.open()
    try:
        await coalescer.flush()
        assert [row.count for row in await store.list_audit()] == [1]
    finally:
        await store.close()


# --- retention ------------------------------------------------------------------------------------


async def test_retention_purges_old_rows_and_keeps_new_ones_and_events(store: Store) -> None:
    old = PURGE_BATCH + 20  # more than one batch
    await asyncio.gather(*(store.record("efi", "/webhook", (), audit(at=OLD)) for _ in range(old)))
    await store.record("efi", "/webhook", [NewEvent("pix", "E-OLD", {})], audit(at=OLD, status=200))
    await store.record("efi", "/webhook", (), audit("/new"))
    assert await AuditRetention(store, lambda: 30).purge() == old + 1
    assert [row.path for row in await store.list_audit()] == ["/new"]
    assert [event.dedup_key for event in await store.list_events()] == ["E-OLD"]  # events are never purged


async def test_retention_runs_in_the_background(
    store_config: StoreConfig,
    write_config: Callable[..., Config],
    start_receiver: Callable[[Config], asyncio.Future[Receiver]],
) -> None:
    store = open_store(store_config)
    await store.open()
    for at in (OLD, utc_now()):
        await store.record("efi", "/webhook", (), audit(at=at))
    await store.close()
    receiver = await start_receiver(dataclasses.replace(write_config(), store=store_config))
    rows = await rows_until(receiver.store, lambda rows: len(rows) == 1)
    assert rows[0].at > OLD


@pytest.mark.parametrize(
    ("value", "problem"),
    [("0", "must be a whole number >= 1, got 0"), ('"30"', "must be a whole number >= 1, got '30'")],
)
def test_retention_days_in_the_config(tmp_path: Path, pki: Pki, value: str, problem: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(pki).replace("[store]\n", "[store]\naudit_retention_days = 7\n"))
    assert load_config(path).store.audit_retention_days == 7
    path.write_text(config_text(pki).replace("[store]\n", f"[store]\naudit_retention_days = {value}\n"))
    with pytest.raises(ConfigError, match=re.escape(f"config.toml: store.audit_retention_days: {problem}")):
        load_config(path)


async def test_cli_lists_the_audit_with_counts_escaped(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki, store=str(tmp_path / "inbox.db")))
    store = open_store(load_config(config).store)
    await store.open()
    coalescer = RefusalCoalescer(store)
    forged = audit("/x\r\n\x1b[31m")
    await store.record("efi", "/webhook", (), forged)
    coalescer.written(forged)
    assert all([coalescer.repeat(audit("/x\r\n\x1b[31m")) for _ in range(4)])
    await coalescer.stop()
    await store.close()

    listed = await asyncio.to_thread(run_cli, "events", "audit", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and "\x1b" not in listed.stdout and "\r" not in listed.stdout
    assert (
        ' 400  POST "/x\\x0d\\x0a\\x1b[31m"  listener=main peer=127.0.0.1 reason=test subject=-  x4 until '
        in lines[0]
    )
    as_json = await asyncio.to_thread(run_cli, "events", "audit", "--config", str(config), "--json")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(row["count"], row["path"]) for row in rows] == [(4, "/x\r\n\x1b[31m"), (1, "/x\r\n\x1b[31m")]
