"""Senders that sign with a private key (Stark Bank, Woovi, Pagar.me v5, Kiwify banking, ``public-key``):
the published vectors V1 and V2 (tests/vectors, copied byte for byte from /work/shared/vectors), and
signatures made here with keys made here, by each sender's documented algorithm (``support.asymmetric``
calls ``cryptography`` directly, never the code under test). Verifier level: pure functions."""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from support import Pki, config_text
from support.asymmetric import (
    SECP256K1_ORDER,
    b64,
    b64url,
    ecdsa_key,
    ed25519_key,
    high_s,
    jwk,
    kiwify_sign,
    pem,
    rsa_key,
    sign_ecdsa,
    sign_rsa,
    write_private_key,
)

from mtls_receiver import publickeys
from mtls_receiver.config import ListenerConfig, RouteConfig, load_config
from mtls_receiver.config.reader import Reader
from mtls_receiver.errors import ConfigError, ReceiverError, Refusal, StaleKeys
from mtls_receiver.events import IncomingRequest, Peer, Verdict
from mtls_receiver.providers import public_key, starkbank, woovi
from mtls_receiver.providers.base import RouteContext
from mtls_receiver.providers.kiwify import banking
from mtls_receiver.providers.pagarme import core_api

VECTORS = Path(__file__).parent / "vectors"
NOW = 1_763_900_000.0
PEER = Peer("203.0.113.10")

Verify = Callable[[RouteConfig, IncomingRequest], Verdict]


def request(headers: dict[str, str], body: bytes, path: str = "/hooks", now: float = NOW) -> IncomingRequest:
    return IncomingRequest(
        "POST", path, "", {"Content-Type": "application/json", **headers}, body, PEER, now=now
    )


def refused(verify: Verify, route: RouteConfig, req: IncomingRequest) -> Refusal:
    with pytest.raises(Refusal) as caught:
        verify(route, req)
    return caught.value


def flipped(data: bytes) -> Iterator[bytes]:
    for i in range(len(data)):
        yield data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


@pytest.fixture
def make_route(tmp_path: Path, pki: Pki) -> Callable[[str], RouteConfig]:
    """The first route of a config holding ``routes`` (a ``[[routes]]`` table as a user writes it)."""

    def make(routes: str) -> RouteConfig:
        path = tmp_path / "config.toml"
        path.write_text(config_text(pki, client_certs="none", routes=routes), encoding="utf-8")
        return load_config(path).routes[0]

    return make


@pytest.fixture
def mode_route(tmp_path: Path, pki: Pki) -> Callable[..., RouteConfig]:
    """A route of a mode module (Pagar.me v5, Kiwify banking) whose provider package the lead wires:
    its options read by the module's own ``parse_options`` from route keys as a user writes them."""
    listener = ListenerConfig("main", "127.0.0.1", 0, pki.server_cert, pki.server_key, client_certs="none")

    def make(module: ModuleType, mode: str, keys: str, tolerance: int | None = None) -> RouteConfig:
        source = _write(tmp_path, keys)
        context = RouteContext(key="routes[0]", mode=mode, tolerance=tolerance, listener=listener)
        options = module.parse_options(Reader(source), tomllib.loads(keys), context)
        return RouteConfig(
            path="/hooks", listener="main", provider=mode, mode=mode, tolerance=tolerance, options=options
        )

    return make


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_error(make_route: Callable[[str], RouteConfig], routes: str) -> str:
    with pytest.raises(ConfigError) as caught:
        make_route(routes)
    return str(caught.value)


# --- the published vectors ------------------------------------------------------------------------


