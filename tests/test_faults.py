"""Faults that must not lose data: a full disk, an unopenable store, kill -9 under load."""

from __future__ import annotations

import asyncio
import json
import random
import resource
import sqlite3
from pathlib import Path

import pytest

from conftest import Pki, ServerProcess, client_context, config_text, https_post, pix, run_cli


def test_disk_full_gives_503_then_recovers(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki), encoding="utf-8")
    server = ServerProcess("serve", "--config", str(config))
    port = server.start()
    context = client_context(pki, pki.client)

    def post(e2e: str) -> int:
        return asyncio.run(https_post(port, "/webhook/pix", {"pix": [pix(e2e)]}, context)).status

    try:
        assert post("E-BEFORE") == 200
        assert server.proc is not None
        unlimited = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
        for pid in server.pids():  # the supervisor and its workers: "the disk is full"
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, unlimited[1]))
        assert [post(f"E-FULL-{n}") for n in range(5)] == [503] * 5
        assert server.proc.poll() is None  # still running
        for pid in server.pids():  # space again
            resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
        assert post("E-FULL-0") == 200 and post("E-AFTER") == 200
    finally:
        server.kill()
    with sqlite3.connect(tmp_path / "inbox.db") as db:
        stored = sorted(row[0] for row in db.execute("SELECT dedup_key FROM events"))
    assert stored == ["E-AFTER", "E-BEFORE", "E-FULL-0"]  # nothing acknowledged that was not stored
    assert "store unavailable" in "".join(server.output)


def test_store_that_cannot_be_opened_exits_with_path_and_reason(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the inbox directory should be")
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki, store=str(tmp_path / "not-a-dir" / "inbox.db")), encoding="utf-8")
    result = run_cli("serve", "--config", str(config), timeout=30)
    assert result.returncode != 0
    assert f"{tmp_path / 'not-a-dir' / 'inbox.db'}" in result.stderr and "cannot create its directory" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    config.write_text(config_text(pki, store=str(tmp_path / "garbage.db")), encoding="utf-8")
    result = run_cli("serve", "--config", str(config), timeout=30)
    assert result.returncode != 0 and "garbage.db" in result.stderr and "Traceback" not in result.stderr


async def _concurrent_senders(port: int, pki: Pki, server: ServerProcess, kill_after: int) -> set[str]:
    """Many senders, a third of them repeating earlier events, until SIGKILL."""
    acked: set[str] = set()
    context = client_context(pki, pki.client)
    sent = [0]
    rng = random.Random(7)

    async def sender() -> None:
        while sent[0] < 2000:
            sent[0] += 1
            e2e = f"E{rng.randrange(sent[0]):031d}" if rng.random() < 0.33 else f"E{sent[0]:031d}"
            try:
                answer = await https_post(port, "/webhook/pix", {"pix": [pix(e2e)]}, context)
            except OSError:
                return
            if answer.status == 200:
                acked.add(e2e)
                if len(acked) >= kill_after:
                    server.kill()

    await asyncio.gather(*(sender() for _ in range(24)))
    return acked


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_under_concurrent_load_keeps_every_ack_exactly_once(tmp_path: Path, pki: Pki, round_: int) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(pki), encoding="utf-8")
    server = ServerProcess("serve", "--config", str(config))
    port = server.start()
    try:
        acked = asyncio.run(_concurrent_senders(port, pki, server, kill_after=80 + 40 * round_))
    finally:
        server.kill()
    assert server.proc is not None and server.proc.returncode == -9
    restarted = ServerProcess("serve", "--config", str(config))
    restarted.start()
    try:
        listed = run_cli("events", "list", "--config", str(config), "--json", "--limit", "100000")
    finally:
        restarted.terminate()
    keys = [json.loads(line)["dedup_key"] for line in listed.stdout.splitlines()]
    assert acked <= set(keys), sorted(acked - set(keys))[:5]
    assert len(keys) == len(set(keys))  # exactly once
