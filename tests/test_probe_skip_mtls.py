"""``probe`` on a skip-mTLS URL (one with an ``hmac`` query value) checks the secret, not the certificate:
a request without the hmac must be refused, one with it answered, as Efí's registration relies on."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from support import Pki, run_cli

from mtls_receiver.config import Config
from mtls_receiver.lifecycle import Receiver

SECRET = "probe-secret-0123456789abcdef"


def skip_route(allow: str) -> str:
    return (
        '[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "skip-mtls"\n'
        f'allow_ips = {allow}\nhmac_secrets = [{{ env = "T_PROBE_HMAC" }}]\n'
    )


@pytest.fixture(autouse=True)
def secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_PROBE_HMAC", SECRET)


async def probe(port: int, pki: Pki, secret: str = SECRET) -> tuple[int, list[str]]:
    url = f"https://localhost:{port}/webhook?hmac={secret}&ignorar="
    result = await asyncio.to_thread(run_cli, "probe", url, "--ca", str(pki.server_ca))
    assert "Traceback" not in result.stderr
    assert secret not in result.stdout  # the secret is masked in what is printed
    return result.returncode, result.stdout.splitlines()


async def test_a_skip_mtls_route_passes(
    write_config: Callable[..., Config], start_receiver: Callable[[Config], Awaitable[Receiver]], pki: Pki
) -> None:
    receiver = await start_receiver(
        write_config(client_certs="optional", routes=skip_route('["127.0.0.1/32"]'))
    )
    code, lines = await probe(receiver.port(), pki)
    assert code == 0, lines
    assert [line.split()[0] for line in lines] == ["PASS", "PASS", "PASS"]
    assert "request without the hmac: refused with HTTP 401" in lines[0]
    assert "hmac=***" in lines[2] and "/pix -> HTTP 200" in lines[2]
    assert {event.kind for event in await receiver.store.list_events()} == {"pix"}


async def test_a_wrong_secret_fails(
    write_config: Callable[..., Config], start_receiver: Callable[[Config], Awaitable[Receiver]], pki: Pki
) -> None:
    receiver = await start_receiver(
        write_config(client_certs="optional", routes=skip_route('["127.0.0.1/32"]'))
    )
    code, lines = await probe(receiver.port(), pki, secret="wrong-secret-0123456789")
    assert code == 1 and [line.split()[0] for line in lines] == ["PASS", "FAIL", "FAIL"]


async def test_from_outside_the_allowlist_the_secret_cannot_be_checked(
    write_config: Callable[..., Config], start_receiver: Callable[[Config], Awaitable[Receiver]], pki: Pki
) -> None:
    """The default allowlist is Efí's address: from here the route refuses before the hmac."""
    receiver = await start_receiver(
        write_config(client_certs="optional", routes=skip_route('["192.0.2.1/32"]'))
    )
    code, lines = await probe(receiver.port(), pki)
    assert code == 0 and [line.split()[0] for line in lines] == ["PASS", "SKIP", "SKIP"]
    assert "allowlist" in lines[1]


async def test_a_server_answering_everyone_fails(pki: Pki) -> None:
    """What the skip-mTLS registration must not meet: a URL that takes posts without the secret."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="200")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        code, lines = await probe(runner.addresses[0][1], pki)
    finally:
        await runner.cleanup()
    assert code == 1 and lines[0].startswith("FAIL") and "without the secret" in lines[0]