def test_v1_stark_bank_vector_is_high_s_and_verifies(
    tmp_path: Path, make_route: Callable[[str], RouteConfig]
) -> None:
    message, der = (VECTORS / "sb_message.txt").read_bytes(), (VECTORS / "sb_sig.der").read_bytes()
    assert (
        hashlib.sha256(message).hexdigest()
        == "d94b9ba3e7dd18a7a265b4d619286c0615ccb24817bb6898578c160a0fec4baa"
    )
    assert (
        b64(der)
        == "MEUCIDikzsVncmseP3L+9PRUFFKzcP7dfHCXe9HTFoYfe4RBAiEA+9AW5nbvNuXMRZjxVeCmBMeEfojHwlAEdIPw7ayCmwU="
    )
    assert decode_dss_signature(der)[1] > SECP256K1_ORDER // 2  # high-S, as VECTORS.md says
    (key,) = publickeys.parse_key_document((VECTORS / "sb_pub.pem").read_bytes(), "pem", "V1")
    assert publickeys.verify("ecdsa-secp256k1-sha256", key.key, der, message)
    # through the Stark Bank verifier: the signature passes, the body (not an event) is then refused
    route = make_route(
        f'[[routes]]\npath = "/hooks"\nprovider = "starkbank"\npublic_key_file = "{VECTORS / "sb_pub.pem"}"\n'
    )
    headers = {"Digital-Signature": b64(der)}
    assert "'event' object" in refused(starkbank.verify, route, request(headers, message)).reason
    for body in flipped(message):
        assert refused(starkbank.verify, route, request(headers, body)).status == 401


def test_a_body_nested_too_deep_is_refused(make_route: Callable[[str], RouteConfig]) -> None:
    """Stark Bank's second signed message is the body re-dumped: parsed before any signature is checked,
    so anyone could send it. Nested too deep for the parser, it is refused (was: RecursionError, 500)."""
    route = make_route(
        f'[[routes]]\npath = "/hooks"\nprovider = "starkbank"\npublic_key_file = "{VECTORS / "sb_pub.pem"}"\n'
    )
    deep = b"[" * 100_000 + b"]" * 100_000
    headers = {"Digital-Signature": b64(b"\x30\x06\x02\x01\x01\x02\x01\x01")}
    assert refused(starkbank.verify, route, request(headers, deep)).status == 401
    with pytest.raises(publickeys.KeyDocumentError, match="not valid JSON"):
        publickeys.parse_key_document(b'{"keys":' * 100_000, "jwks", "a key URL")


def test_v2_woovi_vector_with_the_built_in_key(make_route: Callable[[str], RouteConfig]) -> None:
    payload, signature = (
        (VECTORS / "woovi_payload.txt").read_bytes(),
        (VECTORS / "woovi_sig.bin").read_bytes(),
    )
    assert (
        hashlib.sha256(payload).hexdigest()
        == "c59479a2d7d9661fe40527aea47e3d4450ac866db59fe878c5ab185d1fac33ff"
    )
    route = make_route('[[routes]]\npath = "/hooks"\nprovider = "woovi"\n')
    verdict = woovi.verify(route, request({"x-webhook-signature": b64(signature)}, payload))
    assert verdict.kind == "charge"
    assert verdict.events[0].dedup_key == "charge:charge:417bae21-3d08-4cdb-9c2d-fee63c89e9e4:COMPLETED"
    # the same test's negative cases: another payload, the signature "no"
    other = request({"x-webhook-signature": b64(signature)}, b'{ "payload": "invalid" }')
    assert refused(woovi.verify, route, other).status == 401
    assert refused(woovi.verify, route, request({"x-webhook-signature": "no"}, payload)).status == 401
    # the built-in keys are Woovi's published ones (key_identifier = SHA-256 of the DER key)
    (prod,) = woovi.BUILT_IN_KEYS["production"]
    assert pem_of(prod.key) == (VECTORS / "woovi_pub.pem").read_text()
    assert publickeys.key_id(prod.key) == "9dce618794f8986c603915a51b7029126c260e5cfdb2aa47e131d837fd62311c"
    (sandbox,) = woovi.BUILT_IN_KEYS["sandbox"]
    assert pem_of(sandbox.key) == (VECTORS / "woovi_sandbox_pub.pem").read_text()
    assert (
        publickeys.key_id(sandbox.key) == "7c8efa31466209cf247d23f6198a61643b8c322a0d80ea6d0a7a54073b2d6e91"
    )
    sandbox_route = make_route('[[routes]]\npath = "/hooks"\nprovider = "woovi"\nenvironment = "sandbox"\n')
    prod_signed = request({"x-webhook-signature": b64(signature)}, payload)
    assert refused(woovi.verify, sandbox_route, prod_signed).status == 401


