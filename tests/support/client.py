"""Clients of a running receiver: TLS requests written by hand, Pix items, admin GETs."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .pki import Pki

__all__ = ["REFUSED", "Answer", "client_context", "http_get", "https_post", "pix"]

REFUSED = (ssl.SSLError, ConnectionResetError, BrokenPipeError)  # what a client sees of a refused handshake


def client_context(pki: Pki, cert: Path | None = None) -> ssl.SSLContext:
    """A client trusting the test server's CA, presenting ``cert`` if given."""
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    if cert is not None:
        context.load_cert_chain(cert)
    return context


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names


async def https_post(
    port: int,
    path: str,
    body: bytes | str | dict[str, object],
    context: ssl.SSLContext,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request on a fresh TLS connection, written by hand so nothing hides what was sent.

    Raises whatever the TLS layer raises when the server refuses the handshake.
    """
    if isinstance(body, dict):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    if "content-type" not in {name.lower() for name in headers or {}}:
        extra += "Content-Type: application/json\r\n"
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"), 10
    )
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{extra}"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    if not raw:
        raise ConnectionResetError("server closed the connection without an answer")
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(
        status=int(lines[0].split()[1]), body=payload, headers={k.lower(): v for k, v in fields.items()}
    )


def pix(e2e: str, valor: str = "10.00", **extra: object) -> dict[str, object]:
    """One Pix item of an Efí notification."""
    item: dict[str, object] = {"endToEndId": e2e, "valor": valor, "horario": "2026-11-23T10:00:00.000Z"}
    item.update(extra)
    return item


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET on an admin port: status and body (a 503 is an answer, not an error)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
