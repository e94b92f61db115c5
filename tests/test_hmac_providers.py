"""INFI, FireBanking, Pomelo and the generic scheme, against vectors computed here from each
provider's documented algorithm (hmac/hashlib directly, never the code under test)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mtls_receiver.addresses import parse_networks
from mtls_receiver.config import RouteConfig, load_config
from mtls_receiver.errors import Refusal
from mtls_receiver.events import IncomingRequest, Peer, Verdict
from mtls_receiver.providers import firebanking, generic, infi, pomelo

NOW = 1_763_900_000.0
TS = str(int(NOW))
PEER = Peer("203.0.113.10")


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def flipped(data: bytes) -> Iterator[bytes]:
    """Every single-byte change of ``data``."""
    for i in range(len(data)):
        yield data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def flipped_text(text: str) -> Iterator[str]:
    return (changed.decode("latin-1") for changed in flipped(text.encode("latin-1")))


def request(
    headers: dict[str, str],
    body: bytes,
    path: str = "/hooks",
    now: float = NOW,
    peer: Peer = PEER,
    method: str = "POST",
) -> IncomingRequest:
    return IncomingRequest(method, path.split("?")[0], path.partition("?")[2], headers, body, peer, now=now)


def refused(verify: Callable[[IncomingRequest], Verdict], req: IncomingRequest) -> Refusal:
    with pytest.raises(Refusal) as caught:
        verify(req)
    return caught.value


# --- INFI -----------------------------------------------------------------------------------------

INFI_SECRET, INFI_OLD = "infi-webhook-secret-1", "infi-webhook-secret-0"
INFI_ROUTE = RouteConfig(
    path="/hooks",
    listener="m",
    provider="infi",
    mode="hmac",
    options=infi.InfiOptions(secrets=(INFI_SECRET, INFI_OLD)),
)
INFI_BODY = (
    b'{"event":"transaction.paid","eventId":"evt_1715000000000_abcdef12",'
    b'"transactionId":"tx1","status":"paid"}'
)


def infi_headers(body: bytes = INFI_BODY, ts: str = TS, secret: str = INFI_SECRET) -> dict[str, str]:
    return {
        "X-Infi-Timestamp": ts,
        "X-Infi-Signature": "sha256=" + hex_hmac(secret, f"{ts}.".encode() + body),
        "X-Infi-Event": "transaction.paid",
        "X-Infi-Event-Id": "evt_1715000000000_abcdef12",
    }


def infi_verify(req: IncomingRequest, route: RouteConfig = INFI_ROUTE) -> Verdict:
    return infi.verify(route, req)


def test_infi_vector_accepted_with_either_secret() -> None:
    for secret in (INFI_SECRET, INFI_OLD):
        verdict = infi_verify(request(infi_headers(secret=secret), INFI_BODY))
        assert verdict.kind == "transaction.paid"
        assert verdict.events[0].dedup_key == "event:evt_1715000000000_abcdef12"
    assert refused(infi_verify, request(infi_headers(secret="another-secret"), INFI_BODY)).status == 401


def test_infi_every_single_byte_change_is_refused() -> None:
    headers = infi_headers()
    for body in flipped(INFI_BODY):
        assert refused(infi_verify, request(headers, body)).status == 401
    for ts in flipped_text(TS):
        assert refused(infi_verify, request({**headers, "X-Infi-Timestamp": ts}, INFI_BODY)).status == 401
    for signature in flipped_text(headers["X-Infi-Signature"]):
        assert (
            refused(infi_verify, request({**headers, "X-Infi-Signature": signature}, INFI_BODY)).status == 401
        )


@pytest.mark.parametrize(("skew", "ok"), [(-299, True), (299, True), (-301, False), (301, False)])
def test_infi_timestamp_tolerance_both_directions(skew: int, ok: bool) -> None:
    ts = str(int(NOW) + skew)
    req = request(infi_headers(ts=ts), INFI_BODY)
    if ok:
        assert infi_verify(req).events
    else:
        reason = refused(infi_verify, req).reason
        assert ("old" if skew < 0 else "in the future") in reason


def test_infi_missing_parts_and_dedup_fallbacks() -> None:
    headers = infi_headers()
    for missing in ("X-Infi-Timestamp", "X-Infi-Signature"):
        reduced = {k: v for k, v in headers.items() if k != missing}
        assert refused(infi_verify, request(reduced, INFI_BODY)).reason.endswith("header missing")
    body = b'{"transactionId":"tx9","status":"paid"}'
    plain = {k: v for k, v in infi_headers(body).items() if k != "X-Infi-Event-Id"}
    assert infi_verify(request(plain, body)).events[0].dedup_key == "tx:tx9:paid"
    lower = {k.lower(): v for k, v in infi_headers().items()}  # header names are case-insensitive
    assert infi_verify(request(lower, INFI_BODY)).events


def test_infi_allowlist_and_tolerance_override() -> None:
    route = RouteConfig(
        path="/hooks",
        listener="m",
        provider="infi",
        mode="hmac",
        options=infi.InfiOptions(secrets=(INFI_SECRET,)),
        allow_ips=parse_networks(["198.51.100.0/24"]),
        tolerance=30,
    )
    refusal = refused(lambda r: infi_verify(r, route), request(infi_headers(), INFI_BODY))
    assert refusal.status == 403 and refusal.reason.startswith("allowlist:")
    inside = Peer("198.51.100.7")
    assert infi_verify(request(infi_headers(), INFI_BODY, peer=inside), route).events
    late = request(infi_headers(ts=str(int(NOW) - 31)), INFI_BODY, peer=inside)
    assert refused(lambda r: infi_verify(r, route), late).status == 401


# --- FireBanking ----------------------------------------------------------------------------------

FIRE_SECRET = "fire-secret-abc"
FIRE_ROUTE = RouteConfig(
    path="/hooks",
    listener="m",
    provider="firebanking",
    mode="hmac",
    options=firebanking.FireBankingOptions(secrets=(FIRE_SECRET,), families=("pix",)),
)
FIRE_BODY = (
    b'{"event":"pix.received","timestamp":"2024-01-15T10:30:45.123Z",'
    b'"data":{"id":"tx_123456789","amount":100.50,"status":"completed"}}'
)


def fire_headers(body: bytes = FIRE_BODY, event: str = "pix.received", ts: str | None = TS) -> dict[str, str]:
    headers = {"X-Fire-Event": event, "X-Fire-Signature": "sha256=" + hex_hmac(FIRE_SECRET, body)}
    if ts is not None:
        headers["X-Fire-Timestamp"] = ts
    return headers


def fire_verify(req: IncomingRequest) -> Verdict:
    return firebanking.verify(FIRE_ROUTE, req)


def test_firebanking_vector_accepted_and_dedup() -> None:
    verdict = fire_verify(request(fire_headers(), FIRE_BODY))
    assert (verdict.kind, verdict.events[0].dedup_key) == (
        "pix.received",
        "pix.received:tx_123456789:completed",
    )
    assert fire_verify(request(fire_headers(ts=None), FIRE_BODY)).events  # the timestamp is optional
    # X-Fire-Event is not signed: a captured request re-sent with another one is the same event
    replayed = fire_verify(request(fire_headers(event="pix.refunded", ts=None), FIRE_BODY))
    assert (replayed.kind, replayed.events[0].dedup_key) == (verdict.kind, verdict.events[0].dedup_key)
    no_event = b'{"data":{"id":"tx_1","status":"completed"}}'  # only the header names it: it is used
    assert fire_verify(request(fire_headers(no_event, event="pix.sent"), no_event)).kind == "pix.sent"


def test_firebanking_every_single_byte_change_is_refused() -> None:
    headers = fire_headers()
    for body in flipped(FIRE_BODY):
        assert refused(fire_verify, request(headers, body)).status == 401
    for signature in flipped_text(headers["X-Fire-Signature"]):
        assert (
            refused(fire_verify, request({**headers, "X-Fire-Signature": signature}, FIRE_BODY)).status == 401
        )


def test_firebanking_timestamp_families_and_shape() -> None:
    stale = refused(fire_verify, request(fire_headers(ts=str(int(NOW) - 301)), FIRE_BODY))
    assert stale.status == 401 and "old" in stale.reason
    assert refused(fire_verify, request(fire_headers(ts=str(int(NOW) + 301)), FIRE_BODY)).status == 401
    body = FIRE_BODY.replace(b"pix.received", b"bankslip.paid")
    family = refused(fire_verify, request(fire_headers(body, event="bankslip.paid"), body))
    assert family.status == 403 and "families" in family.reason
    body = b'{"event":"pix.sent","data":{}}'
    assert refused(fire_verify, request(fire_headers(body, event="pix.sent"), body)).status == 400
    assert firebanking.family_of("kyc.approved") == firebanking.family_of("account.activated") == "onboarding"


# --- Pomelo ---------------------------------------------------------------------------------------

POMELO_SECRET = base64.b64encode(b"pomelo-raw-secret-bytes-0123456789").decode()
POMELO_OLD = base64.b64encode(b"an-older-pomelo-secret").decode()
POMELO_ROUTE = RouteConfig(
    path="/pomelo/notifications",
    listener="m",
    provider="pomelo",
    mode="notifications",
    options=pomelo.PomeloOptions(api_keys=(("key-new", POMELO_SECRET), ("key-old", POMELO_OLD))),
)
ENDPOINT = "/pomelo/notifications"
POMELO_BODY = b'{"event_type":"card.shipped","id":"ntf-1"}'


def pomelo_signature(secret_b64: str, ts: str, endpoint: str, body: bytes) -> str:
    digest = hmac.new(
        base64.b64decode(secret_b64), ts.encode() + endpoint.encode() + body, hashlib.sha256
    ).digest()
    return "hmac-sha256 " + base64.b64encode(digest).decode()


def pomelo_headers(
    body: bytes = POMELO_BODY,
    ts: str = TS,
    endpoint: str = ENDPOINT,
    key: str = "key-new",
    secret: str = POMELO_SECRET,
) -> dict[str, str]:
    return {
        "x-api-key": key,
        "x-timestamp": ts,
        "x-endpoint": endpoint,
        "x-signature": pomelo_signature(secret, ts, endpoint, body),
        "x-idempotency-key": "idem-1",
    }


def pomelo_verify(req: IncomingRequest, route: RouteConfig = POMELO_ROUTE) -> Verdict:
    return pomelo.verify(route, req)


def test_pomelo_vector_accepted_for_each_key_pair() -> None:
    assert pomelo_verify(request(pomelo_headers(), POMELO_BODY, ENDPOINT)).events[0].dedup_key == "idem-1"
    old = pomelo_headers(key="key-old", secret=POMELO_OLD)
    assert pomelo_verify(request(old, POMELO_BODY, ENDPOINT)).kind == "card.shipped"
    crossed = pomelo_headers(key="key-old", secret=POMELO_SECRET)  # signed with the other pair's secret
    assert refused(pomelo_verify, request(crossed, POMELO_BODY, ENDPOINT)).status == 401


def test_pomelo_unknown_api_key() -> None:
    refusal = refused(pomelo_verify, request(pomelo_headers(key="key-unknown"), POMELO_BODY, ENDPOINT))
    assert (refusal.status, refusal.reason) == (401, "signature: unknown x-api-key")


def test_pomelo_every_single_byte_change_is_refused() -> None:
    headers = pomelo_headers()
    for body in flipped(POMELO_BODY):
        assert refused(pomelo_verify, request(headers, body, ENDPOINT)).status == 401
    for ts in flipped_text(TS):
        assert (
            refused(pomelo_verify, request({**headers, "x-timestamp": ts}, POMELO_BODY, ENDPOINT)).status
            == 401
        )
    for endpoint in flipped_text(ENDPOINT):
        changed = request({**headers, "x-endpoint": endpoint}, POMELO_BODY, ENDPOINT)
        assert refused(pomelo_verify, changed).status == 403
        # ...and signed correctly for the changed endpoint, but sent to this route's path: still refused
        signed = request(pomelo_headers(endpoint=endpoint), POMELO_BODY, ENDPOINT)
        assert refused(pomelo_verify, signed).reason.startswith("endpoint:")
    for signature in flipped_text(headers["x-signature"]):
        assert (
            refused(
                pomelo_verify, request({**headers, "x-signature": signature}, POMELO_BODY, ENDPOINT)
            ).status
            == 401
        )


def test_pomelo_endpoint_includes_the_query() -> None:
    target = ENDPOINT + "?env=prod"
    assert pomelo_verify(request(pomelo_headers(endpoint=target), POMELO_BODY, target)).events
    assert refused(pomelo_verify, request(pomelo_headers(), POMELO_BODY, target)).status == 403


def test_pomelo_authorisations_expire_after_60s() -> None:
    route = RouteConfig(
        path="/pomelo/auth",
        listener="m",
        provider="pomelo",
        mode="authorizations",
        options=pomelo.PomeloOptions(api_keys=(("key-new", POMELO_SECRET),)),
    )
    fresh = request(
        pomelo_headers(endpoint="/pomelo/auth", ts=str(int(NOW) - 59)), POMELO_BODY, "/pomelo/auth"
    )
    verdict = pomelo_verify(fresh, route)
    assert verdict.relay is not None and verdict.relay.idempotency_key == "idem-1" and verdict.events == ()
    stale = request(
        pomelo_headers(endpoint="/pomelo/auth", ts=str(int(NOW) - 61)), POMELO_BODY, "/pomelo/auth"
    )
    assert refused(lambda r: pomelo_verify(r, route), stale).status == 401
    # notifications keep the wider default
    assert pomelo_verify(request(pomelo_headers(ts=str(int(NOW) - 200)), POMELO_BODY, ENDPOINT)).events


def test_pomelo_answer_signature_matches_documented_algorithm() -> None:
    key = base64.b64decode(POMELO_SECRET)
    headers = pomelo.signature_headers("key-new", key, "/pomelo/auth", b'{"status":"APPROVED"}', NOW)
    assert headers["X-Timestamp"] == TS and headers["X-Endpoint"] == "/pomelo/auth"
    assert headers["X-Signature"] == pomelo_signature(
        POMELO_SECRET, TS, "/pomelo/auth", b'{"status":"APPROVED"}'
    )
    empty = pomelo.signature_headers("key-new", key, "/pomelo/auth", b"", NOW)
    assert empty["X-Signature"] == pomelo_signature(POMELO_SECRET, TS, "/pomelo/auth", b"")


# --- the generic scheme ---------------------------------------------------------------------------

GENERIC_FIREBANKING = """
[[listeners]]
address = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
client_certs = "none"