def pem_of(key: publickeys.PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# --- key documents --------------------------------------------------------------------------------


def test_key_documents_list_every_key() -> None:
    a, b = rsa_key(), rsa_key()
    both_pem = (pem(a) + pem(b)).encode()
    assert len(publickeys.parse_key_document(both_pem, "pem", "file")) == 2
    stark = json.dumps({"cursor": None, "publicKeys": [{"content": pem(a), "created": "2026-01-01"}]})
    assert len(publickeys.parse_key_document(stark.encode(), "list", "url")) == 1
    woovi_list = {
        "public_keys": [
            {"key_identifier": "new", "is_current": True, "key": pem(a)},
            {"key_identifier": "old", "is_current": False, "key": pem(b)},  # still listed: still trusted
        ]
    }
    keys = publickeys.parse_key_document(json.dumps(woovi_list).encode(), "list", "url")
    assert [key.kid for key in keys] == ["new", "old"]
    ed_a, ed_b = ed25519_key(), ed25519_key()
    raw_b = ed_b.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kiwify_list = {
        "data": [
            {"id": "k1", "public_key": pem(ed_a), "is_active": True},
            {"id": "k0", "public_key": b64(raw_b), "is_active": False},  # inactive: left out
        ]
    }
    assert [
        key.kid for key in publickeys.parse_key_document(json.dumps(kiwify_list).encode(), "list", "u")
    ] == ["k1"]
    jwks = {
        "keys": [
            jwk(a, "k-a"),
            jwk(b, "k-b", alg="RS512"),
            {"kty": "EC", "kid": "ec"},
            jwk(b, "k-enc", use="enc"),
        ]
    }
    (only,) = publickeys.parse_key_document(json.dumps(jwks).encode(), "jwks", "jwks")
    assert only.kid == "k-a" and pem_of(only.key) == pem(a)
    junk_then_good = {
        "publicKeys": [{"content": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}, pem(a)]
    }
    assert len(publickeys.parse_key_document(json.dumps(junk_then_good).encode(), "list", "u")) == 1
    for document, key_format in ((b"not json", "list"), (b'{"keys": []}', "jwks"), (b"no key here", "pem")):
        with pytest.raises(publickeys.KeyDocumentError):
            publickeys.parse_key_document(document, key_format, "x")


# --- Stark Bank -----------------------------------------------------------------------------------

STARK_EVENT = {
    "event": {
        "id": "5656565656565656",
        "subscription": "invoice",
        "created": "2026-01-01T00:00:00.000000+00:00",
        "isDelivered": False,
        "workspaceId": "5000000000000000",
        "log": {"id": "1", "type": "paid", "invoice": {"id": "4600000000000000", "amount": 100}},
    }
}


@pytest.fixture
def stark(
    tmp_path: Path, make_route: Callable[[str], RouteConfig]
) -> tuple[ec.EllipticCurvePrivateKey, RouteConfig]:
    key = ecdsa_key()
    (tmp_path / "stark.pem").write_text(pem(key))
    route = make_route('[[routes]]\npath = "/hooks"\nprovider = "starkbank"\npublic_key_file = "stark.pem"\n')
    return key, route


def test_starkbank_valid_resent_changed_wrong_key_missing(
    stark: tuple[ec.EllipticCurvePrivateKey, RouteConfig],
) -> None:
    key, route = stark
    body = json.dumps(STARK_EVENT).encode()
    first = starkbank.verify(route, request({"Digital-Signature": b64(sign_ecdsa(key, body))}, body))
    assert first.kind == "invoice.paid" and first.events[0].dedup_key == "event:5656565656565656"
    again = starkbank.verify(route, request({"Digital-Signature": b64(sign_ecdsa(key, body))}, body))
    assert again.events[0].dedup_key == first.events[0].dedup_key  # a resend is the same event
    signature = b64(sign_ecdsa(key, body))
    for changed in flipped(body):
        assert (
            refused(starkbank.verify, route, request({"Digital-Signature": signature}, changed)).status == 401
        )
    wrong = b64(sign_ecdsa(ecdsa_key(), body))
    refusal = refused(starkbank.verify, route, request({"Digital-Signature": wrong}, body))
    assert refusal.status == 401 and not isinstance(refusal, StaleKeys)  # a file's keys are not re-fetched
    assert "Digital-Signature header missing" in refused(starkbank.verify, route, request({}, body)).reason
    assert refused(starkbank.verify, route, request({"Digital-Signature": "!!"}, body)).status == 401


def test_starkbank_accepts_high_s_and_the_sdks_sorted_redump(
    stark: tuple[ec.EllipticCurvePrivateKey, RouteConfig],
) -> None:
    key, route = stark
    body = json.dumps(STARK_EVENT, indent=2).encode()
    low = sign_ecdsa(key, body)
    for signature in (low, high_s(low)):
        assert starkbank.verify(route, request({"Digital-Signature": b64(signature)}, body)).events
    assert decode_dss_signature(high_s(low))[1] > SECP256K1_ORDER // 2
    # the Python SDK also accepts a signature over json.dumps(json.loads(body), sort_keys=True)
    redump = json.dumps(json.loads(body), sort_keys=True).encode()
    assert redump != body
    assert starkbank.verify(route, request({"Digital-Signature": b64(sign_ecdsa(key, redump))}, body)).events


# --- Woovi ----------------------------------------------------------------------------------------

WOOVI_CHARGE = {
    "event": "OPENPIX:CHARGE_COMPLETED",
    "charge": {"status": "COMPLETED", "correlationID": "c-1", "value": 100},
    "pix": {"transactionID": "tx-1", "endToEndId": "E1"},
}


def test_woovi_every_listed_key_valid_resent_changed_wrong_missing(
    tmp_path: Path, make_route: Callable[[str], RouteConfig]
) -> None:
    current, previous = rsa_key(), rsa_key(1024)
    document = {
        "public_keys": [
            {"key_identifier": "new", "is_current": True, "key": pem(current)},
            {"key_identifier": "old", "is_current": False, "key": pem(previous)},
        ]
    }
    (tmp_path / "woovi.json").write_text(json.dumps(document))
    route = make_route('[[routes]]\npath = "/hooks"\nprovider = "woovi"\npublic_key_file = "woovi.json"\n')
    body = json.dumps(WOOVI_CHARGE).encode()
    for key in (current, previous):
        verdict = woovi.verify(route, request({"x-webhook-signature": b64(sign_rsa(key, body))}, body))
        assert verdict.kind == "OPENPIX:CHARGE_COMPLETED"
        assert verdict.events[0].dedup_key == "OPENPIX:CHARGE_COMPLETED:charge:c-1"
    pix_only = json.dumps(
        {"event": "OPENPIX:TRANSACTION_RECEIVED", "pix": {"transactionID": "tx-9"}}
    ).encode()
    verdict = woovi.verify(
        route, request({"x-webhook-signature": b64(sign_rsa(current, pix_only))}, pix_only)
    )
    assert verdict.events[0].dedup_key == "OPENPIX:TRANSACTION_RECEIVED:pix:tx-9"
    ping = (
        b'{"data_criacao":"2021-08-10T20:32:14.429Z","evento":"teste_webhook",'
        b'"event":"OPENPIX:CHARGE_COMPLETED"}'
    )
    assert (
        woovi.verify(route, request({"x-webhook-signature": b64(sign_rsa(current, ping))}, ping)).kind
        == "teste_webhook"
    )
    signature = b64(sign_rsa(current, body))
    for changed in flipped(body):
        assert (
            refused(woovi.verify, route, request({"x-webhook-signature": signature}, changed)).status == 401
        )
    wrong = b64(sign_rsa(rsa_key(), body))
    assert refused(woovi.verify, route, request({"x-webhook-signature": wrong}, body)).status == 401
    assert refused(woovi.verify, route, request({}, body)).status == 401
    # the deprecated HMAC header alone does not authenticate
    assert (
        refused(
            woovi.verify, route, request({"X-OpenPix-Signature": "jgR2XF0PKDiAwHP1s+TryvxMySQ="}, body)
        ).status
        == 401
    )


# --- Pagar.me v5 ----------------------------------------------------------------------------------

PAGARME_EVENT = {
    "id": "hook_RyEKQO789TRpZjv5",
    "account": {"id": "acc_1", "name": "Loja"},
    "type": "order.paid",
    "created_at": "2026-01-01T00:00:00.000Z",
    "data": {"id": "or_1", "code": "ORDER-1", "status": "paid"},
}


def pagarme_header(
    key: rsa.RSAPrivateKey, body: bytes, kid: str = "kid-1", alg: str = "RS256"
) -> dict[str, str]:
    """``alg=RS256; kid=...; signature=<base64url of RSASSA-PKCS1-v1_5 SHA-256 over the raw body>``."""
    return {
        "X-Webhook-Asymmetric-Signature": f"alg={alg}; kid={kid}; signature={b64url(sign_rsa(key, body))}"
    }


def test_pagarme_v5_kid_selects_valid_resent_changed_wrong_missing(
    tmp_path: Path, mode_route: Callable[..., RouteConfig]
) -> None:
    key, other = rsa_key(), rsa_key()
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk(other, "kid-0"), jwk(key, "kid-1")]}))
    route = mode_route(core_api, "v5", 'public_key_file = "jwks.json"')
    body = json.dumps(PAGARME_EVENT).encode()
    verdict = core_api.verify(route, request(pagarme_header(key, body), body))
    assert verdict.kind == "order.paid"
    assert verdict.events[0].dedup_key == "order.paid:hook_RyEKQO789TRpZjv5:ORDER-1"
    assert core_api.verify(route, request(pagarme_header(key, body), body)).events == verdict.events
    header = pagarme_header(key, body)
    for changed in flipped(body):
        assert refused(core_api.verify, route, request(header, changed)).status == 401
    # the kid selects: the other listed key's signature under kid-1 is refused, under kid-0 accepted
    assert refused(core_api.verify, route, request(pagarme_header(other, body), body)).status == 401
    assert core_api.verify(route, request(pagarme_header(other, body, kid="kid-0"), body)).events
    unknown = refused(core_api.verify, route, request(pagarme_header(key, body, kid="kid-9"), body))
    assert unknown.status == 401 and "'kid-9'" in unknown.reason
    for alg in ("RS512", "none", "HS256"):
        assert (
            "not RS256"
            in refused(core_api.verify, route, request(pagarme_header(key, body, alg=alg), body)).reason
        )
    assert "header missing" in refused(core_api.verify, route, request({}, body)).reason
    no_kid = {"X-Webhook-Asymmetric-Signature": f"alg=RS256; signature={b64url(sign_rsa(key, body))}"}
    assert refused(core_api.verify, route, request(no_kid, body)).status == 401


