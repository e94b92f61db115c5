"""One sender at a time through a real receiver over TLS: each preset's request, signed here as its
docs say, is accepted and stored; the same event sent again (re-signed where the sender re-signs)
is stored once; a wrong credential is refused with a 4xx and a one-line reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import Pki, client_context, https_post

from mtls_receiver.config import Config
from mtls_receiver.lifecycle import Receiver

SECRET = "e2e-shared-secret-0123456789abcdef"
WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-key-24").decode()
ED_KEY = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
WHPK = "whpk_" + base64.b64encode(ED_KEY.public_key().public_bytes_raw()).decode()
FORM = "application/x-www-form-urlencoded"

Made = tuple[str, bytes, dict[str, str]]  # (path with query, body, headers)


def hexmac(algorithm: str, key: bytes, message: bytes) -> str:
    return hmac.new(key, message, algorithm).hexdigest()


def stripe(wrong: bool) -> Made:
    body, ts = b'{"id":"evt_e2e","type":"charge.succeeded","data":{}}', str(int(time.time()))
    key = (SECRET + ("x" if wrong else "")).encode()
    return (
        "/stripe",
        body,
        {"Stripe-Signature": f"t={ts},v1=" + hexmac("sha256", key, f"{ts}.".encode() + body)},
    )


def standard(wrong: bool) -> Made:
    body, ts, msg_id = b'{"type":"invoice.paid"}', str(int(time.time())), "msg_e2e"
    message = f"{msg_id}.{ts}.".encode() + body
    key = base64.b64decode(WHSEC.removeprefix("whsec_"))
    v1 = base64.b64encode(hmac.new(key, message + (b"x" if wrong else b""), "sha256").digest()).decode()
    v1a = base64.b64encode(ED_KEY.sign(message + (b"x" if wrong else b""))).decode()
    headers = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": f"v1,{v1} v1a,{v1a}"}
    return "/standard", body, headers


def mercadopago(wrong: bool) -> Made:
    body, ts = (
        b'{"id":777,"type":"payment","action":"payment.updated","data":{"id":"123"}}',
        str(int(time.time())),
    )
    manifest = f"id:123;request-id:req-1;ts:{ts};".encode()
    v1 = hexmac("sha256", (SECRET + ("x" if wrong else "")).encode(), manifest)
    return "/mp?data.id=123&type=payment", body, {"x-signature": f"ts={ts},v1={v1}", "x-request-id": "req-1"}


def asaas(wrong: bool) -> Made:
    body = b'{"id":"evt_e2e&1","event":"PAYMENT_RECEIVED","payment":{"id":"pay_1"}}'
    return "/asaas", body, {"asaas-access-token": SECRET + ("x" if wrong else "")}


def pagbank(wrong: bool) -> Made:
    body = b'{"id":"CHAR_E2E","status":"PAID"}'
    digest = hashlib.sha256((SECRET + ("x" if wrong else "")).encode() + b"-" + body).hexdigest()
    return "/pagbank", body, {"x-authenticity-token": digest}


def pagarme(wrong: bool) -> Made:
    body = b"id=406483&event=transaction_status_changed&current_status=paid&object=transaction"
    signature = "sha1=" + hexmac("sha1", (SECRET + ("x" if wrong else "")).encode(), body)
    return "/pagarme", body, {"X-Hub-Signature": signature, "Content-Type": FORM}


def kiwify(wrong: bool) -> Made:
    body = b'{"order_id":"o-1","order_status":"paid","webhook_event_type":"order_approved"}'
    signature = hexmac("sha1", (SECRET + ("x" if wrong else "")).encode(), body)
    return f"/kiwify?signature={signature}", body, {}


def iugu(wrong: bool) -> Made:
    body = b"event=invoice.status_changed&data[id]=INV1&data[status]=paid"
    return ("/iugu-closed" if wrong else "/iugu"), body, {"Content-Type": FORM}


def celcoin(wrong: bool) -> Made:
    credentials = base64.b64encode(f"login:{SECRET}{'x' if wrong else ''}".encode()).decode()
    body = b'{"entity":"pix-payment-in","status":"CONFIRMED","body":{"id":"c1"}}'
    return "/celcoin", body, {"Authorization": f"Basic {credentials}"}


def bs2(wrong: bool) -> Made:
    body = b'{"tipo":"Recebimento","endToEndId":"E2E1","status":"OK"}'
    return "/bs2", body, {"Authorization": f"Bearer {SECRET}{'x' if wrong else ''}"}


def firebanking(wrong: bool) -> Made:
    body = b'{"transactionId":"tx-1","status":"PAID","eventType":"cash_in"}'
    return "/fire", body, {"X-Webhook-Secret": SECRET + ("x" if wrong else "")}


def generic(wrong: bool) -> Made:
    body, ts = b'{"id":"g-1"}', str(int(time.time()))
    key = (SECRET + ("x" if wrong else "")).encode()
    return "/generic", body, {"X-Sig": f"t={ts},s=" + hexmac("sha512", key, f"{ts}:".encode() + body)}


def token(wrong: bool) -> Made:
    return "/token", b'{"id":"t-1"}', {"X-Token": SECRET + ("x" if wrong else "")}


SECRETS = '[{ env = "T_E2E_SECRET" }]'
ROUTES = f"""
[[routes]]
path = "/stripe"
provider = "stripe"
secrets = {SECRETS}
[[routes]]
path = "/standard"
provider = "standard-webhooks"
secrets = [{{ env = "T_E2E_WHSEC" }}]
public_keys = ["{WHPK}"]
[[routes]]
path = "/mp"
provider = "mercadopago"
secrets = {SECRETS}
[[routes]]
path = "/asaas"
provider = "asaas"
allow_ips = ["127.0.0.1"]
secrets = {SECRETS}
[[routes]]
path = "/pagbank"
provider = "pagbank"
secrets = {SECRETS}
[[routes]]
path = "/pagarme"
provider = "pagarme"
secrets = {SECRETS}
[[routes]]
path = "/kiwify"
provider = "kiwify"
secrets = {SECRETS}
[[routes]]
path = "/iugu"
provider = "iugu"
unsigned_allowlist_only = true
allow_ips = ["127.0.0.1"]
[[routes]]
path = "/iugu-closed"
provider = "iugu"
unsigned_allowlist_only = true
[[routes]]
path = "/celcoin"
provider = "celcoin"
mode = "basic"
secrets = [{{ env = "T_E2E_BASIC" }}]
[[routes]]
path = "/bs2"
provider = "bs2"
mode = "bearer"
secrets = {SECRETS}
[[routes]]
path = "/fire"
provider = "firebanking"
mode = "headers"
headers = [{{ name = "X-Webhook-Secret", value = {{ env = "T_E2E_SECRET" }} }}]
[[routes]]
path = "/generic"
provider = "hmac"
secrets = {SECRETS}
dedup = ["/id"]
[routes.signature]
header = "X-Sig"
algorithm = "sha512"
signature_field = "s"
timestamp_field = "t"
signed = ["timestamp", "literal::", "body"]
[[routes]]
path = "/token"
provider = "token"
mode = "header"
header = "X-Token"
secrets = {SECRETS}
dedup = ["/id"]
"""

VERIFIED_BY = {
    "asaas": "static-token",
    "pagbank": "digest-signature",
    "iugu": "ip-allowlist-only",
    "celcoin": "basic-auth",
    "bs2": "bearer-token",
    "firebanking": "static-token",
    "token": "static-token",
}
SENDERS = [stripe, standard, mercadopago, asaas, pagbank, pagarme, kiwify, iugu, celcoin, bs2, firebanking]


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_E2E_SECRET", SECRET)
    monkeypatch.setenv("T_E2E_WHSEC", WHSEC)
    monkeypatch.setenv("T_E2E_BASIC", f"login:{SECRET}")


@pytest.mark.parametrize("make", [*SENDERS, generic, token], ids=lambda make: make.__name__)
async def test_each_sender_end_to_end(
    make: Callable[[bool], Made],
    secrets_env: None,
    write_config: Callable[..., Config],
    start_receiver: Callable[[Config], Awaitable[Receiver]],
    pki: Pki,
) -> None:
    receiver = await start_receiver(write_config(client_certs="none", routes=ROUTES))
    port, context = receiver.port(), client_context(pki)
    for _ in range(2):  # the same event again, re-signed where the sender re-signs
        path, body, headers = make(False)
        answer = await https_post(port, path, body, context, headers=headers)
        assert 200 <= answer.status < 300, answer.body
    path, body, headers = make(True)
    answer = await https_post(port, path, body, context, headers=headers)
    assert 400 <= answer.status < 500 and answer.body.strip() and b"\n" not in answer.body.strip(), answer
    (event,) = await receiver.store.list_events()
    assert event.route == path.partition("?")[0] or make is iugu
    assert event.verified_by == VERIFIED_BY.get(make.__name__, "hmac-signature")


async def test_two_generic_routes_with_the_same_dedup_value_both_store(
    secrets_env: None,
    write_config: Callable[..., Config],
    start_receiver: Callable[[Config], Awaitable[Receiver]],
    pki: Pki,
) -> None:
    """Two unrelated senders on two token routes may both send {"id": "t-1"}: the second is not a
    duplicate of the first (the store deduplicates per provider; a generic key is scoped to its route)."""
    second = '[[routes]]\npath = "/token-b"\nprovider = "token"\nmode = "header"\nheader = "X-Token"\n'
    routes = ROUTES + second + 'secrets = [{ env = "T_E2E_SECRET" }]\ndedup = ["/id"]\n'
    receiver = await start_receiver(write_config(client_certs="none", routes=routes))
    port, context = receiver.port(), client_context(pki)
    _, body, headers = token(False)
    for path in ("/token", "/token-b", "/token-b"):
        answer = await https_post(port, path, body, context, headers=headers)
        assert answer.status == 200, answer.body
    stored = await receiver.store.list_events()
    assert sorted(event.route for event in stored) == ["/token", "/token-b"]