[[routes]]
path = "/hooks"
provider = "hmac"
secrets = [{{ env = "T_GENERIC_SECRET" }}]
dedup = ["/event", "/data/id", "/data/status"]
event = "/event"
[routes.signature]
header = "X-Fire-Signature"
prefix = "sha256="
encoding = "hex"
signed = ["body"]
timestamp_header = "X-Fire-Timestamp"
timestamp_required = false
"""

GENERIC_INFI = """
[[listeners]]
address = "127.0.0.1:0"
cert = "{cert}"
key = "{key}"
client_certs = "none"

[[routes]]
path = "/hooks"
provider = "hmac"
secrets = [{{ env = "T_GENERIC_SECRET" }}]
dedup = ["header:X-Infi-Event-Id"]
[routes.signature]
header = "X-Infi-Signature"
prefix = "sha256="
signed = ["timestamp", "body"]
separator = "."
timestamp_header = "X-Infi-Timestamp"
"""


def generic_route(
    template: str, secret: str, tmp_path: Path, pki, monkeypatch: pytest.MonkeyPatch
) -> RouteConfig:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("T_GENERIC_SECRET", secret)
    path = tmp_path / "config.toml"
    path.write_text(template.format(cert=pki.server_cert, key=pki.server_key), encoding="utf-8")
    return load_config(path).routes[0]


def test_generic_expresses_firebanking(tmp_path: Path, pki, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    route = generic_route(GENERIC_FIREBANKING, FIRE_SECRET, tmp_path, pki, monkeypatch)
    verdict = generic.verify(route, request(fire_headers(), FIRE_BODY))
    assert verdict.events[0].dedup_key == "/hooks|pix.received:tx_123456789:completed"  # scoped to the route
    fire_key = fire_verify(request(fire_headers(), FIRE_BODY)).events[0].dedup_key
    assert verdict.events[0].dedup_key == f"{route.path}|{fire_key}"
    for body in flipped(FIRE_BODY):
        assert refused(lambda r: generic.verify(route, r), request(fire_headers(), body)).status == 401


def test_generic_expresses_infi(tmp_path: Path, pki, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    route = generic_route(GENERIC_INFI, INFI_SECRET, tmp_path, pki, monkeypatch)
    assert (
        generic.verify(route, request(infi_headers(), INFI_BODY)).events[0].dedup_key
        == "/hooks|evt_1715000000000_abcdef12"
    )
    for ts in flipped_text(TS):
        changed = request({**infi_headers(), "X-Infi-Timestamp": ts}, INFI_BODY)
        assert refused(lambda r: generic.verify(route, r), changed).status == 401
    missing = {k: v for k, v in infi_headers().items() if k != "X-Infi-Timestamp"}
    assert refused(lambda r: generic.verify(route, r), request(missing, INFI_BODY)).status == 401


def test_generic_base64_digest_and_secret(tmp_path: Path, pki, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    template = GENERIC_INFI.replace(
        'prefix = "sha256="', 'prefix = "v1="\nencoding = "base64"\nsecret_encoding = "base64"'
    )
    raw_key = b"\x00\x01binary-key\xff"
    route = generic_route(template, base64.b64encode(raw_key).decode(), tmp_path, pki, monkeypatch)
    digest = hmac.new(raw_key, f"{TS}.".encode() + INFI_BODY, hashlib.sha256).digest()
    headers = {**infi_headers(), "X-Infi-Signature": "v1=" + base64.b64encode(digest).decode()}
    assert generic.verify(route, request(headers, INFI_BODY)).events
    assert refused(lambda r: generic.verify(route, r), request(infi_headers(), INFI_BODY)).status == 401


def test_generic_missing_dedup_field_is_400(tmp_path: Path, pki, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    route = generic_route(GENERIC_FIREBANKING, FIRE_SECRET, tmp_path, pki, monkeypatch)
    body = json.dumps({"event": "pix.received", "data": {"status": "x"}}).encode()
    refusal = refused(lambda r: generic.verify(route, r), request(fire_headers(body), body))
    assert refusal.status == 400 and "/data/id" in refusal.reason


@pytest.mark.parametrize("verify", [infi.verify, firebanking.verify, pomelo.verify])
def test_only_post(verify: Callable[[RouteConfig, IncomingRequest], Verdict]) -> None:
    route = {infi.verify: INFI_ROUTE, firebanking.verify: FIRE_ROUTE, pomelo.verify: POMELO_ROUTE}[verify]
    assert refused(lambda r: verify(route, r), request({}, b"", method="GET")).status == 405
