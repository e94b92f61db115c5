"""Readiness tells the truth, and a worker that is alive but no use is replaced.

Real faults on real processes: a worker stopped with SIGSTOP (hung, not dead), a worker whose
files may not grow (RLIMIT_FSIZE: its disk is full), and the inbox's write lock held by another
process (the store itself cannot commit, for everyone). Short heartbeat settings in ``[health]``
keep the waits short; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    WAIT,
    Pki,
    Serve,
    ServerProcess,
    client_context,
    config_text,
    http_get,
    send_all,
    statuses,
    wait_until,
)

from mtls_receiver.config import HealthConfig, load_config
from mtls_receiver.errors import ConfigError
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.workers import Heartbeats

HEALTH = "\n[health]\nheartbeat_interval = 0.25\nhung_after = 3\nunready_after = 3\n"


def start(serve: Serve, tmp_path: Path, pki: Pki) -> tuple[ServerProcess, int, int]:
    """Two workers with short health settings: (server, port, supervisor's admin port)."""
    config = tmp_path / "config.toml"
    config.write_text("workers = 2\n" + config_text(pki) + HEALTH, encoding="utf-8")
    server, port = serve(config)
    admin = server.admin_port()
    wait_until(
        lambda: http_get(admin, "/readyz")[0] == 200, WAIT, lambda: "never ready:\n" + "".join(server.output)
    )
    return server, port, admin


@pytest.fixture
def write_lock(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection to the inbox, ready to hold its write lock (released at the end)."""
    db = sqlite3.connect(tmp_path / "inbox.db", isolation_level=None, timeout=WAIT)
    yield db
    if db.in_transaction:
        db.execute("ROLLBACK")
    db.close()


def test_a_hung_worker_makes_readyz_503_and_is_replaced(serve: Serve, tmp_path: Path, pki: Pki) -> None:
    server, port, admin = start(serve, tmp_path, pki)
    victim, survivor = server.workers()

    os.kill(victim, signal.SIGSTOP)  # alive, holding its socket, answering nothing

    wait_until(
        lambda: http_get(admin, "/readyz")[0] == 503,
        WAIT,
        lambda: "/readyz still 200 with a stopped worker:\n" + "".join(server.output),
    )
    server.wait_for_output(f"(pid {victim}) answered no heartbeat for", WAIT)
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another", WAIT)
    wait_until(
        lambda: http_get(admin, "/readyz")[0] == 200,
        WAIT,
        lambda: "/readyz never 200 again:\n" + "".join(server.output),
    )
    workers = server.workers()
    assert len(workers) == 2 and victim not in workers and survivor in workers
    results = asyncio.run(send_all(port, client_context(pki, pki.client), [f"E-HUNG-{i}" for i in range(20)]))
    assert statuses(results) == [200] * 20


def test_a_worker_that_cannot_commit_makes_readyz_503_and_is_replaced(
    serve: Serve, tmp_path: Path, pki: Pki
) -> None:
    server, port, admin = start(serve, tmp_path, pki)
    victim, survivor = server.workers()
    unlimited = resource.prlimit(victim, resource.RLIMIT_FSIZE)

    resource.prlimit(victim, resource.RLIMIT_FSIZE, (1, unlimited[1]))  # its disk is full; the others' is not

    wait_until(
        lambda: http_get(admin, "/readyz")[0] == 503,
        WAIT,
        lambda: "/readyz still 200 while a worker cannot commit:\n" + "".join(server.output),
    )
    server.wait_for_output(f"(pid {victim}) is not ready: its write probe cannot commit to the inbox", WAIT)
    server.wait_for_output(f"(pid {victim}) could not commit to the inbox for", WAIT)
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another", WAIT)
    wait_until(
        lambda: http_get(admin, "/readyz")[0] == 200,
        WAIT,
        lambda: "/readyz never 200 again:\n" + "".join(server.output),
    )
    assert survivor in server.workers() and victim not in server.workers()
    results = asyncio.run(send_all(port, client_context(pki, pki.client), [f"E-FULL-{i}" for i in range(20)]))
    assert statuses(results) == [200] * 20


def test_when_the_store_itself_cannot_commit_readyz_is_503_and_workers_are_kept(
    serve: Serve, tmp_path: Path, pki: Pki, write_lock: sqlite3.Connection
) -> None:
    server, port, admin = start(serve, tmp_path, pki)
    workers = sorted(server.workers())

    write_lock.execute("BEGIN IMMEDIATE")  # another process holds the inbox's write lock: nobody commits

    wait_until(
        lambda: http_get(admin, "/readyz")[0] == 503,
        WAIT,
        lambda: "/readyz still 200 while nobody can commit:\n" + "".join(server.output),
    )
    server.wait_for_output("nor can the supervisor: the store itself is failing; the worker is kept", WAIT)
    assert sorted(server.workers()) == workers  # a new worker would not commit either

    write_lock.execute("ROLLBACK")

    wait_until(
        lambda: http_get(admin, "/readyz")[0] == 200,
        WAIT,
        lambda: "/readyz never 200 again:\n" + "".join(server.output),
    )
    assert sorted(server.workers()) == workers and "killing it" not in "".join(server.output)
    results = asyncio.run(send_all(port, client_context(pki, pki.client), [f"E-LOCK-{i}" for i in range(10)]))
    assert statuses(results) == [200] * 10


async def test_one_process_is_ready_only_while_its_store_commits(
    receiver: Receiver, write_lock: sqlite3.Connection
) -> None:
    assert await receiver.ready()
    write_lock.execute("BEGIN IMMEDIATE")
    assert not await receiver.ready()
    write_lock.execute("ROLLBACK")
    assert await receiver.ready()


# --- the rules, without processes ------------------------------------------------------------------

RULES = HealthConfig(heartbeat_interval=1.0, hung_after=10.0, unready_after=30.0)


def test_a_worker_is_ready_only_after_a_recent_ready_answer() -> None:
    beats = Heartbeats.started(now=100.0)
    assert not beats.serving(100.0, RULES)  # started, not yet asked
    beats.heard(True, 101.0)
    assert beats.serving(101.0, RULES) and beats.serving(104.0, RULES)  # a late answer or two is tolerated
    beats.heard(None, 105.0)  # no answer in time
    assert not beats.serving(104.5 + 0.6, RULES)  # three intervals without an answer: not ready
    beats.heard(False, 106.0)
    assert not beats.serving(106.0, RULES)  # "not ready" counts at once


def test_silence_for_hung_after_is_hung_and_a_busy_answer_resets_it() -> None:
    beats = Heartbeats.started(now=0.0)
    beats.heard(True, 1.0)
    for second in range(2, 11):
        beats.heard(None, float(second))
    assert beats.hung(10.9, RULES) is None
    assert beats.hung(11.0, RULES) == "answered no heartbeat for 10.0s (health.hung_after = 10)"
    beats.heard(False, 11.5)  # any answer shows the event loop runs
    assert beats.hung(12.0, RULES) is None


def test_unready_for_unready_after_counts_from_the_first_not_ready_answer() -> None:
    beats = Heartbeats.started(now=0.0)
    beats.heard(True, 1.0)
    beats.heard(False, 5.0)
    for second in range(6, 40):
        beats.heard(False, float(second))
    assert beats.unready(34.9, RULES, store_ok_since=0.0) is None
    assert beats.unready(35.0, RULES, store_ok_since=0.0) == (
        "could not commit to the inbox for 30.0s while the supervisor could (health.unready_after = 30)"
    )
    beats.heard(True, 36.0)
    assert beats.unready(80.0, RULES, store_ok_since=0.0) is None and beats.hung(36.5, RULES) is None


def test_a_worker_is_not_replaced_while_the_store_itself_fails_and_has_time_once_it_is_back() -> None:
    beats = Heartbeats.started(now=0.0)
    beats.heard(True, 1.0)
    beats.heard(False, 5.0)  # the disk is full for everyone
    assert beats.unready(100.0, RULES, store_ok_since=None) is None  # a new worker would fail the same way
    assert beats.unready(100.0, RULES, store_ok_since=90.0) is None  # back since 90: time to recover
    assert beats.unready(120.0, RULES, store_ok_since=90.0) is not None  # but not for ever


def test_a_worker_never_ready_since_its_start_counts_as_unready_from_the_start() -> None:
    beats = Heartbeats.started(now=0.0)
    beats.heard(False, 1.0)
    assert beats.unready(30.0, RULES, store_ok_since=0.0) is not None


# --- configuration -----------------------------------------------------------------------------------


def test_health_defaults_are_generous(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(pki), encoding="utf-8")
    assert load_config(path).health == HealthConfig(
        heartbeat_interval=2.0, hung_after=20.0, unready_after=30.0
    )
    path.write_text(config_text(pki) + HEALTH, encoding="utf-8")
    assert load_config(path).health == HealthConfig(
        heartbeat_interval=0.25, hung_after=3.0, unready_after=3.0
    )


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ("heartbeat_interval = 0", "health.heartbeat_interval", "must be a number >= 0.05, got 0"),
        ('hung_after = "soon"', "health.hung_after", "must be a number >= 0.1, got 'soon'"),
        (
            "heartbeat_interval = 5\nhung_after = 10",
            "health.hung_after",
            "must be at least 3 heartbeat intervals (15 s)",
        ),
        ("unready_after = 1", "health.unready_after", "must be at least one heartbeat interval (2 s), got 1"),
        (
            "interval = 1",
            "health.interval",
            "unknown key (allowed here: heartbeat_interval, hung_after, unready_after)",
        ),
    ],
)
def test_health_mistakes_name_the_key(tmp_path: Path, pki: Pki, table: str, key: str, problem: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text(pki) + f"\n[health]\n{table}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.key) == (str(path), key)
    assert problem in info.value.problem
