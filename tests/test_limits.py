"""Limits and hostile clients: every refusal is clear, and other clients keep being served."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections.abc import Callable

import pytest
from support import CLOSE_WAIT, ESTABLISHED, Pki, client_context, connections, https_post, pix, until

from mtls_receiver.config import Config
from mtls_receiver.lifecycle import Receiver


def limits(**values: float) -> str:
    return "limits = { " + ", ".join(f"{k} = {v}" for k, v in values.items()) + " }\n"


@pytest.fixture
def limited(write_config: Callable[..., Config], start_receiver):  # type: ignore[no-untyped-def]
    async def start(**values: float) -> Receiver:
        return await start_receiver(write_config(listener_extra=limits(**values)))

    return start


async def deliver(receiver: Receiver, pki: Pki, e2e: str = "E-OK") -> int:
    answer = await asyncio.wait_for(
        https_post(receiver.port(), "/webhook/pix", {"pix": [pix(e2e)]}, client_context(pki, pki.client)), 10
    )
    return answer.status


def tls_alert(port: int, context: ssl.SSLContext) -> str:
    """Handshake and one request with a blocking client; return the alert the server sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
                tls.recv(100)
        except ssl.SSLError as exc:
            return exc.reason or str(exc)
    raise AssertionError("no TLS alert: the connection was not refused with one")


@pytest.mark.parametrize(
    ("cert", "alert"),
    [(None, "TLSV13_ALERT_CERTIFICATE_REQUIRED"), ("foreign_client", "TLSV1_ALERT_UNKNOWN_CA")],
)
async def test_refused_handshake_sends_the_alert_tls13(
    receiver: Receiver, pki: Pki, cert: str | None, alert: str
) -> None:
    context = client_context(pki, getattr(pki, cert) if cert else None)
    assert await asyncio.to_thread(tls_alert, receiver.port(), context) == alert


@pytest.mark.parametrize(
    ("cert", "alert"), [(None, "SSLV3_ALERT_HANDSHAKE_FAILURE"), ("foreign_client", "TLSV1_ALERT_UNKNOWN_CA")]
)
async def test_refused_handshake_sends_the_alert_tls12(
    receiver: Receiver, pki: Pki, cert: str | None, alert: str
) -> None:
    context = client_context(pki, getattr(pki, cert) if cert else None)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await asyncio.to_thread(tls_alert, receiver.port(), context) == alert


async def test_body_over_limit_is_413_and_others_are_served(limited, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await limited(max_body=1000)
    big = {"pix": [pix("E-BIG", infoPagador="x" * 2000)]}
    answer = await https_post(receiver.port(), "/webhook/pix", big, client_context(pki, pki.client))
    assert answer.status == 413
    assert await deliver(receiver, pki) == 200
    statuses = [a.status for a in await receiver.store.list_audit()]
    assert statuses == [200, 413]


async def test_too_many_or_too_long_headers_are_400(limited, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await limited(max_headers=20, max_header_size=1000)
    many = {f"X-Filler-{n}": "x" for n in range(30)}
    answer = await https_post(
        receiver.port(), "/webhook/pix", {"pix": [pix("E1")]}, client_context(pki, pki.client), headers=many
    )
    assert answer.status in (400, 431)
    long = {"X-Long": "y" * 2000}
    answer = await https_post(
        receiver.port(), "/webhook/pix", {"pix": [pix("E1")]}, client_context(pki, pki.client), headers=long
    )
    assert answer.status in (400, 431)
    assert await deliver(receiver, pki) == 200


async def test_method_and_content_type(receiver: Receiver, pki: Pki) -> None:
    answer = await https_post(
        receiver.port(), "/webhook/pix", b"", client_context(pki, pki.client), method="GET"
    )
    assert answer.status == 405
    answer = await https_post(
        receiver.port(),
        "/webhook/pix",
        {"pix": [pix("E1")]},
        client_context(pki, pki.client),
        headers={"Content-Type": "text/plain"},
    )
    assert answer.status == 415 and b"not JSON" in answer.body
    answer = await https_post(
        receiver.port(),
        "/webhook/pix",
        {"pix": [pix("E1")]},
        client_context(pki, pki.client),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert answer.status == 200


async def silent_connections(port: int, count: int) -> list[socket.socket]:
    """Clients that connect and never say anything (not even a ClientHello)."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


async def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 100), timeout)
    except ConnectionResetError:
        return True
    return data == b"" or data.startswith(b"\x15")  # EOF, or a TLS alert record


async def test_handshake_timeout_and_200_idle_clients_do_not_block_delivery(limited, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await limited(handshake_timeout=1.0, max_connections_per_ip=500)
    idle = await silent_connections(receiver.port(), 200)
    try:
        started = time.monotonic()
        assert await deliver(receiver, pki) == 200  # served while 200 connections sit idle
        assert time.monotonic() - started < 5
        assert await closed_by_server(idle[0])
    finally:
        for sock in idle:
            sock.close()


async def tls_stream(receiver: Receiver, pki: Pki) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1", receiver.port(), ssl=client_context(pki, pki.client), server_hostname="localhost"
    )


async def test_slowloris_headers_are_cut_off(limited, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await limited(header_timeout=0.5)
    reader, writer = await tls_stream(receiver, pki)
    writer.write(b"POST /webhook/pix HTTP/1.1\r\nHost: localhost\r\n")  # ...and never the blank line
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    assert await deliver(receiver, pki) == 200


async def test_trickled_body_is_408(limited, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await limited(body_timeout=0.5)
    reader, writer = await tls_stream(receiver, pki)
    writer.write(
        b"POST /webhook/pix HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"pix"'
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"body not received within 0.5s" in answer
    assert (await receiver.store.list_audit())[0].status == 408


async def test_idle_keep_alive_is_closed(limited, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await limited(keepalive_timeout=0.5)
    reader, writer = await tls_stream(receiver, pki)
    writer.write(b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await reader.readexactly(3)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed after being idle
    writer.close()


@pytest.mark.parametrize("limit", ["max_connections_per_ip", "max_connections"])
async def test_connection_limits_refuse_early_and_keep_serving(limited, pki: Pki, limit: str) -> None:  # type: ignore[no-untyped-def]
    receiver = await limited(**{limit: 5, "handshake_timeout": 30})
    open_ones = [await tls_stream(receiver, pki) for _ in range(4)]
    extra = await silent_connections(receiver.port(), 1)  # the fifth: a handshake still in progress counts
    await until(lambda: connections(os.getpid(), receiver.port()) == 5)  # accepted: counted
    beyond = await silent_connections(receiver.port(), 1)
    assert await closed_by_server(beyond[0])
    reader, writer = open_ones[0]  # an established connection is still served
    writer.write(
        b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    for _reader, writer in open_ones:
        writer.close()
    for sock in extra + beyond:
        sock.close()
    await until(lambda: connections(os.getpid(), receiver.port(), (ESTABLISHED, CLOSE_WAIT)) == 0)  # closed
    assert await deliver(receiver, pki) == 200  # room again once they closed
