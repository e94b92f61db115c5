"""Public keys fetched from the sender's URL (a stand-in on loopback serving the key document), and
one request per asymmetric sender through a real receiver.

Rotation: a signature by a key not held makes one re-fetch, and the new key is accepted; a flood of
bad signatures does not make a fetch per request (the stand-in counts its hits); a fetch that fails
(server down, 500, too slow) keeps the keys held and never lets a request in."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support import Pki, Serve, client_context, config_text, https_post, run_cli
from support.asymmetric import (
    KeyStandIn,
    b64,
    ecdsa_key,
    ed25519_key,
    jwk,
    key_stand_in,
    kiwify_sign,
    pem,
    rsa_key,
    sign_ecdsa,
    sign_rsa,
)
from test_asymmetric import KIWIFY_EVENT, PAGARME_EVENT, STARK_EVENT, WOOVI_CHARGE, pagarme_header

from mtls_receiver.config import Config
from mtls_receiver.config import load_config as read_config
from mtls_receiver.errors import StaleKeys
from mtls_receiver.keysource import MAX_KEY_DOCUMENT, KeyFetchError, KeySource
from mtls_receiver.lifecycle import Receiver
from mtls_receiver.publickeys import NamedKey

StartReceiver = Callable[[Config], Awaitable[Receiver]]
ALGORITHM = "ecdsa-secp256k1-sha256"


def stark_document(*keys: ec.EllipticCurvePrivateKey) -> str:
    """Stark Bank's ``GET /v2/public-key`` answer."""
    return json.dumps(
        {"cursor": None, "publicKeys": [{"content": pem(key), "created": "2026"} for key in keys]}
    )


def source(url: str, **options: float) -> KeySource:
    return KeySource(ALGORITHM, url=url, key_format="list", **options)  # type: ignore[arg-type]


# --- the key source -------------------------------------------------------------------------------


async def test_rotation_fetches_once_and_floods_do_not_fetch() -> None:
    old, new = ecdsa_key(), ecdsa_key()
    async with key_stand_in(stark_document(old)) as standin:
        keys = source(standin.url)
        await keys.load()
        assert standin.hits == 1 and len(keys.keys) == 1
        standin.document = stark_document(new, old)
        assert await keys.refresh() is True  # the first failure after start re-fetches at once
        assert standin.hits == 2 and len(keys.keys) == 2
        for _ in range(50):  # a flood of bad signatures within the interval: no fetch
            assert await keys.refresh() is False
        assert standin.hits == 2


async def test_concurrent_failures_share_one_fetch() -> None:
    async with key_stand_in(stark_document(ecdsa_key())) as standin:
        keys = source(standin.url)
        standin.delay = 0.2
        results = await asyncio.gather(*(keys.refresh() for _ in range(20)))
        assert standin.hits == 1 and all(results)


async def test_same_keys_again_is_not_news() -> None:
    async with key_stand_in(stark_document(ecdsa_key())) as standin:
        keys = source(standin.url)
        await keys.load()
        assert await keys.refresh() is False and standin.hits == 2


BREAKS: dict[str, Callable[[KeyStandIn], None]] = {
    "500": lambda standin: setattr(standin, "status", 500),
    "timeout": lambda standin: setattr(standin, "delay", 2.0),
    "not a key": lambda standin: setattr(standin, "document", '{"publicKeys": []}'),
    "wrong key type": lambda standin: setattr(
        standin, "document", json.dumps({"publicKeys": [{"content": pem(rsa_key())}]})
    ),
    "down": lambda standin: None,  # checked once the stand-in is gone: connection refused
}


@pytest.mark.parametrize("failure", list(BREAKS))
async def test_a_failed_fetch_keeps_the_keys_held(failure: str) -> None:
    held = ecdsa_key()
    async with key_stand_in(stark_document(held)) as standin:
        keys = source(standin.url, timeout=0.3)
        await keys.load()
        BREAKS[failure](standin)
        if failure != "down":
            await assert_kept(keys, held)
    if failure == "down":
        await assert_kept(keys, held)


