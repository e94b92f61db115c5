"""The signing presets: Stripe, Standard Webhooks, Mercado Pago, Pagar.me postbacks, Kiwify sales,
PagBank. Signers are written here from each provider's documented algorithm (hmac/hashlib/base64,
cryptography for Ed25519), never with the code under test; the published vectors of
/work/shared/vectors (V3a–c, V4, V5) are asserted byte for byte, and V6 (Mercado Pago) only as a
self-check: its values were derived, not published by Mercado Pago."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import Pki
from support.senders import NOW, accepted, config_error, flipped, load_routes, refused, request

from mtls_receiver.config import RouteConfig
from mtls_receiver.providers import provider, verification_method

VECTORS = Path(__file__).parent / "vectors"
TS = str(int(NOW))


def loaded(tmp_path: Path, pki: Pki, name: str, extra: str = "", **secrets: str) -> RouteConfig:
    refs = ", ".join(f'{{ file = "{key}" }}' for key in secrets)
    text = f'[[routes]]\npath = "/hooks"\nprovider = "{name}"\nsecrets = [{refs}]\n{extra}'
    (route,) = load_routes(tmp_path, pki, text, **secrets).routes
    return route


def sample_accepted(route: RouteConfig) -> None:
    """The provider's send-test request passes its own verifier."""
    sample = provider(route.provider).sample
    assert sample is not None
    made = sample(route, None, NOW)
    accepted(route, request(dict(made.headers), made.body, route.path + made.path))


# --- Stripe ----------------------------------------------------------------------------------------

STRIPE_SECRET = "whsec_test_stripe_endpoint_secret"
STRIPE_BODY = b'{"id":"evt_1NaBc","object":"event","type":"payment_intent.succeeded","data":{"object":{}}}'


def stripe_header(ts: str, *secrets: str, body: bytes = STRIPE_BODY) -> dict[str, str]:
    """Stripe's scheme: v1 = hex HMAC-SHA256 keyed by the whsec_ string itself, of "{t}.{body}"."""
    signed = f"{ts}.".encode() + body
    v1 = ",".join("v1=" + hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets)
    return {
        "Stripe-Signature": f"t={ts},{v1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
    }


def test_stripe(tmp_path: Path, pki: Pki) -> None:
    route = loaded(tmp_path, pki, "stripe", a=STRIPE_SECRET)
    verdict = accepted(route, request(stripe_header(TS, STRIPE_SECRET), STRIPE_BODY))
    assert (verdict.kind, verdict.events[0].dedup_key) == ("payment_intent.succeeded", "event:evt_1NaBc")
    retry = accepted(
        route, request(stripe_header(str(int(NOW) + 60), STRIPE_SECRET), STRIPE_BODY, now=NOW + 60)
    )
    assert retry.events[0].dedup_key == verdict.events[0].dedup_key
    accepted(route, request(stripe_header(TS, "whsec_old", STRIPE_SECRET), STRIPE_BODY))  # any v1
    for changed in flipped(STRIPE_BODY, step=11):
        assert refused(route, request(stripe_header(TS, STRIPE_SECRET), changed)).status == 401
    assert refused(route, request(stripe_header(TS, "whsec_wrong"), STRIPE_BODY)).status == 401
    decoded_key = base64.b64decode(STRIPE_SECRET.removeprefix("whsec_") + "==")  # Svix's rule, not Stripe's
    svix_style = {
        "Stripe-Signature": f"t={TS},v1="
        + hmac.new(decoded_key, f"{TS}.".encode() + STRIPE_BODY, "sha256").hexdigest()
    }
    assert refused(route, request(svix_style, STRIPE_BODY)).status == 401
    stale = str(int(NOW) - 301)
    assert "old" in refused(route, request(stripe_header(stale, STRIPE_SECRET), STRIPE_BODY)).reason
    assert "missing" in refused(route, request({}, STRIPE_BODY)).reason
    sample_accepted(route)


# --- Standard Webhooks -----------------------------------------------------------------------------

