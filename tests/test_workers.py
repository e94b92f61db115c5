"""``workers = N``: a supervisor, N worker processes on one SO_REUSEPORT port, one SQLite inbox.

Everything here is real: subprocesses started as a user starts them, TLS handshakes on
fresh connections (so the kernel spreads them over the workers by source port), SQLite
files read back with ``events list``, and signals (SIGKILL, SIGHUP, SIGTERM) sent by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support import (
    WAIT,
    Answer,
    Pki,
    Serve,
    Swappable,
    alive,
    client_context,
    config_text,
    http_get,
    post_pix,
    run_cli,
    send_all,
    served_subject,
    statuses,
    wait_until,
)

ACCEPTED = {"route": "/webhook", "provider": "efi", "outcome": "accepted"}


# --- helpers -----------------------------------------------------------------------------------------


def accepted_requests(port: int) -> float:
    """``mtls_receiver_requests_total`` of accepted Efí requests on /webhook, from an admin's /metrics."""
    status, text = http_get(port, "/metrics")
    assert status == 200, text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mtls_receiver_requests_total" and sample.labels == ACCEPTED
    )


def stored_keys(config: Path) -> list[str]:
    """The dedup keys (Pix endToEndIds) of every event in the inbox."""
    listed = run_cli("events", "list", "--config", str(config), "--json", "--limit", "100000", timeout=WAIT)
    assert listed.returncode == 0, listed.stderr
    return [json.loads(line)["dedup_key"] for line in listed.stdout.splitlines() if line.strip()]