async def assert_kept(keys: KeySource, held: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(KeyFetchError):
        await keys.load()
    assert await keys.refresh() is False
    assert [pem_of(named) for named in keys.keys] == [pem(held)]


def pem_of(named: NamedKey) -> str:
    der = named.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der.decode()


async def test_fetch_sends_the_configured_headers(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_KEY_TOKEN", "Bearer token-1")
    async with key_stand_in(stark_document(ecdsa_key())) as standin:
        route = stark_route(
            tmp_path,
            pki,
            f'public_key_url = "{standin.url}"\n'
            'key_fetch_headers = { Authorization = { env = "T_KEY_TOKEN" } }\n',
        )
        (keys,) = route.options.key_sources()
        await keys.load()
        assert standin.headers_seen[0]["Authorization"] == "Bearer token-1"


def stark_route(tmp_path: Path, pki: Pki, keys: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    routes = f'[[routes]]\npath = "/stark"\nprovider = "starkbank"\n{keys}'
    path.write_text(config_text(pki, client_certs="none", routes=routes), encoding="utf-8")
    return read_config(path).routes[0]


# --- through a real receiver ----------------------------------------------------------------------


def write(tmp_path: Path, pki: Pki, routes: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(config_text(pki, client_certs="none", routes=routes), encoding="utf-8")
    return read_config(path)


async def post(receiver: Receiver, pki: Pki, path: str, body: bytes, headers: dict[str, str]) -> int:
    answer = await https_post(receiver.port(), path, body, client_context(pki), headers=headers)
    return answer.status


async def stored(receiver: Receiver, route: str) -> int:
    return len(await receiver.store.list_events(route=route))


def fetches(receiver: Receiver, route: str) -> dict[str, float]:
    """``mtls_receiver_public_key_fetches`` of a route, by outcome."""
    registry = receiver.metrics.registry
    return {
        outcome: registry.get_sample_value(
            "mtls_receiver_public_key_fetches_total", {"route": route, "outcome": outcome}
        )
        or 0.0
        for outcome in ("ok", "failed")
    }


async def test_starkbank_key_rotation_through_the_receiver(
    tmp_path: Path, pki: Pki, start_receiver: StartReceiver
) -> None:
    old, new, stranger = ecdsa_key(), ecdsa_key(), ecdsa_key()
    body = json.dumps(STARK_EVENT).encode()
    async with key_stand_in(stark_document(old)) as standin:
        receiver = await start_receiver(
            write(
                tmp_path,
                pki,
                f'[[routes]]\npath = "/stark"\nprovider = "starkbank"\npublic_key_url = "{standin.url}"\n',
            )
        )
        assert standin.hits == 1  # fetched at start
        signed = {"Digital-Signature": b64(sign_ecdsa(old, body))}
        assert await post(receiver, pki, "/stark", body, signed) == 200
        standin.document = stark_document(new)  # Stark Bank rotates
        resent = {"Digital-Signature": b64(sign_ecdsa(new, body))}
        assert await post(receiver, pki, "/stark", body, resent) == 200  # one re-fetch, then accepted
        assert standin.hits == 2
        assert await stored(receiver, "/stark") == 1  # the same event, stored once
        bad = {"Digital-Signature": b64(sign_ecdsa(stranger, body))}
        statuses = [await post(receiver, pki, "/stark", body, bad) for _ in range(10)]
        assert statuses == [401] * 10 and standin.hits == 2  # no fetch per request
        assert fetches(receiver, "/stark") == {"ok": 2.0, "failed": 0.0}


async def test_no_key_fetched_refuses_with_503(
    tmp_path: Path, pki: Pki, start_receiver: StartReceiver
) -> None:
    key = ecdsa_key()
    body = json.dumps(STARK_EVENT).encode()
    async with key_stand_in(stark_document(key)) as standin:
        standin.status = 500
        receiver = await start_receiver(
            write(
                tmp_path,
                pki,
                f'[[routes]]\npath = "/stark"\nprovider = "starkbank"\npublic_key_url = "{standin.url}"\n',
            )
        )  # a failed start-up fetch does not stop the receiver
        answer = await https_post(
            receiver.port(),
            "/stark",
            body,
            client_context(pki),
            headers={"Digital-Signature": b64(sign_ecdsa(key, body))},
        )
        assert answer.status == 503 and answer.headers["retry-after"]
        assert standin.hits == 2  # start, then one re-fetch on the first request
        standin.status = 200  # back, but within the interval: nothing lets the request in unfetched
        assert (
            await post(receiver, pki, "/stark", body, {"Digital-Signature": b64(sign_ecdsa(key, body))})
            == 503
        )
        assert await stored(receiver, "/stark") == 0
        assert fetches(receiver, "/stark") == {"ok": 0.0, "failed": 2.0}


async def test_woovi_and_public_key_through_the_receiver(
    tmp_path: Path, pki: Pki, start_receiver: StartReceiver
) -> None:
    woovi_key, sender = rsa_key(), ed25519_key()
    (tmp_path / "woovi.pem").write_text(pem(woovi_key))
    (tmp_path / "sender.pem").write_text(pem(sender))
    receiver = await start_receiver(
        write(
            tmp_path,
            pki,
            '[[routes]]\npath = "/woovi"\nprovider = "woovi"\npublic_key_file = "woovi.pem"\n'
            '[[routes]]\npath = "/other"\nprovider = "public-key"\npublic_key_file = "sender.pem"\n'
            'dedup = ["/id"]\n[routes.signature]\nalgorithm = "ed25519"\nheader = "X-Sig"\n',
        )
    )
    body = json.dumps(WOOVI_CHARGE).encode()
    for _ in range(2):  # resent: stored once
        assert (
            await post(receiver, pki, "/woovi", body, {"x-webhook-signature": b64(sign_rsa(woovi_key, body))})
            == 200
        )
    assert await stored(receiver, "/woovi") == 1
    assert (
        await post(receiver, pki, "/woovi", body, {"x-webhook-signature": b64(sign_rsa(rsa_key(), body))})
        == 401
    )
    other = b'{"id": "o-1"}'
    for _ in range(2):
        assert await post(receiver, pki, "/other", other, {"X-Sig": b64(sender.sign(other))}) == 200
    assert await stored(receiver, "/other") == 1


async def test_pagarme_v5_jwks_rotation_through_the_receiver(
    tmp_path: Path, pki: Pki, start_receiver: StartReceiver
) -> None:
    key, rotated = rsa_key(), rsa_key()
    body = json.dumps(PAGARME_EVENT).encode()
    async with key_stand_in(json.dumps({"keys": [jwk(key, "k1")]})) as standin:
        receiver = await start_receiver(
            write(
                tmp_path,
                pki,
                '[[routes]]\npath = "/pagarme"\nprovider = "pagarme"\nmode = "v5"\n'
                f'public_key_url = "{standin.url}"\n',
            )
        )
        assert await post(receiver, pki, "/pagarme", body, pagarme_header(key, body, kid="k1")) == 200
        standin.document = json.dumps({"keys": [jwk(key, "k1"), jwk(rotated, "k2")]})
        assert await post(receiver, pki, "/pagarme", body, pagarme_header(rotated, body, kid="k2")) == 200
        assert standin.hits == 2 and await stored(receiver, "/pagarme") == 1
        for _ in range(5):
            assert await post(receiver, pki, "/pagarme", body, pagarme_header(key, body, kid="k9")) == 401
        assert standin.hits == 2


async def test_kiwify_banking_through_the_receiver(
    tmp_path: Path, pki: Pki, start_receiver: StartReceiver
) -> None:
    key = ed25519_key()
    (tmp_path / "kiwify.pem").write_text(pem(key))
    receiver = await start_receiver(
        write(
            tmp_path,
            pki,
            '[[routes]]\npath = "/kiwify"\nprovider = "kiwify"\nmode = "banking"\n'
            'public_key_file = "kiwify.pem"\n',
        )
    )
    body = json.dumps(KIWIFY_EVENT).encode()
    for _ in range(2):  # a retry is signed again with its own timestamp
        ts = str(int(time.time() * 1000))
        headers = {
            "x-kiwify-digital-signature": kiwify_sign(key, "/kiwify", body, ts),
            "x-kiwify-timestamp": ts,
        }
        assert await post(receiver, pki, "/kiwify", body, headers) == 200
    assert await stored(receiver, "/kiwify") == 1
    stale = str(int(time.time() * 1000) - 600_000)
    headers = {
        "x-kiwify-digital-signature": kiwify_sign(key, "/kiwify", body, stale),
        "x-kiwify-timestamp": stale,
    }
    assert await post(receiver, pki, "/kiwify", body, headers) == 401


def test_stale_keys_is_a_refusal_carrying_its_source() -> None:
    keys = source("https://keys.example/k")
    refusal = StaleKeys(401, "signature: matches no trusted public key", keys)
    assert refusal.source is keys and refusal.status == 401 and not refusal.headers
    assert StaleKeys(503, "no keys yet", keys).headers == {"Retry-After": "30"}


async def test_a_reload_fetches_the_new_configurations_keys(
    tmp_path: Path, pki: Pki, start_receiver: StartReceiver
) -> None:
    key = ecdsa_key()
    body = json.dumps(STARK_EVENT).encode()
    async with key_stand_in(stark_document(key)) as standin:
        route = f'[[routes]]\npath = "/stark"\nprovider = "starkbank"\npublic_key_url = "{standin.url}"\n'
        receiver = await start_receiver(write(tmp_path, pki, route))
        write(tmp_path, pki, route + "refetch_interval = 300\n")
        assert await receiver.reload() and standin.hits == 2  # fetched before the new routes apply
        assert (
            await post(receiver, pki, "/stark", body, {"Digital-Signature": b64(sign_ecdsa(key, body))})
            == 200
        )


def test_workers_receive_the_keys_in_their_pickled_configuration(
    serve: Serve, tmp_path: Path, pki: Pki
) -> None:
    """A supervisor hands each worker its configuration pickled: the public keys travel with it."""
    key = rsa_key()
    (tmp_path / "woovi.pem").write_text(pem(key))
    routes = '[[routes]]\npath = "/woovi"\nprovider = "woovi"\npublic_key_file = "woovi.pem"\n'
    _, port = serve(workers=2, client_certs="none", routes=routes)
    body = json.dumps(WOOVI_CHARGE).encode()

    async def send_all() -> list[int]:
        sends = (
            https_post(
                port,
                "/woovi",
                body,
                client_context(pki),
                headers={"x-webhook-signature": b64(sign_rsa(key, body))},
            )
            for _ in range(6)
        )
        return [answer.status for answer in await asyncio.gather(*sends)]

    assert asyncio.run(send_all()) == [200] * 6


SEND_TEST_ROUTES = """\
[[listeners]]
address = "127.0.0.1:0"
cert = "server.pem"
key = "server.key"
client_certs = "none"

[[routes]]
path = "/stark"
provider = "starkbank"
public_key_file = "stark.pem"
dev_signing_key = "dev-signing-ecdsa-secp256k1.pem"

[[routes]]
path = "/woovi"
provider = "woovi"
dev_signing_key = "dev-signing-rsa.pem"

[[routes]]
path = "/pagarme"
provider = "pagarme"
mode = "v5"
public_key_file = "jwks.json"
dev_signing_key = "dev-signing-rsa.pem"

[[routes]]
path = "/kiwify"
provider = "kiwify"
mode = "banking"
public_key_file = "kiwify.pem"
dev_signing_key = "dev-signing-ed25519.pem"

[[routes]]
path = "/other"
provider = "public-key"
public_key_file = "kiwify.pem"
dev_signing_key = "dev-signing-ed25519.pem"
[routes.signature]
algorithm = "ed25519"
header = "X-Signature"

[store]
path = "inbox.db"

[admin]
address = "127.0.0.1:0"
"""


def test_send_test_signs_with_the_dev_keys_dev_certs_writes(tmp_path: Path, serve: Serve) -> None:
    """``dev-certs`` writes the local signing keys; each route trusts its own; ``send-test`` signs as the
    sender would and the receiver accepts it (the sender's own keys are other keys)."""
    directory = tmp_path / "dev"
    assert run_cli("dev-certs", str(directory), "--port", "0").returncode == 0
    (directory / "stark.pem").write_text(pem(ecdsa_key()))
    (directory / "jwks.json").write_text(json.dumps({"keys": [jwk(rsa_key(), "pagarme-1")]}))
    (directory / "kiwify.pem").write_text(pem(ed25519_key()))
    config = directory / "asymmetric.toml"
    config.write_text(SEND_TEST_ROUTES, encoding="utf-8")
    checked = run_cli("check-config", "--config", str(config))
    assert checked.stdout.count("TRUSTS A LOCAL DEV SIGNING KEY") == 5, checked.stdout + checked.stderr
    server, port = serve(config)
    for path in ("/stark", "/woovi", "/pagarme", "/kiwify", "/other"):
        sent = run_cli("send-test", path, "--config", str(config), "--url", f"https://127.0.0.1:{port}{path}")
        assert sent.returncode == 0 and "< 200 OK" in sent.stdout, sent.stdout + sent.stderr
    # the server running with them says so in its log too, not only check-config
    warned = [line for line in server.output if "TRUSTS A LOCAL DEV SIGNING KEY" in line]
    assert len(warned) == 5 and all("WARNING route /" in line for line in warned), server.output


async def test_a_document_arriving_in_pieces_is_read_whole_and_its_size_bounded() -> None:
    """A key document sent in several pieces (chunked, a slow link) is read to its end; one larger than
    MAX_KEY_DOCUMENT is refused as such however it arrives."""
    held = ecdsa_key()
    whole = stark_document(held).encode()
    sent: dict[str, bytes] = {"document": whole}

    async def in_pieces(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        document = sent["document"]
        piece = 40 if len(document) < MAX_KEY_DOCUMENT else 100_000
        for start in range(0, len(document), piece):
            await response.write(document[start : start + piece])
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/keys", in_pieces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        keys = source(f"http://127.0.0.1:{runner.addresses[0][1]}/keys")
        await keys.load()
        assert [pem_of(named) for named in keys.keys] == [pem(held)]
        sent["document"] = whole + b" " * MAX_KEY_DOCUMENT
        with pytest.raises(KeyFetchError, match="larger than"):
            await keys.load()
        assert [pem_of(named) for named in keys.keys] == [pem(held)]
    finally:
        await runner.cleanup()