V4_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
V4_ID, V4_TS, V4_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
V4_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
V5_KEY = "6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
V5_PUBLIC = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4="
V5_SIGNATURE = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg=="
V4_NOW = float(V4_TS) + 10


def sw_headers(
    signature: str, msg_id: str = V4_ID, ts: str = V4_TS, prefix: str = "webhook"
) -> dict[str, str]:
    return {f"{prefix}-id": msg_id, f"{prefix}-timestamp": ts, f"{prefix}-signature": signature}


def test_standard_webhooks_signer_reproduces_v4_and_v5() -> None:
    message = f"{V4_ID}.{V4_TS}.".encode() + V4_BODY
    key = base64.b64decode(V4_SECRET.removeprefix("whsec_"))
    assert "v1," + base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode() == V4_SIGNATURE
    private = Ed25519PrivateKey.from_private_bytes(base64.b64decode(V5_KEY)[:32])
    assert "v1a," + base64.b64encode(private.sign(message)).decode() == V5_SIGNATURE


def test_standard_webhooks_v1(tmp_path: Path, pki: Pki) -> None:
    route = loaded(tmp_path, pki, "standard-webhooks", a=V4_SECRET)
    verdict = accepted(route, request(sw_headers(V4_SIGNATURE), V4_BODY, now=V4_NOW))
    assert verdict.events[0].dedup_key == f"webhook-id:{V4_ID}"
    accepted(route, request(sw_headers(V4_SIGNATURE, prefix="svix"), V4_BODY, now=V4_NOW))
    rotating = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= " + V4_SIGNATURE
    accepted(route, request(sw_headers(rotating), V4_BODY, now=V4_NOW))
    malformed = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLawdd"
    assert refused(route, request(sw_headers(malformed), V4_BODY, now=V4_NOW)).status == 401
    for changed in flipped(V4_BODY):
        assert refused(route, request(sw_headers(V4_SIGNATURE), changed, now=V4_NOW)).status == 401
    assert (
        refused(route, request(sw_headers(V4_SIGNATURE, msg_id=V4_ID + "x"), V4_BODY, now=V4_NOW)).status
        == 401
    )
    assert "old" in refused(route, request(sw_headers(V4_SIGNATURE), V4_BODY, now=float(V4_TS) + 301)).reason
    assert (
        "future" in refused(route, request(sw_headers(V4_SIGNATURE), V4_BODY, now=float(V4_TS) - 301)).reason
    )
    assert "missing" in refused(route, request({}, V4_BODY, now=V4_NOW)).reason
    wrong = loaded(tmp_path, pki, "standard-webhooks", a="whsec_" + base64.b64encode(b"k" * 24).decode())
    assert refused(wrong, request(sw_headers(V4_SIGNATURE), V4_BODY, now=V4_NOW)).status == 401
    sample_accepted(route)


def test_standard_webhooks_v1a(tmp_path: Path, pki: Pki) -> None:
    text = f'[[routes]]\npath = "/hooks"\nprovider = "standard-webhooks"\npublic_keys = ["{V5_PUBLIC}"]\n'
    (route,) = load_routes(tmp_path, pki, text).routes
    accepted(route, request(sw_headers(V5_SIGNATURE), V4_BODY, now=V4_NOW))
    accepted(route, request(sw_headers(V4_SIGNATURE + " " + V5_SIGNATURE), V4_BODY, now=V4_NOW))
    assert refused(route, request(sw_headers(V4_SIGNATURE), V4_BODY, now=V4_NOW)).status == 401  # no secret
    for changed in flipped(V4_BODY):
        assert refused(route, request(sw_headers(V5_SIGNATURE), changed, now=V4_NOW)).status == 401
    bad = text.replace(V5_PUBLIC, "whpk_" + base64.b64encode(b"x" * 31).decode())
    assert config_error(tmp_path, pki, bad).key == "routes[0].public_keys[0]"