def test_pagarme_v5_defaults_to_pagarmes_jwks(mode_route: Callable[..., RouteConfig]) -> None:
    route = mode_route(core_api, "v5", "")
    assert route.options.key_sources()[0].description == "https://hubapi.pagar.me/.well-known/jwks.json"
    body = json.dumps(PAGARME_EVENT).encode()
    not_yet = refused(core_api.verify, route, request(pagarme_header(rsa_key(), body), body))
    assert isinstance(not_yet, StaleKeys) and not_yet.status == 503 and not_yet.headers["Retry-After"]


# --- Kiwify banking -------------------------------------------------------------------------------

KIWIFY_EVENT = {
    "id": "550e8400-e29b-41d4-a716-446655440000",
    "type": "CASHOUT.PIX.TRANSFERS.COMPLETED",
    "version": "1.0",
    "data": {"transfer_id": "tr-1", "amount": 100},
    "created_at": "2026-01-01T00:00:00.000Z",
}
KIWIFY_TS = str(int(NOW * 1000))


def kiwify_headers(
    key: ed25519.Ed25519PrivateKey, body: bytes, ts: str = KIWIFY_TS, path: str = "/hooks"
) -> dict[str, str]:
    return {"x-kiwify-digital-signature": kiwify_sign(key, path, body, ts), "x-kiwify-timestamp": ts}


