"""Looking at the inbox changes nothing, and an attempt's outcome is written only by the holder of
its lease (a fencing token): both backends, real files, real PostgreSQL, the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from support import (
    PYTHON,
    App,
    Pki,
    Serve,
    audit,
    client_context,
    config_text,
    forward_table,
    https_post,
    pix,
    run_cli,
    shared_config,
    until,
)

from mtls_receiver import store as store_module
from mtls_receiver.config import StoreConfig
from mtls_receiver.events import AttemptOutcome, DeliveryAttempt, NewEvent
from mtls_receiver.store import Store, open_store

pytestmark = pytest.mark.usefixtures("forward_secrets")

REFUND = {"id": "D1", "rtrId": "D" * 32, "valor": "1.00", "status": "DEVOLVIDO"}


def outcome(
    event_id: str, token: int, status: str = "delivered", code: int | None = 204, error: str = ""
) -> AttemptOutcome:
    return AttemptOutcome(event_id, DeliveryAttempt(1, "t", 5, code, error), status, 1100.0, token)


async def queued(store: Store, key: str = "E1") -> str:
    (event_id,) = (
        await store.record("efi", "/webhook", [NewEvent("pix", key, {}, order_key=key)], audit(), queue=True)
    ).stored
    return event_id


# --- fencing: the store keeps only the current lease holder's outcome (both backends) --------------


async def test_a_stale_attempt_finishing_late_changes_nothing(store: Store) -> None:
    event_id = await queued(store)
    (stale,) = await store.claim_due(now=1000.0, limit=1, lease=30)  # claimer A; its attempt hangs
    (current,) = await store.claim_due(now=1031.0, limit=1, lease=30)  # A's lease ran out: claimer B
    assert current.lease_token != stale.lease_token
    assert await store.finish_attempts([outcome(event_id, current.lease_token)]) == []
    late = outcome(event_id, stale.lease_token, "pending", None, "no answer within 30s")
    assert await store.finish_attempts([late]) == [event_id]  # superseded: recorded nowhere
    found = await store.get_event(event_id)
    assert found is not None and found[0].status == "delivered" and found[0].attempts == 1
    assert [a.status_code for a in found[1]] == [204]
    assert await store.claim_due(now=5000.0, limit=1, lease=30) == []  # delivered stays delivered


async def test_a_stale_outcome_cannot_release_the_new_lease(store: Store) -> None:
    first, second = await queued(store, "E1"), await queued(store, "E2")
    stale = {e.id: e.lease_token for e in await store.claim_due(now=1000.0, limit=2, lease=30)}
    current = {e.id: e.lease_token for e in await store.claim_due(now=1031.0, limit=1, lease=30)}
    assert list(current) == [first]  # B took over only the first; A still holds the second
    superseded = await store.finish_attempts(
        [outcome(first, stale[first], "pending", 503, "HTTP 503"), outcome(second, stale[second])]
    )
    assert superseded == [first]
    assert await store.claim_due(now=1040.0, limit=2, lease=30) == []  # B's lease holds: no third delivery
    assert await store.finish_attempts([outcome(first, current[first])]) == []
    assert {e.id: e.status for e in await store.list_events()} == {first: "delivered", second: "delivered"}


async def test_replay_keeps_a_live_lease_and_fences_its_attempt(store: Store) -> None:
    event_id = await queued(store)
    (in_flight,) = await store.claim_due(now=1000.0, limit=1, lease=30)
    assert await store.replay([event_id]) == 1
    assert await store.claim_due(now=1001.0, limit=1, lease=30) == []  # not a second delivery at once
    assert await store.finish_attempts([outcome(event_id, in_flight.lease_token)]) == [event_id]
    (again,) = await store.claim_due(now=1031.0, limit=1, lease=30)  # the replay is honoured after the lease
    assert again.id == event_id and again.attempts == 0


# --- who may release leases on open (SQLite) -------------------------------------------------------


async def test_only_a_lone_forwarder_releases_sqlite_leases(tmp_path: Path, pki: Pki) -> None:
    access = store_module.Access
    path = tmp_path / "inbox.db"
    first = open_store(StoreConfig(path=path), access.FORWARD)
    await first.open()
    second: Store | None = None
    try:
        event_id = await queued(first)
        assert [e.id for e in await first.claim_due(now=time.time(), limit=1, lease=3600)] == [event_id]
        second = open_store(StoreConfig(path=path), access.FORWARD)  # e.g. a second `serve` by mistake
        await second.open()
        assert await second.claim_due(now=time.time(), limit=1, lease=30) == []  # the first one's lease holds
        config = tmp_path / "config.toml"
        config.write_text(config_text(pki, store=str(path)), encoding="utf-8")
        migrated = await asyncio.to_thread(run_cli, "db", "migrate", "--config", str(config))
        assert migrated.returncode == 0, migrated.stderr
        assert await second.claim_due(now=time.time(), limit=1, lease=30) == []  # and after `db migrate`
    finally:
        for opened in (first, second):
            if opened is not None:
                await opened.close()
    restarted = open_store(StoreConfig(path=path), access.FORWARD)  # alone now: leases left were a dead one's
    await restarted.open()
    try:
        assert [e.id for e in await restarted.claim_due(now=time.time(), limit=1, lease=30)] == [event_id]
    finally:
        await restarted.close()


# --- inspection during a delivery (a real server, the CLI as a subprocess) ------------------------


class HeldApp(App):
    """The application, holding the first delivery of each dedup key in ``held`` until ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.held: set[str] = set()
        self.release = asyncio.Event()
        self.arrivals: list[str] = []  # dedup keys, in the order deliveries reached the application

    async def handle(self, request: web.Request) -> web.Response:
        key = json.loads(await request.read())["dedup_key"]
        self.arrivals.append(key)
        if key in self.held:
            self.held.discard(key)
            await self.release.wait()
        return await super().handle(request)