def test_standard_webhooks_v1a_dev_signing_key(tmp_path: Path, pki: Pki) -> None:
    """send-test on a v1a-only route signs with a local key the route also trusts, loudly."""
    dev = tmp_path / "dev-ed25519.pem"
    private = Ed25519PrivateKey.generate()
    dev.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    text = (
        f'[[routes]]\npath = "/hooks"\nprovider = "standard-webhooks"\npublic_keys = ["{V5_PUBLIC}"]\n'
        f'dev_signing_key = "{dev}"\n'
    )
    (route,) = load_routes(tmp_path, pki, text).routes
    accepted(route, request(sw_headers(V5_SIGNATURE), V4_BODY, now=V4_NOW))  # the provider's key still
    message = b"msg_1." + str(int(NOW)).encode() + b"." + V4_BODY  # signed as the spec says, by the dev key
    signature = "v1a," + base64.b64encode(private.sign(message)).decode()
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(NOW)), "webhook-signature": signature}
    accepted(route, request(headers, V4_BODY))
    assert any("TRUSTS A LOCAL DEV SIGNING KEY" in warning for warning in route.options.warnings())
    sample_accepted(route)


# --- Mercado Pago ----------------------------------------------------------------------------------

MP_SECRET, MP_REQUEST = "your_secret_key_here", "2066ca19-c6f1-498a-be75-1923005edd06"
MP_DATA_ID, MP_TS = "ORD01JQ4S4KY8HWQ6NA5PXB65B3D3", "1742505638683"
MP_BODY = (
    b'{"id":12345,"type":"order","action":"order.processed","data":{"id":"ORD01JQ4S4KY8HWQ6NA5PXB65B3D3"}}'
)


def mp_signature(secret: str, data_id: str | None, request_id: str | None, ts: str) -> str:
    """The documented manifest: id:{data.id};request-id:{x-request-id};ts:{ts}; without missing pairs."""
    manifest = "".join(f"{k}:{v};" for k, v in (("id", data_id), ("request-id", request_id), ("ts", ts)) if v)
    return hmac.new(secret.encode(), manifest.encode(), hashlib.sha256).hexdigest()


def test_mercadopago_self_check_values_derived_not_published() -> None:
    """V6: derived in VECTORS.md from the SDK tests' inputs; Mercado Pago publishes no literal."""
    assert mp_signature(MP_SECRET, MP_DATA_ID, MP_REQUEST, MP_TS) == (
        "fb15ae6472eb449173c556793205d77787d58f384d183bb5bc3b724c27bd103c"
    )
    assert mp_signature(MP_SECRET, MP_DATA_ID.lower(), MP_REQUEST, MP_TS) == (
        "633f91233312dd391ec75fa0bea539cfc2d6c4918873305b84a96cc1c58db71c"
    )


def mp_request(v1: str, ts: str = MP_TS, data_id: str | None = MP_DATA_ID, now: float = 1742505638683.0):  # type: ignore[no-untyped-def]
    path = f"/hooks?data.id={data_id}&type=order" if data_id else "/hooks"
    return request({"x-signature": f"ts={ts},v1={v1}", "x-request-id": MP_REQUEST}, MP_BODY, path, now=now)


def test_mercadopago(tmp_path: Path, pki: Pki) -> None:
    route = loaded(tmp_path, pki, "mercadopago", a=MP_SECRET)
    verbatim = mp_signature(MP_SECRET, MP_DATA_ID, MP_REQUEST, MP_TS)
    verdict = accepted(route, mp_request(verbatim))
    assert (verdict.kind, verdict.events[0].dedup_key) == ("order.processed", "notification:12345")
    accepted(
        route, mp_request(mp_signature(MP_SECRET, MP_DATA_ID.lower(), MP_REQUEST, MP_TS))
    )  # older casing
    accepted(route, mp_request(mp_signature(MP_SECRET, None, MP_REQUEST, MP_TS), data_id=None))
    assert refused(route, mp_request(verbatim, data_id=MP_DATA_ID[:-1] + "4")).status == 401
    assert refused(route, mp_request(verbatim, ts=str(int(MP_TS) + 1))).status == 401
    assert refused(route, mp_request(mp_signature("wrong", MP_DATA_ID, MP_REQUEST, MP_TS))).status == 401
    assert "missing" in refused(route, request({}, MP_BODY, f"/hooks?data.id={MP_DATA_ID}")).reason
    sample_accepted(route)