@pytest.fixture
def kiwify(
    tmp_path: Path, mode_route: Callable[..., RouteConfig]
) -> tuple[ed25519.Ed25519PrivateKey, ed25519.Ed25519PrivateKey, RouteConfig]:
    active, retired = ed25519_key(), ed25519_key()
    document = {
        "data": [
            {"id": "k2", "public_key": pem(active), "is_active": True},
            {"id": "k1", "public_key": pem(retired), "is_active": False},
        ]
    }
    (tmp_path / "kiwify.json").write_text(json.dumps(document))
    return active, retired, mode_route(banking, "banking", 'public_key_file = "kiwify.json"')


def test_kiwify_banking_valid_resent_changed_wrong_missing(
    kiwify: tuple[ed25519.Ed25519PrivateKey, ed25519.Ed25519PrivateKey, RouteConfig],
) -> None:
    key, retired, route = kiwify
    body = json.dumps(KIWIFY_EVENT).encode()
    verdict = banking.verify(route, request(kiwify_headers(key, body), body))
    assert verdict.kind == "CASHOUT.PIX.TRANSFERS.COMPLETED"
    assert verdict.events[0].dedup_key == "CASHOUT.PIX.TRANSFERS.COMPLETED:transfer_id:tr-1"
    # a retry: new envelope id, new timestamp, signed again: the same event
    retry = json.dumps({**KIWIFY_EVENT, "id": "another-uuid"}).encode()
    later = str(int(NOW * 1000) + 60_000)
    again = banking.verify(route, request(kiwify_headers(key, retry, later), retry, now=NOW + 60))
    assert again.events[0].dedup_key == verdict.events[0].dedup_key
    headers = kiwify_headers(key, body)
    for changed in flipped(body):
        assert refused(banking.verify, route, request(headers, changed)).status == 401
    ts_changed = {**headers, "x-kiwify-timestamp": str(int(KIWIFY_TS) + 1)}
    assert refused(banking.verify, route, request(ts_changed, body)).status == 401
    other_path = kiwify_headers(key, body, path="/elsewhere")
    assert refused(banking.verify, route, request(other_path, body)).status == 401
    assert (
        refused(banking.verify, route, request(kiwify_headers(retired, body), body)).status == 401
    )  # inactive
    assert refused(banking.verify, route, request(kiwify_headers(ed25519_key(), body), body)).status == 401
    for missing in headers:
        reduced = {name: value for name, value in headers.items() if name != missing}
        assert "header missing" in refused(banking.verify, route, request(reduced, body)).reason


