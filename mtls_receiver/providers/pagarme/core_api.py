"""Pagar.me v5 (Core API) webhooks, mode ``"v5"``: an RS256 signature in ``X-Webhook-Asymmetric-Signature``.

The header is ``alg=RS256; kid=<key id>; signature=<base64url>`` (parts split on ``;``, each
``name=value``), the signature RSA PKCS#1 v1.5 SHA-256 over the raw JSON body; only ``RS256`` is
accepted. Keys: Pagar.me's JWKS (``https://hubapi.pagar.me/.well-known/jwks.json``), the ``kid``
selecting the key; an unknown ``kid`` re-fetches the JWKS (rate-limited). As Pagar.me's official
WooCommerce plugin verifies it (no public doc found). Dedup: (``type``, ``id``, ``data.code``).

This module is one mode of the ``pagarme`` provider: ``providers/pagarme/__init__.py`` delegates
``parse_options``, ``verify``, ``sample`` and ``verified_by`` to it when ``mode = "v5"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...config.reader import Reader, Table
from ...config.schema import RouteConfig
from ...errors import Refusal
from ...events import ClientIdentity, IncomingRequest, Verdict
from ...publickeys import decode_signature
from ...signatures import encode_digest
from ..base import RouteContext, SampleRequest
from ..common import one_event, options_of
from ..keyed import (
    KEY_ROUTE_KEYS,
    KeyDefaults,
    KeyedOptions,
    admit,
    dev_signature,
    key_signature_verified,
    read_keys,
    verified_keyed_json,
)

__all__ = [
    "HEADER",
    "JWKS_URL",
    "KEYS",
    "PagarmeV5Options",
    "parse_header",
    "parse_options",
    "sample",
    "verify",
]

HEADER = "X-Webhook-Asymmetric-Signature"
JWKS_URL = "https://hubapi.pagar.me/.well-known/jwks.json"
ALGORITHM = "rsa-pkcs1v15-sha256"
DEV_KID = "dev-signing-key"  # the kid send-test names (the dev key is trusted whatever the kid)
KEYS = KEY_ROUTE_KEYS  #: the route keys this mode reads (the pagarme provider's ``keys`` include them)


@dataclass(frozen=True)
class PagarmeV5Options(KeyedOptions):
    pass


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> PagarmeV5Options:
    defaults = KeyDefaults(ALGORITHM, key_format="jwks", url=JWKS_URL)
    return PagarmeV5Options(**read_keys(reader, raw, route.key, defaults))


def parse_header(value: str | None) -> tuple[str, bytes]:
    """(kid, signature) of the header; 401 when it is missing, not RS256, or lacks a part."""
    if value is None or not value.strip():
        raise Refusal(401, f"signature: {HEADER} header missing")
    parts = {}
    for part in value.split(";"):
        name, sep, text = part.strip().partition("=")
        if sep:
            parts[name.strip().lower()] = text.strip()
    if parts.get("alg") != "RS256":
        raise Refusal(401, f"signature: alg {parts.get('alg', '')[:20]!r} is not RS256")
    kid, encoded = parts.get("kid"), parts.get("signature")
    if not kid or not encoded:
        raise Refusal(401, f"signature: {HEADER} needs kid= and signature=")
    signature = decode_signature(encoded, "base64url")
    if not signature:
        raise Refusal(401, f"signature: {HEADER} signature is not base64url")
    return kid, signature


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, PagarmeV5Options)
    admit(route, request, "Pagar.me")
    kid, signature = parse_header(request.header(HEADER))
    body = verified_keyed_json(options, request, signature, (request.body,), kid=kid)
    kind, event_id = body.get("type"), body.get("id")
    if not isinstance(kind, str) or not kind or not isinstance(event_id, str) or not event_id:
        raise Refusal(400, "body must have a 'type' and an 'id'")
    data = body.get("data")
    code = data.get("code") if isinstance(data, dict) else None
    return one_event(kind, f"{kind}:{event_id}:{code}", body)


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """An order-paid webhook as Pagar.me v5 sends it, signed with the route's dev signing key."""
    stamp = int(now)
    body = json.dumps(
        {
            "id": f"hook_test{stamp}",
            "account": {"id": "acc_test", "name": "send-test"},
            "type": event or "order.paid",
            "created_at": "2026-01-01T00:00:00.000Z",
            "data": {"id": f"or_test{stamp}", "code": f"TEST{stamp}", "status": "paid", "amount": 100},
        }
    ).encode()
    signature = dev_signature(route, options_of(route, PagarmeV5Options), body)
    value = f"alg=RS256; kid={DEV_KID}; signature={encode_digest(signature, 'base64url')}"
    return SampleRequest(path="", headers={"Content-Type": "application/json", HEADER: value}, body=body)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return key_signature_verified(route, client)