def cli_json(config: Path, *args: str) -> list[dict[str, object]]:
    listed = run_cli("events", "list", "--json", "--config", str(config), *args)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line) for line in listed.stdout.splitlines()]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_inspecting_during_a_slow_delivery_delivers_once_in_order(
    backend: str, tmp_path: Path, pki: Pki, serve: Serve, request: pytest.FixtureRequest
) -> None:
    dsn = request.getfixturevalue("pg_dsn") if backend == "postgres" else ""

    async def scenario() -> list[str]:
        async with HeldApp() as app:
            extra = forward_table(app.url, timeout=60)  # a 70 s lease: it cannot run out during the test
            if dsn:
                config = shared_config(tmp_path, pki, dsn, "a", extra)
            else:
                config = tmp_path / "config.toml"
                config.write_text(config_text(pki) + extra, encoding="utf-8")
            server, port = await asyncio.to_thread(serve, config)
            try:
                await inspect_while_delivering(app, port, config, client_context(pki, pki.client))
            finally:
                server.kill()
                app.release.set()
        return app.arrivals

    arrivals = asyncio.run(scenario())
    assert arrivals.count("E1") == 1, arrivals  # never a second delivery
    assert arrivals.index("E1") < arrivals.index("E1|D1:DEVOLVIDO")  # the Pix before its refund


async def inspect_while_delivering(app: HeldApp, port: int, config: Path, context: ssl.SSLContext) -> None:
    """A Pix held in delivery, its refund queued behind it; ``events list`` and ``show`` meanwhile."""

    async def send(item: dict[str, object]) -> None:
        assert (await https_post(port, "/webhook/pix", {"pix": [item]}, context)).status == 200

    app.held.add("E1")
    await send(pix("E1"))
    await until(lambda: app.arrivals == ["E1"])  # the Pix is being delivered, slowly
    await send(pix("E1", devolucoes=[REFUND]))  # its refund waits for it
    events = {e["dedup_key"]: e["id"] for e in await asyncio.to_thread(cli_json, config)}
    shown = await asyncio.to_thread(run_cli, "events", "show", str(events["E1"]), "--config", str(config))
    assert shown.returncode == 0 and '"status": "pending"' in shown.stdout, shown.stderr
    await send(pix("E2"))  # wakes the forwarder: a released lease would be claimed with it

    async def e2_recorded() -> bool:
        delivered = await asyncio.to_thread(cli_json, config, "--status", "delivered")
        return any(e["dedup_key"] == "E2" for e in delivered)

    await until(e2_recorded, timeout=60)
    app.release.set()
    await until(lambda: "E1|D1:DEVOLVIDO" in app.arrivals, timeout=60)


# --- a stale attempt of a real forwarder: SIGSTOP'd past its lease, another one delivers -----------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_forwarder_resumed_after_its_lease_ran_out_overwrites_nothing(
    backend: str, tmp_path: Path, pki: Pki, serve: Serve, request: pytest.FixtureRequest
) -> None:
    """Forwarder A hangs in a delivery (SIGSTOP) until its lease has run out and forwarder B has
    delivered the event; then A resumes, its attempt times out, and it must not turn `delivered`
    back into `pending` (which made the event be delivered yet again)."""
    dsn = request.getfixturevalue("pg_dsn") if backend == "postgres" else ""

    def config_for(name: str, url: str) -> Path:
        extra = forward_table(url, timeout=1)  # an 11 s lease
        if dsn:
            return shared_config(tmp_path, pki, dsn, name, extra)
        path = tmp_path / f"{name}.toml"
        text = "workers = 1\n" + config_text(pki, store=str(tmp_path / "inbox.db")) + extra
        path.write_text(text, encoding="utf-8")
        return path

    async def scenario() -> tuple[list[str], str, str]:
        async with HeldApp() as app:
            first, port = await asyncio.to_thread(serve, config_for("a", app.url))
            servers = [first]
            try:
                app.held.add("E1")
                context = client_context(pki, pki.client)
                assert (await https_post(port, "/webhook/pix", {"pix": [pix("E1")]}, context)).status == 200
                await until(lambda: app.arrivals == ["E1"])
                first.signal(signal.SIGSTOP)  # A hangs in the middle of its delivery
                config = config_for("b", app.url)
                servers.append((await asyncio.to_thread(serve, config))[0])

                async def delivered() -> bool:
                    return [e["status"] for e in await asyncio.to_thread(cli_json, config)] == ["delivered"]

                await until(delivered, timeout=60)  # B, once A's lease ran out
                first.signal(signal.SIGCONT)  # A's attempt times out now, and A records its outcome
                outcomes = ("superseded", "forward failed")  # recorded nothing / overwrote `delivered`
                await until(lambda: any(text in "".join(first.output) for text in outcomes))
                status = (await asyncio.to_thread(cli_json, config))[0]["status"]
            finally:
                for server in servers:
                    server.kill()
                app.release.set()
        return app.arrivals, str(status), "".join(first.output)

    arrivals, status, output = asyncio.run(scenario())
    assert status == "delivered", output
    assert "forward attempt superseded" in output and arrivals == ["E1", "E1"]