@pytest.mark.parametrize(("skew", "ok"), [(-299, True), (299, True), (-301, False), (301, False)])
def test_kiwify_banking_timestamp_window(
    kiwify: tuple[ed25519.Ed25519PrivateKey, ed25519.Ed25519PrivateKey, RouteConfig], skew: int, ok: bool
) -> None:
    key, _, route = kiwify
    body = json.dumps(KIWIFY_EVENT).encode()
    ts = str(int((NOW + skew) * 1000))
    req = request(kiwify_headers(key, body, ts), body)
    if ok:
        assert banking.verify(route, req).events
    else:
        assert ("too old" if skew < 0 else "in the future") in refused(banking.verify, route, req).reason
    seconds = request(kiwify_headers(key, body, str(int(NOW))), body)  # seconds, not milliseconds
    assert refused(banking.verify, route, seconds).status == 401


def test_kiwify_banking_signs_the_digest_not_the_message(
    kiwify: tuple[ed25519.Ed25519PrivateKey, ed25519.Ed25519PrivateKey, RouteConfig],
) -> None:
    """The reading documented in publickeys: Ed25519 over the 32-byte SHA-256 digest. Ed25519 over the
    message itself (what Kiwify's page calls a common mistake) is refused."""
    key, _, route = kiwify
    body = json.dumps(KIWIFY_EVENT).encode()
    message = b"/hooks:POST:" + body + f":{KIWIFY_TS}".encode()
    direct = {"x-kiwify-digital-signature": b64url(key.sign(message)), "x-kiwify-timestamp": KIWIFY_TS}
    assert refused(banking.verify, route, request(direct, body)).status == 401