def port_is_free(port: int) -> bool:
    """A plain socket (SO_REUSEADDR, as servers bind; no SO_REUSEPORT) can listen on the port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


# --- tests -------------------------------------------------------------------------------------------


def test_two_workers_share_one_port_and_the_supervisor_sums_their_metrics(
    serve: Serve, tmp_path: Path, pki: Pki
) -> None:
    server, port = serve(workers=2)
    assert "(main, 2 workers, bound with SO_REUSEPORT)" in "".join(server.output)
    assert len(server.pids()) == 3  # the supervisor and two workers
    sent = [f"E-SPREAD-{i:03d}" for i in range(60)]

    results = asyncio.run(send_all(port, client_context(pki, pki.client), sent))

    assert statuses(results) == [200] * 60
    keys = stored_keys(tmp_path / "config.toml")
    assert sorted(keys) == sent
    # each worker counts its own share (60 fresh connections from 60 source ports: both get some)...
    shares = [accepted_requests(admin) for admin in server.worker_admin_ports(port)]
    assert len(shares) == 2 and all(share > 0 for share in shares), shares
    # ... and the supervisor's /metrics adds them up
    assert sum(shares) == 60
    assert accepted_requests(server.admin_port()) == 60
    assert http_get(server.admin_port(), "/readyz")[0] == 200


def test_the_same_event_on_both_workers_is_stored_once(serve: Serve, tmp_path: Path, pki: Pki) -> None:
    server, port = serve(workers=2)
    context = client_context(pki, pki.client)

    async def at_once() -> list[Answer]:
        return await asyncio.wait_for(
            asyncio.gather(*(post_pix(port, context, "E-TWICE") for _ in range(20))), WAIT
        )

    answers = asyncio.run(at_once())

    assert [answer.status for answer in answers] == [200] * 20
    assert stored_keys(tmp_path / "config.toml") == ["E-TWICE"]
    server.wait_for_count("status=200", 20)  # every answer is logged before it is sent; the pipe may lag
    assert server.count("stored=1 duplicates=0") == 1 and server.count("stored=0 duplicates=1") == 19
    shares = [accepted_requests(admin) for admin in server.worker_admin_ports(port)]
    assert all(share > 0 for share in shares), f"one worker took all 20 connections: {shares}"


def test_a_worker_killed_under_load_is_replaced_and_loses_no_acknowledged_event(
    serve: Serve, tmp_path: Path, pki: Pki
) -> None:
    server, port = serve(workers=2)
    supervisor, victim, survivor = server.pids()
    context = client_context(pki, pki.client)
    acknowledged: list[str] = []

    def kill_at_fifty(e2e: str, answer: Answer) -> None:
        if answer.status == 200:
            acknowledged.append(e2e)
            if len(acknowledged) == 50:
                os.kill(victim, signal.SIGKILL)

    results = asyncio.run(
        send_all(port, context, (f"E-LOAD-{i:03d}" for i in range(300)), on_answer=kill_at_fifty)
    )

    assert len(acknowledged) >= 50
    odd = {e2e: r for e2e, r in results.items() if isinstance(r, Answer) and r.status != 200}
    assert not odd, odd  # a request either failed with its connection, or was answered 200
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another", WAIT)
    wait_until(
        lambda: http_get(server.admin_port(), "/readyz")[0] == 200,
        20,
        lambda: "/readyz never 200 again:\n" + "".join(server.output),
    )
    after = asyncio.run(send_all(port, context, [f"E-AFTER-{i}" for i in range(10)]))
    assert statuses(after) == [200] * 10

    pids = server.pids()
    assert server.proc is not None and server.proc.poll() is None and pids[0] == supervisor
    assert len(pids) == 3 and victim not in pids and survivor in pids
    stored = set(stored_keys(tmp_path / "config.toml"))
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged events lost: {sorted(missing)[:5]}"
    assert stored <= set(results) | set(after)  # nothing stored that was not sent
    assert {f"E-AFTER-{i}" for i in range(10)} <= stored


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(
    serve: Serve, tmp_path: Path, pki: Pki
) -> None:
    server, port = serve(workers=2)
    workers = server.workers()
    assert len(workers) == 2
    assert asyncio.run(post_pix(port, client_context(pki, pki.client), "E-BEFORE")).status == 200

    server.kill()  # SIGKILL: no handler runs, only the lifeline pipe tells the workers

    wait_until(
        lambda: not any(alive(pid) for pid in workers),
        WAIT,
        lambda: f"workers still running: {[pid for pid in workers if alive(pid)]}\n" + "".join(server.output),
    )
    server.wait_for_count("the supervisor is gone; stopping", 2)
    assert port_is_free(port), "a worker's listening socket outlived it"
    # the same config, now on that fixed port, starts again and still has the inbox
    config = tmp_path / "config.toml"
    config.write_text("workers = 2\n" + config_text(pki, port=port), encoding="utf-8")
    again, again_port = serve(config)
    assert again_port == port
    assert asyncio.run(post_pix(port, client_context(pki, pki.client), "E-AGAIN")).status == 200
    assert sorted(stored_keys(config)) == ["E-AGAIN", "E-BEFORE"]
    assert len(again.pids()) == 3


def test_sighup_reloads_supervisor_and_workers_but_not_a_change_of_workers(
    serve: Serve, tmp_path: Path, pki: Pki
) -> None:
    files = Swappable(tmp_path, pki)
    config = tmp_path / "config.toml"
    first = config.read_text(encoding="utf-8")
    config.write_text("workers = 2\n" + first, encoding="utf-8")
    server, port = serve(config)
    pids = sorted(server.pids())
    efi = files.context(pki.client)
    assert {served_subject(port, efi) for _ in range(20)} == {"first"}

    files.install_server_cert("second")
    server.signal(signal.SIGHUP)
    server.wait_for_count("reloaded", 3)  # the supervisor, then each worker

    # 20 fresh connections reach both workers: each serves the new certificate
    assert {served_subject(port, efi) for _ in range(20)} == {"second"}

    config.write_text("workers = 3\n" + first, encoding="utf-8")
    server.signal(signal.SIGHUP)
    server.wait_for_output("workers changed (2 -> 3): restart to apply")
    assert "reload rejected, still serving the previous configuration" in "".join(server.output)
    answers = asyncio.run(send_all(port, efi, [f"E-KEPT-{i}" for i in range(10)]))
    assert statuses(answers) == [200] * 10
    assert {served_subject(port, efi) for _ in range(10)} == {"second"}
    assert sorted(server.pids()) == pids  # no worker added, none restarted
    assert server.count("reloaded") == 3 and server.count("workers changed") == 1


def test_sigterm_stops_the_supervisor_and_every_worker(serve: Serve, tmp_path: Path, pki: Pki) -> None:
    server, port = serve(workers=2)
    workers = server.workers()
    assert len(workers) == 2
    assert asyncio.run(post_pix(port, client_context(pki, pki.client), "E-TERM")).status == 200

    assert server.terminate() == 0

    assert [pid for pid in workers if alive(pid)] == []  # the supervisor waited for them
    server.wait_for_count("stopped", 3)  # two workers, then the supervisor
    assert "".join(server.output).rstrip().endswith("stopped")
    assert port_is_free(port)
    assert stored_keys(tmp_path / "config.toml") == ["E-TERM"]


def test_a_replacement_worker_serves_the_supervisors_config_not_a_rejected_file(
    serve: Serve, tmp_path: Path, pki: Pki
) -> None:
    server, port = serve(workers=2)
    config = tmp_path / "config.toml"
    config.write_text(config.read_text() + "\nbogus = 1\n", encoding="utf-8")  # broken: the reload is refused
    server.signal(signal.SIGHUP)
    server.wait_for_output("reload rejected, still serving the previous configuration")
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another")
    wait_until(
        lambda: http_get(server.admin_port(), "/readyz")[0] == 200,
        WAIT,
        lambda: "no replacement serving:\n" + "".join(server.output),
    )
    assert len(server.workers()) == 2 and victim not in server.workers()
    results = asyncio.run(
        send_all(port, client_context(pki, pki.client), [f"E-REPLACED-{i}" for i in range(20)])
    )
    assert statuses(results) == [200] * 20


def test_summed_counters_never_go_down_when_a_worker_exits(serve: Serve, pki: Pki) -> None:
    server, port = serve(workers=2)
    context = client_context(pki, pki.client)
    assert statuses(asyncio.run(send_all(port, context, [f"E-COUNT-{i}" for i in range(40)]))) == [200] * 40
    admin = server.admin_port()
    assert accepted_requests(admin) == 40
    counts = [accepted_requests(p) for p in server.worker_admin_ports(port)]
    shares = dict(zip(server.workers(), counts, strict=True))
    victim = next(pid for pid, share in shares.items() if share > 0)  # a worker whose counts would vanish
    os.kill(victim, signal.SIGKILL)
    server.wait_for_output(f"(pid {victim}) exited with signal 9; starting another")
    assert accepted_requests(admin) == 40  # its counts are kept, not lost (Prometheus would see a reset)
    wait_until(lambda: http_get(admin, "/readyz")[0] == 200, WAIT, lambda: "".join(server.output))
    assert (
        statuses(asyncio.run(send_all(port, context, [f"E-COUNT-MORE-{i}" for i in range(10)]))) == [200] * 10
    )
    assert accepted_requests(admin) == 50
