"""The presets that sign nothing: Asaas (a static header), Celcoin and BS2 (Basic or Bearer, BS2 also
none), iugu (the address alone) and FireBanking's static custom headers. Credentials are written
here as each sender's docs say it sends them (base64 of user:password for Basic, and so on)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from support import Pki
from support.senders import NOW, accepted, config_error, load_routes, refused, request

from mtls_receiver.config import RouteConfig
from mtls_receiver.events import Peer
from mtls_receiver.providers import provider, verification_method

ASAAS_TOKEN = "asaas-token-0123456789abcdefghijklmn"
ASAAS_BODY = json.dumps(
    {
        "id": "evt_05b708f961d739ea7eba7e4db318f621&368604920",
        "event": "PAYMENT_RECEIVED",
        "dateCreated": "2024-06-12 16:45:03",
        "payment": {"object": "payment", "id": "pay_080225913252"},
    }
).encode()
ASAAS_PEER = Peer("52.67.12.206")


def route_of(tmp_path: Path, pki: Pki, text: str, **secrets: str) -> RouteConfig:
    (route,) = load_routes(tmp_path, pki, '[[routes]]\npath = "/hooks"\n' + text, **secrets).routes
    return route


def sample_accepted(route: RouteConfig, peer: Peer) -> None:
    sample = provider(route.provider).sample
    assert sample is not None
    made = sample(route, None, NOW)
    accepted(route, request(dict(made.headers), made.body, route.path + made.path, peer=peer))


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_asaas(tmp_path: Path, pki: Pki) -> None:
    route = route_of(tmp_path, pki, 'provider = "asaas"\nsecrets = [{ file = "t" }]\n', t=ASAAS_TOKEN)
    verdict = accepted(route, request({"asaas-access-token": ASAAS_TOKEN}, ASAAS_BODY, peer=ASAAS_PEER))
    assert verdict.kind == "PAYMENT_RECEIVED"
    assert verdict.events[0].dedup_key == "event:evt_05b708f961d739ea7eba7e4db318f621&368604920"
    wrong = {"asaas-access-token": ASAAS_TOKEN[:-1] + "X"}
    assert "does not match" in refused(route, request(wrong, ASAAS_BODY, peer=ASAAS_PEER)).reason
    assert "missing" in refused(route, request({}, ASAAS_BODY, peer=ASAAS_PEER)).reason
    elsewhere = request({"asaas-access-token": ASAAS_TOKEN}, ASAAS_BODY, peer=Peer("198.51.100.1"))
    assert refused(route, elsewhere).status == 403  # the published production addresses by default
    assert verification_method(route, None) == "static-token"
    sample_accepted(route, ASAAS_PEER)
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # nested too deep to parse: 400, never a 500
    nested = refused(route, request({"asaas-access-token": ASAAS_TOKEN}, deep, peer=ASAAS_PEER))
    assert (nested.status, nested.reason) == (400, "body is not valid JSON")


def test_asaas_sandbox_overrides_the_addresses(tmp_path: Path, pki: Pki) -> None:
    text = 'provider = "asaas"\nallow_ips = []\nsecrets = [{ file = "t" }]\n'
    route = route_of(tmp_path, pki, text, t=ASAAS_TOKEN)
    accepted(route, request({"asaas-access-token": ASAAS_TOKEN}, ASAAS_BODY, peer=Peer("198.51.100.1")))


CELCOIN_BODY = b'{"entity":"pix-payment-in","status":"CONFIRMED","body":{"id":"c0ffee"}}'


@pytest.mark.parametrize("name", ["celcoin", "bs2"])
def test_basic_and_bearer_senders(tmp_path: Path, pki: Pki, name: str) -> None:
    text = f'provider = "{name}"\nmode = "basic"\nsecrets = [{{ file = "b" }}]\n'
    route = route_of(tmp_path, pki, text, b="celcoin:s3cret-password")
    verdict = accepted(route, request(basic("celcoin:s3cret-password"), CELCOIN_BODY))
    assert verification_method(route, None) == "basic-auth"
    assert "does not match" in refused(route, request(basic("celcoin:s3cret-passwore"), CELCOIN_BODY)).reason
    assert (
        "missing"
        in refused(route, request({"Authorization": "Bearer celcoin:s3cret-password"}, CELCOIN_BODY)).reason
    )
    if name == "celcoin":
        assert (verdict.kind, verdict.events[0].dedup_key) == (
            "pix-payment-in",
            "pix-payment-in:c0ffee:CONFIRMED",
        )
    sample_accepted(route, Peer("203.0.113.1"))
    text = f'provider = "{name}"\nmode = "bearer"\nsecrets = [{{ file = "t" }}]\ndedup = ["/body/id"]\n'
    route = route_of(tmp_path, pki, text, t="issued-token-1")
    assert (
        accepted(route, request({"Authorization": "Bearer issued-token-1"}, CELCOIN_BODY)).events[0].dedup_key
        == "/hooks|c0ffee"  # a dedup you name is scoped to the route
    )
    assert refused(route, request({"Authorization": "Bearer issued-token-2"}, CELCOIN_BODY)).status == 401
    assert verification_method(route, None) == "bearer-token"


def test_bs2_none_needs_the_loud_opt_in(tmp_path: Path, pki: Pki) -> None:
    error = config_error(tmp_path, pki, '[[routes]]\npath = "/hooks"\nprovider = "bs2"\nmode = "none"\n')
    assert error.key == "routes[0].unsigned_allowlist_only"
    text = 'provider = "bs2"\nmode = "none"\nunsigned_allowlist_only = true\nallow_ips = ["203.0.113.0/24"]\n'
    route = route_of(tmp_path, pki, text)
    accepted(route, request({}, b'{"tipo":"Recebimento","endToEndId":"E1"}'))
    assert refused(route, request({}, b"{}", peer=Peer("198.51.100.1"))).status == 403
    assert verification_method(route, None) == "ip-allowlist-only" and route.options.warnings()
    error = config_error(tmp_path, pki, '[[routes]]\npath = "/hooks"\nprovider = "celcoin"\nmode = "none"\n')
    assert error.key == "routes[0].mode"


IUGU_BODY = b"event=invoice.status_changed&data[id]=1757E1D7FD5E410A9C563024250015BF&data[status]=paid"
IUGU_PEER = Peer("54.207.210.151")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_iugu(tmp_path: Path, pki: Pki) -> None:
    error = config_error(tmp_path, pki, '[[routes]]\npath = "/hooks"\nprovider = "iugu"\n')
    assert error.key == "routes[0].unsigned_allowlist_only"
    route = route_of(tmp_path, pki, 'provider = "iugu"\nunsigned_allowlist_only = true\n')
    verdict = accepted(route, request(FORM, IUGU_BODY, peer=IUGU_PEER))
    assert verdict.kind == "invoice.status_changed"
    assert verdict.events[0].dedup_key == "invoice.status_changed:1757E1D7FD5E410A9C563024250015BF:paid"
    assert verdict.events[0].payload["data[status]"] == "paid"
    assert refused(route, request(FORM, IUGU_BODY, peer=Peer("54.207.210.152"))).status == 403
    assert refused(route, request(FORM, b"data[id]=1", peer=IUGU_PEER)).status == 400
    assert "UNSIGNED" in route.options.warnings()[0]
    assert verification_method(route, None) == "ip-allowlist-only"
    sample_accepted(route, IUGU_PEER)
    error = config_error(
        tmp_path,
        pki,
        '[[routes]]\npath = "/hooks"\nprovider = "iugu"\nunsigned_allowlist_only = true\nallow_ips = []\n',
    )
    assert error.key == "routes[0].allow_ips"


FIRE_HEADERS = (
    'provider = "firebanking"\nmode = "headers"\n'
    'headers = [{ name = "X-Webhook-Secret", value = { file = "a" } },'
    ' { name = "Authorization", value = { file = "b" } }]\n'
)
FIRE_BODY = b'{"transactionId":"tx-9","status":"PAID","eventType":"cash_in","value":1000}'


def test_firebanking_static_headers(tmp_path: Path, pki: Pki) -> None:
    route = route_of(tmp_path, pki, FIRE_HEADERS, a="abc123-secret", b="Bearer token123")
    good = {"X-Webhook-Secret": "abc123-secret", "Authorization": "Bearer token123"}
    verdict = accepted(route, request(good, FIRE_BODY))
    assert (verdict.kind, verdict.events[0].dedup_key) == ("cash_in", "tx-9:PAID")
    for name in good:
        assert refused(route, request({k: v for k, v in good.items() if k != name}, FIRE_BODY)).status == 401
        assert refused(route, request({**good, name: good[name] + "x"}, FIRE_BODY)).status == 401
    assert verification_method(route, None) == "static-token"
    sample_accepted(route, Peer("203.0.113.1"))


@pytest.mark.parametrize(
    ("headers", "key", "problem"),
    [
        (
            'headers = [{ name = "Host", value = { file = "a" } }]',
            "routes[0].headers[0].name",
            "not a header",
        ),
        ("headers = []", "routes[0].headers", "1 to 5"),
        (
            "headers = ["
            + ", ".join(f'{{ name = "X-{i}", value = {{ file = "a" }} }}' for i in range(6))
            + "]",
            "routes[0].headers",
            "1 to 5",
        ),
        (
            'headers = [{ name = "X-A", value = "inline" }]',
            "routes[0].headers[0].value",
            "not accepted inline",
        ),
    ],
)
def test_firebanking_header_errors(tmp_path: Path, pki: Pki, headers: str, key: str, problem: str) -> None:
    text = f'[[routes]]\npath = "/hooks"\nprovider = "firebanking"\nmode = "headers"\n{headers}\n'
    error = config_error(tmp_path, pki, text, a="abc123-secret")
    assert error.key == key and problem in error.problem


def test_firebanking_hmac_mode_is_unchanged_and_has_a_sample(tmp_path: Path, pki: Pki) -> None:
    route = route_of(tmp_path, pki, 'provider = "firebanking"\nsecrets = [{ file = "s" }]\n', s="fire-secret")
    assert route.mode == "hmac" and verification_method(route, None) == "hmac-signature"
    sample_accepted(route, Peer("203.0.113.1"))
    error = config_error(
        tmp_path,
        pki,
        '[[routes]]\npath = "/hooks"\nprovider = "firebanking"\n'
        + FIRE_HEADERS.split("\n", 2)[2].replace('mode = "headers"\n', "")
        + 'secrets = [{ file = "s" }]\n',
        s="x",
        a="y",
        b="z",
    )
    assert error.key == "routes[0].headers"