def test_kiwify_banking_signed_path_and_dedup_on_the_resource(
    tmp_path: Path, mode_route: Callable[..., RouteConfig]
) -> None:
    key = ed25519_key()
    (tmp_path / "kiwify.pem").write_text(pem(key))
    route = mode_route(
        banking, "banking", 'public_key_file = "kiwify.pem"\nsigned_path = "/webhooks/kiwibank"'
    )
    qrcode = json.dumps(
        {"id": "x", "type": "CASHIN.PIX.QRCODES.PAID", "data": {"qrcode_id": "qr-1"}}
    ).encode()
    headers = kiwify_headers(key, qrcode, path="/webhooks/kiwibank")
    assert (
        banking.verify(route, request(headers, qrcode)).events[0].dedup_key
        == "CASHIN.PIX.QRCODES.PAID:qrcode_id:qr-1"
    )
    nothing = json.dumps({"id": "x", "type": "T", "data": {}}).encode()
    refusal = refused(
        banking.verify, route, request(kiwify_headers(key, nothing, path="/webhooks/kiwibank"), nothing)
    )
    assert refusal.status == 400


# --- the generic provider -------------------------------------------------------------------------


def test_public_key_provider_hex_ed25519_with_dedup(
    tmp_path: Path, make_route: Callable[[str], RouteConfig]
) -> None:
    key = ed25519_key()
    (tmp_path / "sender.pem").write_text(pem(key))
    route = make_route(
        '[[routes]]\npath = "/hooks"\nprovider = "public-key"\npublic_key_file = "sender.pem"\n'
        'dedup = ["/data/id"]\nevent = "header:X-Event"\n'
        '[routes.signature]\nalgorithm = "ed25519"\nheader = "X-Sig"\nencoding = "hex"\nprefix = "ed25519="\n'
    )
    body = b'{"data": {"id": "d-1"}}'
    headers = {"X-Sig": "ed25519=" + key.sign(body).hex(), "X-Event": "thing.done"}
    verdict = public_key.verify(route, request(headers, body))
    assert (verdict.kind, verdict.events[0].dedup_key) == ("thing.done", "/hooks|d-1")
    assert (
        "does not start with"
        in refused(public_key.verify, route, request({"X-Sig": key.sign(body).hex()}, body)).reason
    )
    for changed in flipped(body):
        assert refused(public_key.verify, route, request(headers, changed)).status in (400, 401)


# --- configuration --------------------------------------------------------------------------------


def test_config_errors_name_the_key(tmp_path: Path, make_route: Callable[[str], RouteConfig]) -> None:
    (tmp_path / "rsa.pem").write_text(pem(rsa_key()))
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    route = '[[routes]]\npath = "/hooks"\nprovider = "starkbank"\n'
    cases = {
        'public_key_file = "rsa.pem"': "routes[0].public_key_file: ",  # an RSA key cannot verify ECDSA
        'public_key_file = "junk.pem"': "routes[0].public_key_file: ",
        'public_key_file = "absent.pem"': "routes[0].public_key_file: file not found",
        'public_key_file = "rsa.pem"\npublic_key_url = "https://x"': "public_key_url: give public_key_file",
        'public_key_url = "http://keys.example.com/k"': "routes[0].public_key_url: must be an https:// URL",
        'public_key_url = "https://u:pw@keys.example.com/k"': "routes[0].public_key_url: holds credentials",
        'public_key_url = "https://k/x"\nrefetch_interval = 0': "refetch_interval: must be a number >= 1",
        'dev_signing_key = "rsa.pem"': "routes[0].dev_signing_key: ",
        'environment = "staging"': "routes[0].environment: must be one of",
        'key_fetch_headers = { Authorization = "inline" }': "routes[0].key_fetch_headers.Authorization: ",
    }
    for keys, expected in cases.items():
        assert expected in config_error(make_route, route + keys + "\n"), keys
    generic = (
        '[[routes]]\npath = "/hooks"\nprovider = "public-key"\n'
        '[routes.signature]\nalgorithm = "ed25519"\nheader = "X"\n'
    )
    assert "routes[0].public_key_file: the sender's public key is needed" in config_error(make_route, generic)


