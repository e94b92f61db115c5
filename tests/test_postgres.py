"""Several instances, one truth: receivers sharing one PostgreSQL inbox (real server, real processes)."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    App,
    Pki,
    Serve,
    client_context,
    config_text,
    forward_table,
    https_post,
    pix,
    run_cli,
    shared_config,
    stays,
    until,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("forward_secrets")


def post_pix(port: int, pki: Pki, e2e: str) -> int:
    return asyncio.run(
        https_post(port, "/webhook/pix", {"pix": [pix(e2e)]}, client_context(pki, pki.client))
    ).status


def test_db_migrate_command(tmp_path: Path, pki: Pki, pg_dsn: str) -> None:
    config = shared_config(tmp_path, pki, pg_dsn, "a")
    for _ in range(2):  # idempotent
        result = run_cli("db", "migrate", "--config", str(config))
        assert result.returncode == 0 and "schema is current" in result.stdout
        assert "PostgreSQL postgresql://postgres@127.0.0.1" in result.stdout


def test_same_pix_to_two_instances_is_stored_once(
    tmp_path: Path, pki: Pki, pg_dsn: str, serve: Serve
) -> None:
    started = [serve(shared_config(tmp_path, pki, pg_dsn, name)) for name in "ab"]
    ports = [port for _, port in started]
    context = client_context(pki, pki.client)

    async def both() -> list[int]:
        posts = [
            https_post(port, "/webhook/pix", {"pix": [pix(f"E-SHARED-{n}")]}, context)
            for n in range(40)
            for port in ports
            for _ in range(2)
        ]
        return [answer.status for answer in await asyncio.gather(*posts)]

    try:
        statuses = asyncio.run(both())
    finally:
        for server, _ in started:
            server.kill()
    assert statuses == [200] * 160
    listed = run_cli("events", "list", "--config", str(tmp_path / "a.toml"), "--json", "--limit", "1000")
    keys = [json.loads(line)["dedup_key"] for line in listed.stdout.splitlines()]
    assert sorted(keys) == sorted(f"E-SHARED-{n}" for n in range(40))


def test_two_forwarders_deliver_each_event_once(tmp_path: Path, pki: Pki, pg_dsn: str, serve: Serve) -> None:

    async def scenario() -> None:
        async with App() as app:
            started = [
                await asyncio.to_thread(
                    serve, shared_config(tmp_path, pki, pg_dsn, name, forward_table(app.url))
                )
                for name in "ab"
            ]
            ports = [port for _, port in started]
            try:
                for n in range(30):
                    answer = await https_post(
                        ports[n % 2],
                        "/webhook/pix",
                        {"pix": [pix(f"E-FWD-{n}")]},
                        client_context(pki, pki.client),
                    )
                    assert answer.status == 200
                await until(lambda: len(app.received) >= 30, timeout=60)
                await stays(lambda: len(app.received) == 30, 1.5)  # a second delivery would show up by now
            finally:
                for server, _ in started:
                    server.kill()
        delivered = sorted(json.loads(body)["payload"]["endToEndId"] for _, body in app.received)
        assert delivered == sorted(f"E-FWD-{n}" for n in range(30))  # every one, none twice

    asyncio.run(scenario())


def test_killed_instance_leases_are_taken_over(tmp_path: Path, pki: Pki, pg_dsn: str, serve: Serve) -> None:

    async def scenario() -> None:
        async with App() as app:
            app.delay = 30.0  # instance A's deliveries hang: it holds their leases
            extra = forward_table(app.url, timeout=2)
            first, port = await asyncio.to_thread(serve, shared_config(tmp_path, pki, pg_dsn, "a", extra))
            for n in range(4):
                assert (
                    await https_post(
                        port, "/webhook/pix", {"pix": [pix(f"E-LEASE-{n}")]}, client_context(pki, pki.client)
                    )
                ).status == 200
            await until(lambda: len(app.attempts) >= 4)
            in_flight = set(app.attempts)
            first.kill()
            app.delay = 0.0
            second, _ = await asyncio.to_thread(serve, shared_config(tmp_path, pki, pg_dsn, "b", extra))
            try:
                await until(lambda: len({json.loads(b)["id"] for _, b in app.received}) >= 4, timeout=60)
            finally:
                second.kill()
        delivered = [json.loads(body)["id"] for _, body in app.received]
        assert len(set(delivered)) == 4
        duplicates = {event for event in delivered if delivered.count(event) > 1}
        assert duplicates <= in_flight  # only attempts in flight at the crash may repeat

    asyncio.run(scenario())


# --- the database restarting during traffic -------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def own_cluster() -> Iterator[tuple[str, callable, callable]]:  # type: ignore[valid-type]
    """A PostgreSQL cluster of the test's own, on a free port, that the test may stop and start."""
    bin_dir = _postgres_bin()
    if bin_dir is None or shutil.which("runuser") is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries (pg_ctl) or runuser missing; CI must run this test")
        pytest.skip("PostgreSQL server binaries (pg_ctl) are not installed")
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    directory = Path(tempfile.mkdtemp(prefix="mtls-pg-"))
    shutil.chown(directory, user)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def as_user(*args: str) -> None:
        command = ["runuser", "-u", user, "--", *args] if os.geteuid() == 0 else list(args)
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    as_user(str(bin_dir / "initdb"), "-D", str(directory / "data"), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=on"

    def start() -> None:
        as_user(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(directory / "data"),
            "-o",
            options,
            "-w",
            "-l",
            str(directory / "log"),
            "start",
        )

    def stop() -> None:
        as_user(str(bin_dir / "pg_ctl"), "-D", str(directory / "data"), "-m", "fast", "-w", "stop")

    start()
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres", start, stop
    stop()
    shutil.rmtree(directory, ignore_errors=True)


def test_database_restart_gives_503_then_recovers(  # type: ignore[no-untyped-def]
    tmp_path: Path, pki: Pki, own_cluster, serve: Serve
) -> None:
    dsn, start, stop = own_cluster
    server, port = serve(shared_config(tmp_path, pki, dsn, "a"))
    acked: list[str] = []
    try:
        assert post_pix(port, pki, "E-UP-1") == 200
        acked.append("E-UP-1")
        stop()
        down = [post_pix(port, pki, f"E-DOWN-{n}") for n in range(3)]
        assert down == [503] * 3  # nothing acknowledged while the database is away
        start()
        # the sender's retry, until the pool reconnects
        wait_until(
            lambda: post_pix(port, pki, "E-UP-2") == 200,
            30,
            lambda: "no recovery without restart",
            interval=0.2,
        )
        acked.append("E-UP-2")
        assert server.proc is not None and server.proc.poll() is None
    finally:
        server.kill()
    listed = run_cli("events", "list", "--config", str(tmp_path / "a.toml"), "--json")
    keys = {json.loads(line)["dedup_key"] for line in listed.stdout.splitlines()}
    assert keys == set(acked)


async def _send_until(port: int, pki: Pki, stop: asyncio.Event, prefix: str, answers: dict[str, str]) -> None:
    """One sender posting new events until ``stop``; each answer (status, or the failure) is kept by event,
    in the order the answers came."""
    context = client_context(pki, pki.client)
    n = 0
    while not stop.is_set():
        e2e = f"{prefix}-{n}"
        n += 1
        try:
            answer = await asyncio.wait_for(
                https_post(port, "/webhook/pix", {"pix": [pix(e2e)]}, context), 20
            )
            answers[e2e] = str(answer.status)
        except (TimeoutError, OSError) as exc:  # a hang shows here: the client waits 10 s at most
            answers[e2e] = f"no answer: {type(exc).__name__}"


def test_fast_shutdowns_under_load_are_answered_and_recovered_without_restart(  # type: ignore[no-untyped-def]
    tmp_path: Path, pki: Pki, own_cluster, serve: Serve
) -> None:
    """``pg_ctl stop -m fast`` under load, several times: every request gets 200 or 503, never a hang,
    and once the database is back the same receiver (no restart) stores events again."""
    dsn, start, stop = own_cluster
    server, port = serve(shared_config(tmp_path, pki, dsn, "a"))
    answers: dict[str, str] = {}

    async def scenario() -> None:
        async with asyncio.timeout(300):
            await rounds()

    async def rounds() -> None:
        for round_ in range(8):
            done = asyncio.Event()
            senders = [
                asyncio.create_task(_send_until(port, pki, done, f"E-R{round_}-S{s}", answers))
                for s in range(24)
            ]
            wanted = 20 * (round_ + 1)
            await until(lambda: sum(a == "200" for a in answers.values()) >= wanted, timeout=60)  # noqa: B023
            await asyncio.to_thread(stop)  # under load: connections die mid-transaction
            await asyncio.sleep(0.5)  # the outage itself: the database stays away this long under load
            await asyncio.to_thread(start)
            # every worker stores again: the last 40 answers are all 200 (a worker whose writer
            # died would answer 503 to its share of them for ever)
            await until(lambda: list(answers.values())[-40:] == ["200"] * 40, timeout=30)
            done.set()
            await asyncio.gather(*senders)

    try:
        asyncio.run(scenario())
        assert server.proc is not None and server.proc.poll() is None
    except AssertionError:
        print("".join(server.output)[-5000:])
        raise
    finally:
        server.kill()
    unanswered = {e2e: answer for e2e, answer in answers.items() if answer not in ("200", "503")}
    assert not unanswered, sorted(unanswered.items())[:5]
    acked = {e2e for e2e, answer in answers.items() if answer == "200"}
    listed = run_cli("events", "list", "--config", str(tmp_path / "a.toml"), "--json", "--limit", "100000")
    keys = {json.loads(line)["dedup_key"] for line in listed.stdout.splitlines()}
    assert acked <= keys, sorted(acked - keys)[:5]


# --- durable means durable: synchronous_commit on every connection (issue 17, item 11) ------------


def test_every_store_connection_commits_synchronously_over_a_database_default_of_off(pg_dsn: str) -> None:
    import asyncpg

    from mtls_receiver.store.postgres import PostgresStore

    async def scenario() -> None:
        admin = await asyncpg.connect(pg_dsn)
        try:
            name = await admin.fetchval("SELECT current_database()")
            await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        finally:
            await admin.close()
        plain = await asyncpg.connect(pg_dsn)  # the database's own default now, for contrast
        try:
            assert await plain.fetchval("SHOW synchronous_commit") == "off"
        finally:
            await plain.close()
        store = PostgresStore(pg_dsn, pool_size=3)
        await store.open()
        try:

            def show(conn: asyncpg.Connection) -> object:
                return conn.fetchval("SHOW synchronous_commit")

            seen = await asyncio.gather(*(store._transaction(show) for _ in range(6)))
            assert set(seen) == {"on"}
        finally:
            await store.close()

    asyncio.run(scenario())


# --- a request in the handling phase has a deadline (issue 17, item 7) ----------------------------


def test_a_store_that_does_not_answer_gets_503_after_handling_timeout(
    tmp_path: Path, pki: Pki, pg_dsn: str, serve: Serve
) -> None:
    """The audit table locked by another session: the commit waits; past ``handling_timeout`` the
    sender gets 503 with Retry-After (before: it waited for the database's own timeouts, if any)."""
    import asyncpg

    config = tmp_path / "a.toml"
    config.write_text(
        "workers = 1\n"
        + config_text(pki, listener_extra="limits = { handling_timeout = 1 }").replace(
            '[store]\npath = "inbox.db"', f'[store]\nurl = "{pg_dsn}"'
        ),
        encoding="utf-8",
    )
    server, port = serve(config)

    async def scenario() -> None:
        context = client_context(pki, pki.client)
        assert (await https_post(port, "/webhook/pix", {"pix": [pix("E-BEFORE")]}, context)).status == 200
        locker = await asyncpg.connect(pg_dsn)
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE audit IN ACCESS EXCLUSIVE MODE")
                answer = await https_post(port, "/webhook/pix", {"pix": [pix("E-LOCKED")]}, context)
                assert answer.status == 503 and answer.headers.get("retry-after") == "5"
        finally:
            await locker.close()

        async def stored_again() -> bool:
            return (await https_post(port, "/webhook/pix", {"pix": [pix("E-AFTER")]}, context)).status == 200

        await until(stored_again, 20, interval=0.1)

    try:
        asyncio.run(scenario())
    finally:
        server.kill()
    assert "no answer within 1s (limits.handling_timeout)" in "".join(server.output)
