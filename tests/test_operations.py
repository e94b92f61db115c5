"""Running it for real: sd_notify, socket activation, reload under load, graceful stop, metrics, logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families
from support import (
    REFUSED,
    Pki,
    Serve,
    ServerProcess,
    Swappable,
    blocking_connect,
    client_context,
    config_text,
    connections,
    https_post,
    pix,
    run_cli,
    served_subject,
    unread,
    until,
    write_atomically,
)

from mtls_receiver.lifecycle import Receiver

# --- sd_notify -------------------------------------------------------------------------------------


def test_sd_notify_messages_in_order(tmp_path: Path, pki: Pki) -> None:
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(20)
        config = tmp_path / "config.toml"
        config.write_text(config_text(pki), encoding="utf-8")
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"}
        server = ServerProcess("serve", "--config", str(config), env=env)
        server.start()
        messages: list[str] = []

        def receive_until(wanted: str) -> None:
            while not messages or wanted not in messages[-1].split("\n"):
                messages.append(notify.recv(4096).decode())

        try:
            receive_until("READY=1")
            assert "STATUS=listening on 127.0.0.1:" in messages[-1]
            receive_until("WATCHDOG=1")
            receive_until("WATCHDOG=1")
            server.signal(signal.SIGHUP)
            receive_until("RELOADING=1")
            assert "MONOTONIC_USEC=" in messages[-1]
            receive_until("READY=1")
            server.signal(signal.SIGTERM)
            receive_until("STOPPING=1")
            assert server.proc is not None and server.proc.wait(20) == 0
        finally:
            server.kill()
        states = [
            field
            for message in messages
            for field in message.split("\n")
            if field in ("READY=1", "RELOADING=1", "STOPPING=1")
        ]
        assert states == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]


# --- socket activation ------------------------------------------------------------------------------


def test_socket_activation_serves_on_fd_3(tmp_path: Path, pki: Pki) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = tmp_path / "config.toml"
    config.write_text(
        config_text(pki, port=1), encoding="utf-8"
    )  # port 1 would fail to bind: fd 3 must be used

    def as_systemd_does() -> None:
        os.dup2(listening.fileno(), 3)
        os.environ.update(LISTEN_FDS="1", LISTEN_FDNAMES="main", LISTEN_PID=str(os.getpid()))

    server = ServerProcess("serve", "--config", str(config), pass_fds=(3,), preexec_fn=as_systemd_does)
    assert server.start() == port
    try:
        answer = asyncio.run(https_post(port, "/webhook", b"", client_context(pki, pki.client)))
        assert answer.status == 200
        assert "inherited socket" in "".join(server.output)
    finally:
        server.kill()
        listening.close()


# --- reload -----------------------------------------------------------------------------------------


def blocking_post(tls: ssl.SSLSocket, keep_alive: bool = False) -> int:
    connection = "keep-alive" if keep_alive else "close"
    tls.sendall(
        b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
        + f"Connection: {connection}\r\n\r\n".encode()
    )
    head = tls.recv(4096)
    if not head:
        raise ConnectionResetError("closed without an answer")
    return int(head.split()[1])


def test_reload_under_load_swaps_certificate_and_ca(tmp_path: Path, pki: Pki, serve: Serve) -> None:
    files = Swappable(tmp_path, pki)
    server, port = serve(tmp_path / "config.toml")
    efi, second = files.context(pki.client), files.context(tmp_path / "second-client.pem")
    try:
        assert served_subject(port, efi) == "first"
        # before the swap the second CA is trusted; a session is offered back, and the server
        # never resumes one (no tickets, no cache): every handshake verifies the certificate
        second12 = files.context(tmp_path / "second-client.pem", tls12=True)
        with blocking_connect(port, second12) as first_connection:
            assert blocking_post(first_connection, keep_alive=True) == 200
            old_session = first_connection.session
        assert old_session is not None
        with blocking_connect(port, second12, old_session) as offered:
            assert not offered.session_reused and blocking_post(offered) == 200
        kept_alive = blocking_connect(port, second)
        assert blocking_post(kept_alive, keep_alive=True) == 200

        results: list[object] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                try:
                    results.append((await https_post(port, "/webhook", b"", efi)).status)
                except Exception as exc:  # any failure is a failed request
                    results.append(exc)

        processes = len(server.pids())  # each one logs its own "reloaded"

        async def reload_under_load(reloaded: int) -> None:
            """SIGHUP; then every process has reloaded, and requests kept being answered meanwhile."""
            answered = len(results)
            server.signal(signal.SIGHUP)
            await until(
                lambda: server.count("reloaded") >= reloaded and len(results) >= answered + 5,
                what=lambda: "".join(server.output),
            )

        async def swap() -> None:
            await until(lambda: len(results) >= 10)  # the load is flowing
            files.install_server_cert("second")
            files.remove_second_ca()
            for reload in range(1, 5):
                await reload_under_load(reload * processes)
            stop.set()

        async def run() -> None:
            await asyncio.gather(load(), load(), swap())

        asyncio.run(run())
        server.wait_for_output("reloaded")
        assert len(results) > 20 and all(r == 200 for r in results), [r for r in results if r != 200][:3]
        assert served_subject(port, efi) == "second"
        with pytest.raises(REFUSED):  # the removed CA, new connection
            asyncio.run(https_post(port, "/webhook", b"", second))
        with pytest.raises(REFUSED):  # ... and trying to resume a session from before the reload
            with blocking_connect(port, second12, old_session) as resumed:
                blocking_post(resumed)
        assert blocking_post(kept_alive) == 403  # a connection from before the reload is checked again
        kept_alive.close()
    finally:
        server.kill()


def test_broken_certificate_on_reload_keeps_the_old_one(tmp_path: Path, pki: Pki, serve: Serve) -> None:
    files = Swappable(tmp_path, pki)
    server, port = serve(tmp_path / "config.toml")
    try:
        write_atomically(
            tmp_path / "server.pem", b"-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"
        )
        server.signal(signal.SIGHUP)
        server.wait_for_output("reload rejected, still serving the previous configuration")
        assert "server.pem" in "".join(server.output).split("reload rejected")[1].splitlines()[0]
        assert served_subject(port, files.context(pki.client)) == "first"
        assert asyncio.run(https_post(port, "/webhook", b"", files.context(pki.client))).status == 200
    finally:
        server.kill()


# --- graceful stop ----------------------------------------------------------------------------------


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, pki: Pki, serve: Serve) -> None:
    server, port = serve()
    config = tmp_path / "config.toml"
    body = json.dumps({"pix": [pix("E-INFLIGHT")]}).encode()
    processes = server.pids()

    def all_read() -> bool:
        """The server holds the connection and has read everything sent on it so far."""
        return (
            sum(connections(pid, port) for pid in processes) == 1
            and sum(unread(pid, port) for pid in processes) == 0
        )

    async def scenario() -> int:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(pki, pki.client), server_hostname="localhost"
        )
        writer.write(
            f"POST /webhook/pix HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body[:10]
        )
        await writer.drain()
        await until(all_read)
        server.signal(signal.SIGTERM)  # mid-request
        await until(
            lambda: server.count("stopping: finishing requests in flight") >= len(processes),
            what=lambda: "".join(server.output),
        )
        writer.write(body[10:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return int(answer.split()[1])

    try:
        assert asyncio.run(scenario()) == 200
        assert server.proc is not None and server.proc.wait(20) == 0
    finally:
        server.kill()
    listed = run_cli("events", "list", "--config", str(config), "--json")
    assert json.loads(listed.stdout)["dedup_key"] == "E-INFLIGHT"
    assert "stopped" in "".join(server.output)


# --- metrics, health, logs --------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_move_with_traffic(receiver: Receiver, pki: Pki) -> None:
    base = f"http://127.0.0.1:{receiver.admin_port}"
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, str]:
            async with session.get(base + path) as response:
                return response.status, await response.text()

        assert (await get("/healthz"))[0] == 200 and (await get("/readyz"))[0] == 200
        before = samples((await get("/metrics"))[1])
        await https_post(
            receiver.port(), "/webhook/pix", {"pix": [pix("E1")]}, client_context(pki, pki.client)
        )
        await https_post(
            receiver.port(), "/webhook/pix", {"pix": [pix("E2", valor="1")]}, client_context(pki, pki.client)
        )
        with pytest.raises(REFUSED):
            await https_post(receiver.port(), "/webhook", b"", client_context(pki))
        after: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        async def handshake_failure_counted() -> bool:  # after the client saw the refusal
            nonlocal after
            after = samples((await get("/metrics"))[1])
            failures = "mtls_receiver_tls_handshake_failures_total"
            return any(name == failures and count for (name, _), count in after.items())

        await until(handshake_failure_counted)

    def value(metrics: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    accepted = dict(route="/webhook", provider="efi", outcome="accepted")
    assert (
        value(after, "mtls_receiver_requests_total", **accepted)
        == value(before, "mtls_receiver_requests_total", **accepted) + 1
    )
    assert value(after, "mtls_receiver_refusals_total", route="/webhook", reason="bad request") == 1
    assert value(after, "mtls_receiver_inbox_events") == 1
    assert value(after, "mtls_receiver_request_duration_seconds_count", route="/webhook") == 2
    failures = [
        v for (name, labels), v in after.items() if name == "mtls_receiver_tls_handshake_failures_total"
    ]
    assert sum(failures) == 1
    expiry = [
        (dict(labels), v)
        for (name, labels), v in after.items()
        if name == "mtls_receiver_certificate_expiry_days"
    ]
    assert {labels["kind"] for labels, _ in expiry} == {"server", "client_ca"} and all(
        v > 21 for _, v in expiry
    )


def test_json_logs_and_expiry_warning(tmp_path: Path, pki: Pki, serve: Serve) -> None:
    ca = trustme.CA()
    soon = ca.issue_cert("localhost", "127.0.0.1", not_after=datetime.now(UTC) + timedelta(days=10))
    (tmp_path / "soon.pem").write_bytes(b"".join(b.bytes() for b in soon.cert_chain_pems))
    (tmp_path / "soon.key").write_bytes(soon.private_key_pem.bytes())
    config = tmp_path / "config.toml"
    config.write_text(
        config_text(pki)
        .replace(str(pki.server_cert), str(tmp_path / "soon.pem"))
        .replace(str(pki.server_key), str(tmp_path / "soon.key")),
        encoding="utf-8",
    )
    checked = run_cli("check-config", "--config", str(config))
    assert checked.returncode == 0
    assert (
        "WARNING: server certificate of listener 'main'" in checked.stdout
        and "expires in 9 days" in checked.stdout
    )

    server, _ = serve(config, options=("--log-format", "json"))
    try:
        server.wait_for_output("expires in")
    finally:
        server.kill()
    lines = [json.loads(line) for line in server.output if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["level"] == "warning" and "expires in 9 days" in line["message"] for line in lines)
