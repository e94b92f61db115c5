"""kill -9 while Pix notifications are being acknowledged: every 200 must be in the inbox."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from support import Pki, Serve, ServerProcess, client_context, https_post, pix, run_cli

ACKED_BEFORE_KILL = 120
MAX_REQUESTS = 600
WORKERS = 12


async def _send_until_killed(port: int, pki: Pki, server: ServerProcess) -> set[str]:
    acked: set[str] = set()
    counter = iter(range(MAX_REQUESTS))
    context = client_context(pki, pki.client)

    async def worker() -> None:
        for n in counter:
            e2e = f"E{n:031d}"
            try:
                answer = await https_post(port, "/webhook/pix", {"pix": [pix(e2e)]}, context)
            except OSError:
                return  # the server is gone
            if answer.status == 200:
                acked.add(e2e)
                if len(acked) == ACKED_BEFORE_KILL:
                    server.kill()  # SIGKILL right after this 200, with other requests in flight

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return acked


def test_kill_9_loses_no_acknowledged_pix(tmp_path: Path, pki: Pki, serve: Serve) -> None:
    server, port = serve()
    config = tmp_path / "config.toml"
    try:
        acked = asyncio.run(_send_until_killed(port, pki, server))
    finally:
        server.kill()
    assert server.proc is not None and server.proc.returncode == -9
    assert len(acked) >= ACKED_BEFORE_KILL

    restarted, _ = serve(config)
    try:
        listed = run_cli("events", "list", "--config", str(config), "--json", "--limit", "100000")
    finally:
        assert restarted.terminate() == 0
    assert listed.returncode == 0, listed.stderr
    stored = {json.loads(line)["dedup_key"] for line in listed.stdout.splitlines()}
    assert acked <= stored, f"acknowledged but lost: {sorted(acked - stored)[:5]}"