def test_mercadopago_body_must_name_the_signed_resource(tmp_path: Path, pki: Pki) -> None:
    """Mercado Pago signs the query's data.id, not the body: a captured signature re-sent with a body
    about another resource is refused."""
    route = loaded(tmp_path, pki, "mercadopago", a=MP_SECRET)
    signature = mp_signature(MP_SECRET, MP_DATA_ID, MP_REQUEST, MP_TS)
    other = MP_BODY.replace(MP_DATA_ID.encode(), b"ORD01OTHERRESOURCE0000000000")
    headers = {"x-signature": f"ts={MP_TS},v1={signature}", "x-request-id": MP_REQUEST}
    path = f"/hooks?data.id={MP_DATA_ID}&type=order"
    assert "signed ?data.id" in refused(route, request(headers, other, path)).reason
    accepted(route, request(headers, MP_BODY.replace(MP_DATA_ID.encode(), MP_DATA_ID.lower().encode()), path))


def test_mercadopago_tolerance_only_when_the_route_sets_one(tmp_path: Path, pki: Pki) -> None:
    route = loaded(tmp_path, pki, "mercadopago", "tolerance = 300\n", a=MP_SECRET)
    ts = str(int(NOW) - 301)
    assert (
        "old"
        in refused(route, mp_request(mp_signature(MP_SECRET, MP_DATA_ID, MP_REQUEST, ts), ts, now=NOW)).reason
    )
    fresh = str(int(NOW) - 10)
    accepted(route, mp_request(mp_signature(MP_SECRET, MP_DATA_ID, MP_REQUEST, fresh), fresh, now=NOW))


# --- Pagar.me postbacks ----------------------------------------------------------------------------

RUBY_KEY = "ak_test_Q2D2qDYGJSyeR1KbI4sLzGACEr73MF"
RUBY_SIGNATURE = "sha1=57925d5954efd85613bbffa121dc06b4e7737256"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_pagarme_vectors_v3a_v3b_v3c() -> None:
    assert hmac.new(b"key", b"body", hashlib.sha1).hexdigest() == "70bbf6819d1037aa94ca7e7f537cbea25fe49283"
    php = hmac.new(b"apiKey", b"foo=bar&bar=baz&baz=foo", hashlib.sha1).hexdigest()
    assert "sha1=" + php == "sha1=38114af54396acbba342ffa5076458ef8f0486c4"
    payload = (VECTORS / "pagarme_ruby_payload.txt").read_bytes()
    assert (
        hashlib.sha256(payload).hexdigest()
        == "780b29cd0617ea19d34aa1b482290ec358a7da887f8b7ede84216756fb93acc9"
    )
    assert "sha1=" + hmac.new(RUBY_KEY.encode(), payload, hashlib.sha1).hexdigest() == RUBY_SIGNATURE


def test_pagarme_postback(tmp_path: Path, pki: Pki) -> None:
    route = loaded(tmp_path, pki, "pagarme", a=RUBY_KEY)
    payload = (VECTORS / "pagarme_ruby_payload.txt").read_bytes()
    signed = {**FORM, "X-Hub-Signature": RUBY_SIGNATURE, "X-PagarMe-Event": "transaction_status_changed"}
    verdict = accepted(route, request(signed, payload))
    event = verdict.events[0]
    assert (verdict.kind, event.dedup_key) == ("transaction_status_changed", "406483:paid")
    assert event.payload["transaction[address][city]"] == "São Paulo"
    assert json.loads(json.dumps(event.payload)) == event.payload
    assert refused(route, request({**FORM, "X-Hub-Signature": RUBY_SIGNATURE[5:]}, payload)).status == 401
    assert refused(route, request({**FORM, "X-Hub-Signature": "invalid signature"}, payload)).status == 401
    for changed in flipped(payload, step=97):
        assert refused(route, request(signed, changed)).status == 401
    sha256 = "sha256=" + hmac.new(RUBY_KEY.encode(), payload, hashlib.sha256).hexdigest()
    assert refused(route, request({**FORM, "X-Hub-Signature": sha256}, payload)).status == 401  # pinned
    php = loaded(tmp_path, pki, "pagarme", a="apiKey")
    good = {**FORM, "X-Hub-Signature": "sha1=38114af54396acbba342ffa5076458ef8f0486c4"}
    assert refused(php, request(good, b"{}")).status == 401
    assert "'id'" in refused(php, request(good, b"foo=bar&bar=baz&baz=foo")).reason  # signed, but no id: 400
    assert (
        refused(php, request({**FORM, "X-Hub-Signature": "fooBar"}, b"foo=bar&bar=baz&baz=foo")).status == 401
    )
    assert "missing" in refused(route, request(FORM, payload)).reason
    assert route.mode == "postback" and verification_method(route, None) == "hmac-signature"
    sample_accepted(route)


