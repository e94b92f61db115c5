"""Shared fixtures: a throwaway PKI, configs written as a user would, a running receiver (in this
process, or ``serve`` as a subprocess), the merchant's application, an inbox on either backend.

Plain helpers live in the ``support`` package; this file holds only what pytest injects.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from support import OLD_SECRET, SECRET, App, Pki, Serve, ServerProcess, config_text, make_pki

from mtls_receiver.config import Config, StoreConfig, load_config
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.store import Store, open_store

PG_ADMIN_DSN = os.environ.get("MTLS_RECEIVER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def write_config(tmp_path: Path, pki: Pki) -> Callable[..., Config]:
    def write(**kwargs: object) -> Config:
        path = tmp_path / "config.toml"
        path.write_text(config_text(pki, **kwargs), encoding="utf-8")  # type: ignore[arg-type]
        return load_config(path)

    return write


@pytest.fixture
async def start_receiver() -> AsyncIterator[Callable[[Config], Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(config: Config) -> Receiver:
        receiver = Receiver(config)
        await receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


@pytest.fixture
async def receiver(
    write_config: Callable[..., Config], start_receiver: Callable[[Config], Awaitable[Receiver]]
) -> Receiver:
    return await start_receiver(write_config())


@pytest.fixture
def serve(tmp_path: Path, pki: Pki) -> Iterator[Serve]:
    """``serve(config=None, *, workers=None, options=(), **config_text_args) -> (server, port)``:
    ``mtls-receiver [OPTIONS] serve --config CONFIG`` as a real subprocess, started as a user starts it.

    Without ``config``, ``tmp_path/config.toml`` is written from ``config_text`` (with a ``workers``
    line when given). Every server started is killed at teardown, with any worker it left behind."""
    started: list[ServerProcess] = []

    def start(
        config: Path | None = None,
        *,
        workers: int | None = None,
        options: Sequence[str] = (),
        **config_args: object,
    ) -> tuple[ServerProcess, int]:
        if config is None:
            config = tmp_path / "config.toml"
            text = config_text(pki, **config_args)  # type: ignore[arg-type]
            config.write_text(text if workers is None else f"workers = {workers}\n{text}", encoding="utf-8")
        server = ServerProcess(*options, "serve", "--config", str(config))
        started.append(server)
        return server, server.start()

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture
async def app() -> AsyncIterator[App]:
    """The merchant's application, on loopback (see ``support.App``)."""
    async with App() as application:
        yield application


@pytest.fixture
def forward_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secrets ``support.forward_table`` signs deliveries with, in its environment variables."""
    monkeypatch.setenv("T_FORWARD_SECRET", SECRET)
    monkeypatch.setenv("T_FORWARD_OLD", OLD_SECRET)


@pytest.fixture(params=["sqlite", "postgres"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig:
    """Where a test's inbox lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return StoreConfig(path=tmp_path / "inbox.db")
    return StoreConfig(url=request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def store(store_config: StoreConfig) -> AsyncIterator[Store]:
    """An open inbox on each backend in turn."""
    store = open_store(store_config)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards (server on 127.0.0.1:5432, trust auth)."""
    asyncpg = pytest.importorskip("asyncpg")
    name = f"mtls_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({exc}); CI must run these tests")
        pytest.skip(f"no PostgreSQL reachable at {PG_ADMIN_DSN}: {exc}")
    yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