def test_key_fetch_headers_come_from_secrets(
    make_route: Callable[[str], RouteConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_KEY_TOKEN", "Bearer abc")
    route = make_route(
        '[[routes]]\npath = "/hooks"\nprovider = "starkbank"\nenvironment = "sandbox"\n'
        'key_fetch_headers = { Authorization = { env = "T_KEY_TOKEN" } }\n'
    )
    (source,) = route.options.key_sources()
    assert source.description == "https://sandbox.api.starkbank.com/v2/public-key?limit=1"
    assert "abc" not in repr(route.options)


# --- local dev signing keys and send-test samples -------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "make_key", "extra"),
    [
        ("starkbank", ecdsa_key, ""),
        ("woovi", rsa_key, ""),
        (
            "public-key",
            ed25519_key,
            '[routes.signature]\nalgorithm = "ed25519"\nheader = "X-Sig"\nencoding = "base64url"\n',
        ),
    ],
)
def test_dev_signing_key_is_trusted_warned_about_and_signs_samples(
    tmp_path: Path,
    make_route: Callable[[str], RouteConfig],
    provider: str,
    make_key: Callable[[], object],
    extra: str,
) -> None:
    sender = ecdsa_key() if provider != "woovi" else rsa_key()
    (tmp_path / "sender.pem").write_text(pem(ed25519_key() if provider == "public-key" else sender))
    write_private_key(tmp_path / "dev.pem", make_key())  # type: ignore[arg-type]
    keys = 'public_key_file = "sender.pem"\n' if provider != "woovi" else ""
    route = make_route(
        f'[[routes]]\npath = "/hooks"\nprovider = "{provider}"\n{keys}dev_signing_key = "dev.pem"\n{extra}'
    )
    (warning,) = route.options.warnings()
    assert "LOCAL DEV SIGNING KEY" in warning
    module = {"starkbank": starkbank, "woovi": woovi, "public-key": public_key}[provider]
    sample = module.sample(route, None, NOW)
    assert module.verify(route, request(dict(sample.headers), sample.body)).events
    without = make_route(f'[[routes]]\npath = "/hooks"\nprovider = "{provider}"\n{keys}{extra}')
    assert without.options.warnings() == ()
    with pytest.raises(ReceiverError, match="has no dev_signing_key"):
        module.sample(without, None, NOW)


def test_mode_samples_verify(tmp_path: Path, mode_route: Callable[..., RouteConfig]) -> None:
    write_private_key(tmp_path / "dev-rsa.pem", rsa_key())
    write_private_key(tmp_path / "dev-ed.pem", ed25519_key())
    (tmp_path / "ed.pem").write_text(pem(ed25519_key()))
    pagarme = mode_route(core_api, "v5", 'dev_signing_key = "dev-rsa.pem"')
    kiwify = mode_route(banking, "banking", 'public_key_file = "ed.pem"\ndev_signing_key = "dev-ed.pem"')
    for module, route in ((core_api, pagarme), (banking, kiwify)):
        sample = module.sample(route, None, NOW)
        assert module.verify(route, request(dict(sample.headers), sample.body, now=NOW)).events
        assert module.verified_by(route, None) == "public-key-signature"


def test_a_key_of_another_mode_is_an_error(
    tmp_path: Path, make_route: Callable[[str], RouteConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A postback route given v5's key file would silently verify with the API key only: refused."""
    monkeypatch.setenv("T_PAGARME_KEY", "ak_test_x")
    (tmp_path / "rsa.pem").write_text(pem(rsa_key()))
    route = (
        '[[routes]]\npath = "/hooks"\nprovider = "pagarme"\nmode = "postback"\n'
        'secrets = [{ env = "T_PAGARME_KEY" }]\npublic_key_file = "rsa.pem"\n'
    )
    assert "routes[0].public_key_file: not read in mode 'postback' (only in mode 'v5')" in config_error(
        make_route, route
    )