# --- Kiwify sales ----------------------------------------------------------------------------------

KIWIFY_TOKEN = "kiwify-webhook-token"
KIWIFY_BODY = b'{"order_id":"b1c2","order_status":"paid","webhook_event_type":"order_approved"}'


def test_kiwify_sales(tmp_path: Path, pki: Pki) -> None:
    route = loaded(tmp_path, pki, "kiwify", a=KIWIFY_TOKEN)
    signature = hmac.new(KIWIFY_TOKEN.encode(), KIWIFY_BODY, hashlib.sha1).hexdigest()
    verdict = accepted(route, request({}, KIWIFY_BODY, f"/hooks?signature={signature}"))
    assert (verdict.kind, verdict.events[0].dedup_key) == ("order_approved", "b1c2:paid:order_approved")
    for changed in flipped(KIWIFY_BODY, step=5):
        assert refused(route, request({}, changed, f"/hooks?signature={signature}")).status == 401
    wrong = hmac.new(b"other", KIWIFY_BODY, hashlib.sha1).hexdigest()
    assert refused(route, request({}, KIWIFY_BODY, f"/hooks?signature={wrong}")).status == 401
    assert "missing" in refused(route, request({}, KIWIFY_BODY)).reason
    assert route.mode == "sales"
    sample_accepted(route)


# --- PagBank ---------------------------------------------------------------------------------------

PAGBANK_TOKEN = "pagbank-account-api-token"
PAGBANK_BODY = b'{"id":"ORDE_1","charges":[{"id":"CHAR_1","status":"PAID"}]}'


def test_pagbank(tmp_path: Path, pki: Pki) -> None:
    route = loaded(tmp_path, pki, "pagbank", a=PAGBANK_TOKEN)
    token = hashlib.sha256(PAGBANK_TOKEN.encode() + b"-" + PAGBANK_BODY).hexdigest()
    verdict = accepted(route, request({"x-authenticity-token": token}, PAGBANK_BODY))
    assert verdict.events[0].dedup_key == "order:ORDE_1:CHAR_1:PAID"
    accepted(route, request({"x-authenticity-token": token.upper()}, PAGBANK_BODY))
    for changed in flipped(PAGBANK_BODY, step=5):
        assert refused(route, request({"x-authenticity-token": token}, changed)).status == 401
    as_hmac = hmac.new(PAGBANK_TOKEN.encode(), PAGBANK_BODY, hashlib.sha256).hexdigest()
    assert refused(route, request({"x-authenticity-token": as_hmac}, PAGBANK_BODY)).status == 401
    assert "sandbox" in refused(route, request({}, PAGBANK_BODY)).reason
    assert verification_method(route, None) == "digest-signature"
    sample_accepted(route)


@pytest.mark.parametrize(
    "name", ["stripe", "mercadopago", "pagbank", "pagarme", "kiwify", "standard-webhooks"]
)
def test_a_signing_preset_needs_its_secret(tmp_path: Path, pki: Pki, name: str) -> None:
    error = config_error(tmp_path, pki, f'[[routes]]\npath = "/hooks"\nprovider = "{name}"\n')
    assert error.key == "routes[0].secrets"
