"""Efí skip-mTLS: allowlist + URL hmac + certificate-when-presented, trusted proxies, PROXY protocol."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from support import REFUSED, Answer, Pki, client_context, https_post, pix, run_cli
from test_addresses import v2

from mtls_receiver.addresses import parse_networks
from mtls_receiver.config import Config, RouteConfig
from mtls_receiver.errors import Refusal
from mtls_receiver.events import IncomingRequest, Peer
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.providers import efi

SECRET, OLD_SECRET = "s3cr3t-abcdefghij-KLMNOP", "old-secret-0123456789"
WRONG = "x" * len(SECRET)  # right length, wrong value


def skip_route(allow: str = '["127.0.0.1/32"]') -> str:
    return (
        '[[routes]]\npath = "/webhook"\nprovider = "efi"\nmode = "skip-mtls"\n'
        f'allow_ips = {allow}\nhmac_secrets = [{{ env = "T_HMAC" }}, {{ env = "T_HMAC_OLD" }}]\n'
    )


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_HMAC", SECRET)
    monkeypatch.setenv("T_HMAC_OLD", OLD_SECRET)


# --- pure -----------------------------------------------------------------------------------------

ROUTE = RouteConfig(
    path="/webhook",
    listener="main",
    provider="efi",
    mode="skip-mtls",
    allow_ips=parse_networks(["34.193.116.226/32"]),
    options=efi.EfiOptions(hmac_secrets=(SECRET, OLD_SECRET)),
)


def req(query: str, address: str = "34.193.116.226", path: str = "/webhook") -> IncomingRequest:
    return IncomingRequest(
        "POST", path, query, {}, b'{"pix":[{"endToEndId":"E1","valor":"1.00","horario":"t"}]}', Peer(address)
    )


@pytest.mark.parametrize(
    ("path", "query", "kind"),
    [
        ("/webhook", f"hmac={SECRET}&ignorar=/pix", "pix"),
        ("/webhook", f"hmac={SECRET}&ignorar=", "test"),
        ("/webhook", f"hmac={SECRET}/pix", "pix"),
        ("/webhook", f"hmac={SECRET}", "test"),
        ("/webhook", f"hmac={OLD_SECRET}/rec", "rec"),
        ("/webhook/pix", f"hmac={SECRET}", "pix"),
        ("/webhook", f"hmac={SECRET.replace('-', '%2D')}&ignorar=/pix", "pix"),  # percent-encoded
    ],
)
def test_url_shapes_accepted(path: str, query: str, kind: str) -> None:
    request = IncomingRequest(
        "POST",
        path,
        query,
        {},
        b'{"recs":[{}]}' if kind == "rec" else req("").body,
        Peer("::ffff:34.193.116.226"),
    )
    assert efi.verify(ROUTE, request).kind == kind


@pytest.mark.parametrize(
    ("query", "address", "status", "check"),
    [
        (f"hmac={SECRET}&ignorar=/pix", "198.51.100.1", 403, "allowlist:"),
        ("ignorar=/pix", "34.193.116.226", 401, "hmac: the URL has no hmac"),
        (f"hmac={WRONG}&ignorar=/pix", "34.193.116.226", 401, "hmac: the URL's hmac value does not match"),
        (
            f"hmac={SECRET[:-1]}&ignorar=/pix",
            "34.193.116.226",
            401,
            "hmac: the URL's hmac value does not match",
        ),
        ("hmac=&ignorar=/pix", "34.193.116.226", 401, "hmac: the URL has no hmac"),
    ],
)
def test_each_check_alone_refuses(query: str, address: str, status: int, check: str) -> None:
    with pytest.raises(Refusal) as caught:
        efi.verify(ROUTE, req(query, address))
    assert caught.value.status == status and caught.value.reason.startswith(check.split()[0])
    assert check in caught.value.reason
    assert SECRET not in caught.value.reason and OLD_SECRET not in caught.value.reason


def test_registration_url_round_trips() -> None:
    url = efi.registration_url("https://h.example/webhook", "a/b+c=d" + SECRET)
    query = url.split("?", 1)[1] + "/pix"  # what Efí sends: the suffix appended to the string
    route = RouteConfig(
        path="/webhook",
        listener="m",
        provider="efi",
        mode="skip-mtls",
        options=efi.EfiOptions(hmac_secrets=("a/b+c=d" + SECRET,)),
    )
    assert efi.target("/webhook", "/webhook", query) == efi.Target(kind="pix", hmac="a/b+c=d" + SECRET)
    assert efi.verify(route, req(query)).kind == "pix"
    assert (
        efi.registration_url("https://h.example/webhook?x=1", "S")
        == "https://h.example/webhook?x=1&hmac=S&ignorar="
    )


# --- through the server (listener with optional client certificates) --------------------------------


@pytest.fixture
async def skip_receiver(write_config: Callable[..., Config], start_receiver) -> Receiver:  # type: ignore[no-untyped-def]
    return await start_receiver(write_config(client_certs="optional", routes=skip_route()))


async def test_all_checks_pass_without_certificate(skip_receiver: Receiver, pki: Pki) -> None:
    port = skip_receiver.port()
    for target in (f"/webhook?hmac={SECRET}&ignorar=/pix", f"/webhook?hmac={OLD_SECRET}/pix"):
        answer = await https_post(port, target, {"pix": [pix("E" + target[-5:])]}, client_context(pki))
        assert answer.status == 200, answer.body
    assert (
        await https_post(port, f"/webhook?hmac={SECRET}&ignorar=", b"", client_context(pki))
    ).status == 200
    assert len(await skip_receiver.store.list_events()) == 2


async def test_efi_certificate_when_presented_is_accepted(skip_receiver: Receiver, pki: Pki) -> None:
    answer = await https_post(
        skip_receiver.port(),
        f"/webhook?hmac={SECRET}/pix",
        {"pix": [pix("E1")]},
        client_context(pki, pki.client),
    )
    assert answer.status == 200
    assert (await skip_receiver.store.list_events())[0].client is not None


async def test_foreign_certificate_refused_although_optional(skip_receiver: Receiver, pki: Pki) -> None:
    with pytest.raises(REFUSED):
        await https_post(
            skip_receiver.port(),
            f"/webhook?hmac={SECRET}/pix",
            {"pix": [pix("E1")]},
            client_context(pki, pki.foreign_client),
        )
    assert await skip_receiver.store.list_events() == []


async def test_wrong_hmac_is_401_audited_and_not_echoed(skip_receiver: Receiver, pki: Pki) -> None:
    answer = await https_post(
        skip_receiver.port(), f"/webhook?hmac={WRONG}&ignorar=/pix", {"pix": [pix("E1")]}, client_context(pki)
    )
    assert answer.status == 401 and SECRET.encode() not in answer.body and WRONG.encode() not in answer.body
    (audit,) = await skip_receiver.store.list_audit()
    assert audit.status == 401 and audit.reason.startswith("hmac:") and "?" not in audit.path


async def test_address_outside_allowlist_is_403(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_receiver(
        write_config(client_certs="optional", routes=skip_route('["34.193.116.226/32"]'))
    )
    answer = await https_post(
        receiver.port(), f"/webhook?hmac={SECRET}/pix", {"pix": [pix("E1")]}, client_context(pki)
    )
    assert answer.status == 403 and b"allowlist" in answer.body
    assert (await receiver.store.list_audit())[0].reason.startswith("allowlist:")


async def test_dual_stack_listener_sees_mapped_ipv4(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    if not socket.has_dualstack_ipv6():
        pytest.skip("this machine has no dual-stack IPv6 sockets")
    receiver = await start_receiver(write_config(client_certs="optional", host="[::]", routes=skip_route()))
    answer = await https_post(
        receiver.port(), f"/webhook?hmac={SECRET}/pix", {"pix": [pix("E1")]}, client_context(pki)
    )
    assert answer.status == 200  # peer ::ffff:127.0.0.1 matched the IPv4 allowlist
    assert (await receiver.store.list_audit())[0].peer == "127.0.0.1"


async def post_with_headers(port: int, target: str, headers: dict[str, str], pki: Pki) -> int:
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(pki), server_hostname="localhost"
    )
    body = b'{"pix":[{"endToEndId":"EXFF","valor":"1.00","horario":"t"}]}'
    writer.write(
        f"POST {target} HTTP/1.1\r\nHost: localhost\r\n{extra}Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    raw = await reader.read()
    writer.close()
    return int(raw.split()[1])


async def test_forged_forwarded_for_from_untrusted_peer_is_ignored(
    write_config, start_receiver, pki: Pki
) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_receiver(
        write_config(client_certs="optional", routes=skip_route('["34.193.116.226/32"]'))
    )
    status = await post_with_headers(
        receiver.port(),
        f"/webhook?hmac={SECRET}/pix",
        {"X-Forwarded-For": "34.193.116.226", "Forwarded": "for=34.193.116.226"},
        pki,
    )
    assert status == 403
    assert (await receiver.store.list_audit())[0].peer == "127.0.0.1"


async def test_forwarded_for_from_trusted_proxy_is_used(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_receiver(
        write_config(
            client_certs="optional",
            routes=skip_route('["34.193.116.226/32"]'),
            listener_extra='trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]\n'
            'client_address_header = "X-Forwarded-For"\n',
        )
    )
    port, target = receiver.port(), f"/webhook?hmac={SECRET}/pix"
    assert (
        await post_with_headers(port, target, {"X-Forwarded-For": "1.2.3.4, 34.193.116.226, 10.0.0.7"}, pki)
        == 200
    )
    assert (
        await post_with_headers(port, target, {"X-Forwarded-For": "34.193.116.226, 198.51.100.1"}, pki) == 403
    )
    assert await post_with_headers(port, target, {"X-Forwarded-For": "34.193.116.226, nonsense"}, pki) == 400
    audits = await receiver.store.list_audit()
    assert [(a.status, a.peer) for a in audits] == [
        (400, "127.0.0.1"),
        (403, "198.51.100.1"),
        (200, "34.193.116.226"),
    ]


# --- PROXY protocol through a real TCP connection -------------------------------------------------


async def via_proxy(port: int, header: bytes, pki: Pki, cert: object = None) -> Answer:
    """Write the PROXY header bytes first, then do the TLS handshake on the same connection."""
    raw = socket.create_connection(("127.0.0.1", port))
    raw.sendall(header)
    reader, writer = await asyncio.open_connection(
        sock=raw, ssl=client_context(pki, cert), server_hostname="localhost"
    )  # type: ignore[arg-type]
    body = b'{"pix":[{"endToEndId":"EPP","valor":"1.00","horario":"t"}]}'
    try:
        writer.write(
            f"POST /webhook?hmac={SECRET}/pix HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    if not data:
        raise ConnectionResetError("closed without an answer")
    return Answer(int(data.split()[1]), data.partition(b"\r\n\r\n")[2])


@pytest.fixture
async def proxied(write_config, start_receiver) -> Receiver:  # type: ignore[no-untyped-def]
    return await start_receiver(
        write_config(
            client_certs="optional",
            routes=skip_route('["34.193.116.226/32", "2001:db8::/32"]'),
            listener_extra='trusted_proxies = ["127.0.0.1/32"]\nproxy_protocol = true\n',
        )
    )


@pytest.mark.parametrize(
    ("header", "peer"),
    [
        (b"PROXY TCP4 34.193.116.226 127.0.0.1 40000 443\r\n", "34.193.116.226"),
        (v2("34.193.116.226"), "34.193.116.226"),
        (v2("2001:db8::5"), "2001:db8::5"),
    ],
)
async def test_proxy_protocol_gives_real_client_address(
    proxied: Receiver, pki: Pki, header: bytes, peer: str
) -> None:
    answer = await via_proxy(proxied.port(), header, pki)
    assert answer.status == 200, answer.body
    assert (await proxied.store.list_audit())[0].peer == peer


async def test_proxy_protocol_keeps_mtls_end_to_end(proxied: Receiver, pki: Pki) -> None:
    answer = await via_proxy(proxied.port(), v2("34.193.116.226"), pki, pki.client)
    assert answer.status == 200
    assert (await proxied.store.list_events())[0].client is not None
    with pytest.raises(REFUSED):
        await via_proxy(proxied.port(), v2("34.193.116.226"), pki, pki.foreign_client)


async def test_proxy_header_source_outside_allowlist(proxied: Receiver, pki: Pki) -> None:
    answer = await via_proxy(proxied.port(), b"PROXY TCP4 198.51.100.1 127.0.0.1 40000 443\r\n", pki)
    assert answer.status == 403
    assert (await proxied.store.list_audit())[0].peer == "198.51.100.1"


async def test_local_command_uses_the_proxy_address(proxied: Receiver, pki: Pki) -> None:
    answer = await via_proxy(proxied.port(), v2("34.193.116.226", command=0), pki)
    assert answer.status == 403  # the balancer's own health check is not Efí
    assert (await proxied.store.list_audit())[0].peer == "127.0.0.1"


@pytest.mark.parametrize(
    "header",
    [b"", b"PROXY TCP4 nonsense\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", v2("34.193.116.226")[:-3]],
)  # truncated: eats the ClientHello
async def test_missing_or_malformed_header_closes_connection(
    proxied: Receiver, pki: Pki, header: bytes
) -> None:
    with pytest.raises(REFUSED + (asyncio.TimeoutError,)):
        await via_proxy(proxied.port(), header, pki)
    assert await proxied.store.list_audit() == []


async def test_proxy_header_from_untrusted_sender_closes(write_config, start_receiver, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    receiver = await start_receiver(
        write_config(
            client_certs="optional",
            routes=skip_route(),
            listener_extra='trusted_proxies = ["10.0.0.0/8"]\nproxy_protocol = true\n',
        )
    )
    with pytest.raises(REFUSED):
        await via_proxy(receiver.port(), b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 443\r\n", pki)
    assert await receiver.store.list_audit() == []


def test_hmac_url_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret_file = tmp_path / "efi-hmac"
    made = run_cli("efi", "hmac-url", "https://pix.example.com.br/webhook", "--secret-file", str(secret_file))
    assert made.returncode == 0, made.stderr
    secret = secret_file.read_text().strip()
    assert len(secret) >= 40 and secret_file.stat().st_mode & 0o777 == 0o600
    assert f"https://pix.example.com.br/webhook?hmac={secret}&ignorar=" in made.stdout
    assert (
        f'hmac_secrets = [{{ file = "{secret_file}" }}]' in made.stdout
        and 'mode = "skip-mtls"' in made.stdout
    )
    again = run_cli(
        "efi", "hmac-url", "https://pix.example.com.br/webhook", "--secret-file", str(secret_file)
    )
    assert f"hmac={secret}&ignorar=" in again.stdout  # an existing secret is reused
    fresh = run_cli("efi", "hmac-url", "https://pix.example.com.br/webhook")
    assert "EFI_WEBHOOK_HMAC" in fresh.stdout and secret not in fresh.stdout
