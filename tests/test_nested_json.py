"""A body nested deeper than Python's JSON decoder recurses is refused with a 400, never a 500.

The docs promise "a refusal is a 4xx with a one-line reason ... never a 5xx" (docs/signed-senders.md,
docs/public-keys.md) and SECURITY.md a 400 for a body that is not the expected JSON. A 10 KB body of
5,000 nested brackets is far under ``max_body`` but makes ``json.loads`` raise ``RecursionError``,
which is not a ``ValueError``: it reached the dispatcher as an internal error (500, so the sender
retries), on Stark Bank routes even before the signature was checked, i.e. for anyone.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support import Pki
from support.senders import accepted, load_routes, refused, request

from mtls_receiver.config import RouteConfig
from mtls_receiver.errors import Refusal
from mtls_receiver.events import ClientIdentity, IncomingRequest, Peer
from mtls_receiver.providers import pix

DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"id":"x","a":' + DEEP + b"}"


def test_token_route_refuses_a_too_deep_body_with_400(tmp_path: Path, pki: Pki) -> None:
    routes = (
        '[[routes]]\npath = "/hooks"\nprovider = "token"\nmode = "header"\nheader = "X-Webhook-Token"\n'
        'secrets = [{ file = "token" }]\n'
    )
    (route,) = load_routes(tmp_path, pki, routes, token="a-static-token-value").routes
    for body in (DEEP, DEEP_OBJECT):
        refusal = refused(route, request({"X-Webhook-Token": "a-static-token-value"}, body))
        assert refusal.status == 400 and "JSON" in refusal.reason


def test_starkbank_refuses_a_too_deep_body_as_a_bad_signature(tmp_path: Path, pki: Pki) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    (tmp_path / "stark.pem").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    routes = '[[routes]]\npath = "/hooks"\nprovider = "starkbank"\npublic_key_file = "stark.pem"\n'
    (route,) = load_routes(tmp_path, pki, routes).routes
    # anyone: a signature by another key
    stranger = ec.generate_private_key(ec.SECP256K1()).sign(DEEP, ec.ECDSA(hashes.SHA256()))
    header = {"Digital-Signature": base64.b64encode(stranger).decode()}
    assert refused(route, request(header, DEEP)).status == 401
    # Stark Bank itself (a valid signature over such a body): still a 4xx
    signed = {"Digital-Signature": base64.b64encode(key.sign(DEEP, ec.ECDSA(hashes.SHA256()))).decode()}
    assert refused(route, request(signed, DEEP)).status == 400


PIX_ROUTE = RouteConfig(path="/bank", listener="main", provider="pix", mode="mtls", options=pix.PixOptions())
PSP = Peer("198.51.100.7", ClientIdentity("CN=webhook.psp.com.br", "CN=psp ca", "ab" * 32))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/bank/pix", DEEP),
        ("/bank/pix", b'{"pix":' + DEEP + b"}"),
        ("/bank", DEEP),  # the base path: the registration test, or a Pix from a PSP without /pix
    ],
)
def test_pix_refuses_or_ignores_a_too_deep_body(path: str, body: bytes) -> None:
    incoming = IncomingRequest("POST", path, "", {"Content-Type": "application/json"}, body, PSP)
    try:
        verdict = pix.verify(PIX_ROUTE, incoming)
    except Refusal as refusal:
        assert refusal.status == 400
    else:
        assert path == "/bank" and not verdict.events  # not a notification: the test ping


def test_deep_but_decodable_json_is_still_accepted(tmp_path: Path, pki: Pki) -> None:
    routes = (
        '[[routes]]\npath = "/hooks"\nprovider = "token"\nmode = "header"\nheader = "X-Webhook-Token"\n'
        'secrets = [{ file = "token" }]\ndedup = ["/id"]\n'
    )
    (route,) = load_routes(tmp_path, pki, routes, token="a-static-token-value").routes
    body = json.dumps({"id": "nested-200", "a": json.loads(b"[" * 200 + b"]" * 200)}).encode()
    verdict = accepted(route, request({"X-Webhook-Token": "a-static-token-value"}, body))
    assert verdict.events[0].dedup_key == "/hooks|nested-200"