# --- inspection writes nothing: a read-only inbox, and every byte of a writable one -----------------


def run_cli_read_only(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with ``directory`` read-only to it: a read-only bind mount in a mount namespace of its
    own when root (root ignores file modes), the directory's and files' modes otherwise."""
    command = [PYTHON, "-m", "mtls_receiver", *args]
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [directory, *directory.iterdir()]}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=60)
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to make a read-only mount")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(directory), *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    refused = ("permission denied", "operation not permitted")
    if "mount" in result.stderr and any(text in result.stderr.lower() for text in refused):
        if os.environ.get("CI"):
            pytest.fail(f"cannot make a read-only mount: {result.stderr}")
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    return result


def snapshot(directory: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


@pytest.fixture
def leased_inbox(tmp_path: Path, pki: Pki) -> Iterator[tuple[Path, Path, list[str]]]:
    """A SQLite inbox at rest with two queued events, one of them leased (a delivery in flight)."""
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki, store=str(state / "inbox.db")), encoding="utf-8")

    async def prepare() -> list[str]:
        store = open_store(StoreConfig(path=state / "inbox.db"))
        await store.open()
        try:
            ids = [await queued(store, "E1"), await queued(store, "E2")]
            await store.claim_due(now=time.time(), limit=1, lease=3600)
        finally:
            await store.close()
        return ids

    yield state, config, asyncio.run(prepare())


def test_inspecting_a_read_only_sqlite_inbox_works_and_writes_nothing(
    leased_inbox: tuple[Path, Path, list[str]],
) -> None:
    state, config, ids = leased_inbox
    before = snapshot(state)
    assert list(before) == ["inbox.db"]  # at rest: no -wal, no -shm
    listed = run_cli_read_only(state, "events", "list", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(line)["id"] for line in listed.stdout.splitlines()) == sorted(ids)
    shown = run_cli_read_only(state, "events", "show", ids[0], "--config", str(config))
    assert shown.returncode == 0 and ids[0] in shown.stdout, shown.stderr
    replayed = run_cli_read_only(state, "events", "replay", ids[0], "--config", str(config))
    assert replayed.returncode != 0 and "inbox.db" in replayed.stderr and "Traceback" not in replayed.stderr
    assert len(replayed.stderr.strip().splitlines()) == 1
    for command in (("list",), ("show", ids[0])):  # on a writable directory too: not one byte, no new file
        assert run_cli("events", *command, "--config", str(config)).returncode == 0
    assert snapshot(state) == before


def test_inspecting_with_a_read_only_postgres_login(tmp_path: Path, pki: Pki, pg_dsn: str) -> None:
    """The CLI with a login that may only read (or against a hot standby): it must not migrate or
    write anything, and the outbox rows (leases in force) stay as they were."""
    asyncpg = pytest.importorskip("asyncpg")

    async def prepare() -> str:
        store = open_store(StoreConfig(url=pg_dsn))
        await store.open()
        try:
            event_id = await queued(store)
            await store.claim_due(now=time.time(), limit=1, lease=3600)
        finally:
            await store.close()
        return event_id

    async def outbox() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(pg_dsn)
        try:
            return [tuple(row) for row in await conn.fetch("SELECT * FROM outbox ORDER BY event_id")]
        finally:
            await conn.close()

    event_id = asyncio.run(prepare())
    before = asyncio.run(outbox())
    config = shared_config(tmp_path, pki, f"{pg_dsn}?default_transaction_read_only=on", "ro")
    listed = run_cli("events", "list", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [event_id]
    shown = run_cli("events", "show", event_id, "--config", str(config))
    assert shown.returncode == 0 and '"status": "pending"' in shown.stdout, shown.stderr
    assert asyncio.run(outbox()) == before
