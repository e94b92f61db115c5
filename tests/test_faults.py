"""Faults that must not lose data: a full disk, an unopenable store, kill -9 under load."""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import (
    Pki,
    Serve,
    ServerProcess,
    client_context,
    config_text,
    http_get,
    https_post,
    pix,
    run_cli,
    wait_until,
)


def test_disk_full_gives_503_then_recovers(tmp_path: Path, pki: Pki, serve: Serve) -> None:
    server, port = serve()
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
    assert (
        f"{tmp_path / 'not-a-dir' / 'inbox.db'}" in result.stderr
        and "cannot create its directory" in result.stderr
    )
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
def test_kill_9_under_concurrent_load_keeps_every_ack_exactly_once(
    tmp_path: Path, pki: Pki, round_: int, serve: Serve
) -> None:
    server, port = serve()
    config = tmp_path / "config.toml"
    try:
        acked = asyncio.run(_concurrent_senders(port, pki, server, kill_after=80 + 40 * round_))
    finally:
        server.kill()
    assert server.proc is not None and server.proc.returncode == -9
    restarted, _ = serve(config)
    try:
        listed = run_cli("events", "list", "--config", str(config), "--json", "--limit", "100000")
    finally:
        restarted.terminate()
    keys = [json.loads(line)["dedup_key"] for line in listed.stdout.splitlines()]
    assert acked <= set(keys), sorted(acked - set(keys))[:5]
    assert len(keys) == len(set(keys))  # exactly once


# --- a real small filesystem filling up (issue 17, items 8 and 9) ---------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MiB tmpfs of the test's own: a disk that really fills up (needs root, as CI runs)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1536k,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a small tmpfs ({made.stderr.strip()}); CI runs as root: it must run")
        pytest.skip(f"cannot mount a small tmpfs: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write zeros until the filesystem says it is full: another program took the last bytes."""
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


def _eventually(check: Callable[[], bool], what: str) -> None:
    wait_until(check, 30.0, lambda: what, interval=0.1)


def test_a_full_small_filesystem_recovers_by_itself(
    tmp_path: Path, pki: Pki, small_filesystem: Path, serve: Serve
) -> None:
    """The inbox on a 1.5 MiB filesystem: filled until 503 (the WAL must not be what fills it), then
    full to the last byte (/readyz 503), then a 256 KiB file is deleted: the same receiver accepts
    again, and the freed space holds events, not copies of pages in the WAL (before: 15 events)."""
    spare = small_filesystem / "spare"
    spare.write_bytes(b"\0" * 256 * 1024)
    server, port = serve(store=str(small_filesystem / "inbox.db"))
    admin = server.admin_port()
    context = client_context(pki, pki.client)
    answers: dict[str, int] = {}

    def post(e2e: str) -> int:
        answers[e2e] = asyncio.run(https_post(port, "/webhook/pix", {"pix": [pix(e2e)]}, context)).status
        return answers[e2e]

    try:
        n, refused = 0, 0
        while refused < 5:  # until the disk is full: 5 refusals in a row
            n += 1
            assert n < 20000, "the disk never filled"
            refused = refused + 1 if post(f"E-FILL-{n}") == 503 else 0
        filled = sum(status == 200 for status in answers.values())
        print(f"{filled} events filled the disk")
        assert filled > 500  # ~1 MiB of events, not a WAL of page copies (before: about 80)
        _fill(small_filesystem / "other-program")
        assert [post(f"E-FULL-{k}") for k in range(3)] == [503] * 3
        _eventually(lambda: http_get(admin, "/readyz")[0] == 503, "/readyz stayed 200 on a full disk")
        spare.unlink()
        (small_filesystem / "other-program").unlink()
        _eventually(lambda: post(f"E-BACK-{time.monotonic_ns()}") == 200, "no recovery without a restart")
        _eventually(lambda: http_get(admin, "/readyz")[0] == 200, "/readyz stayed 503 with space free again")
        later = [post(f"E-LATER-{k}") for k in range(150)]  # 256 KiB of room: WAL copies fit ~15 of these
        assert later == [200] * 150
        wal = small_filesystem / "inbox.db-wal"
        _eventually(lambda: not wal.exists() or wal.stat().st_size == 0, "the idle WAL keeps its disk space")
        assert server.proc is not None and server.proc.poll() is None
    finally:
        server.kill()
    with sqlite3.connect(small_filesystem / "inbox.db") as db:
        stored = {row[0] for row in db.execute("SELECT dedup_key FROM events")}
    acked = {e2e for e2e, status in answers.items() if status == 200}
    assert acked <= stored, sorted(acked - stored)[:5]
