"""Woovi (OpenPix): ``x-webhook-signature`` = base64 of an RSA PKCS#1 v1.5 SHA-256 signature of the raw body.

Woovi's production public key is published (its docs and every SDK carry it) and built in here, as
is the sandbox one (``environment = "sandbox"``). A route may instead fetch Woovi's key list
(``public_key_url``, e.g. ``https://api.woovi.com/api/v1/webhook/public-keys``; every listed key is
trusted, not only ``is_current``: during a rotation both are listed); the built-in key is trusted
until the first fetch succeeds. The deprecated ``X-OpenPix-Signature`` HMAC is not accepted.
Dedup: (event, ``charge.correlationID``), else the Pix ``transactionID``/``endToEndId``; the test
ping ``{"evento": "teste_webhook"}`` is accepted (and stored once).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from ..config.reader import Reader, Table
from ..config.schema import RouteConfig
from ..events import IncomingRequest, Verdict
from ..publickeys import parse_pem_keys
from .base import Provider, RouteContext, SampleRequest
from .common import content_digest, one_event, options_of
from .keyed import (
    KEY_ROUTE_KEYS,
    KeyDefaults,
    KeyedOptions,
    admit,
    dev_signature,
    key_signature_verified,
    read_keys,
    signature_bytes,
    verified_keyed_json,
)

__all__ = ["BUILT_IN_KEYS", "HEADER", "PROVIDER", "WooviOptions", "dedup_key", "verify"]

HEADER = "x-webhook-signature"
ALGORITHM = "rsa-pkcs1v15-sha256"

#: Woovi's published webhook public keys (key_identifier = SHA-256 of the DER SubjectPublicKeyInfo)
PRODUCTION_PEM = """-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC/+NtIkjzevvqD+I3MMv3bLXDt
pvxBjY4BsRrSdca3rtAwMcRYYvxSnd7jagVLpctMiOxQO8ieUCKLSWHpsMAjO/zZ
WMKbqoG8MNpi/u3fp6zz0mcHCOSqYsPUUG19buW8bis5ZZ2IZgBObWSpTvJ0cnj6
HKBAA82Jln+lGwS1MwIDAQAB
-----END PUBLIC KEY-----
"""  # key_identifier 9dce618794f8986c603915a51b7029126c260e5cfdb2aa47e131d837fd62311c
SANDBOX_PEM = """-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoZwBaFwmstKqy9VAqqxi
SbCWgJR3dd5CTtDi6Fwthtd2owFkZIMqTqKg3Bq5ExjuOxE+v/1gIWFqR9jNjbtY
umwPq+wXQhvx9TrQgrrFMVZ6tMPcwzj8Nknw182N/HMIQsV6B+8JWWzf/cN4ZZVS
sRZfQvoVgFM7PSvSvc/h6v0X2Lkzjypvw7ZRkfxoc+z7B0p3vdQmLSKxPRpLzdLL
VlJ+CJA2aATKVQR5feiuWHKdOlvCT7IRhal0hxUAjc7rxho5eHgaxWO5rITke8wS
IjYIpuw38vMobYSxXb6iuj5Zrjpe2GV8vwuGud8H2dngYhkqbGuY5f4j1kfcN7gC
8QIDAQAB
-----END PUBLIC KEY-----
"""  # key_identifier 7c8efa31466209cf247d23f6198a61643b8c322a0d80ea6d0a7a54073b2d6e91
BUILT_IN_KEYS = {
    "production": parse_pem_keys(PRODUCTION_PEM, "Woovi's published production key"),
    "sandbox": parse_pem_keys(SANDBOX_PEM, "Woovi's published sandbox key"),
}
TEST_PING = "teste_webhook"


@dataclass(frozen=True)
class WooviOptions(KeyedOptions):
    environment: str = "production"


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> WooviOptions:
    environment = reader.choice(raw, route.key, "environment", tuple(BUILT_IN_KEYS), default="production")
    defaults = KeyDefaults(ALGORITHM, key_format="list", built_in=BUILT_IN_KEYS[environment])
    return WooviOptions(**read_keys(reader, raw, route.key, defaults), environment=environment)


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, WooviOptions)
    admit(route, request, "Woovi")
    signature = signature_bytes(request, HEADER, "base64")
    body = verified_keyed_json(options, request, signature, (request.body,))
    kind, dedup = dedup_key(body, request.body)
    return one_event(kind, dedup, body)


def dedup_key(body: dict[str, Any], raw: bytes) -> tuple[str, str]:
    """(kind, dedup key): the charge's correlationID under its event, else the Pix transaction's id."""
    if body.get("evento") == TEST_PING:
        return TEST_PING, f"{TEST_PING}:sha256:{content_digest(raw)}"
    event = body.get("event")
    kind = (
        event
        if isinstance(event, str) and event
        else "charge"
        if isinstance(body.get("charge"), dict)
        else "pix"
    )
    charge = body.get("charge")
    if isinstance(charge, dict) and isinstance(charge.get("correlationID"), str):
        status = "" if isinstance(event, str) and event else f":{charge.get('status')}"
        return kind, f"{kind}:charge:{charge['correlationID']}{status}"
    pix = body.get("pix")
    if isinstance(pix, dict):
        for name in ("transactionID", "endToEndId"):
            if isinstance(pix.get(name), str) and pix[name]:
                return kind, f"{kind}:pix:{pix[name]}"
    return kind, f"{kind}:sha256:{content_digest(raw)}"


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """A charge-completed notification as Woovi sends it, signed with the route's dev signing key."""
    stamp = int(now)
    body = json.dumps(
        {
            "event": event or "OPENPIX:CHARGE_COMPLETED",
            "charge": {"status": "COMPLETED", "value": 100, "correlationID": f"test-{stamp}"},
            "pix": {"transactionID": f"test{stamp}", "value": 100, "time": "2026-01-01T00:00:00.000Z"},
        }
    ).encode()
    signature = dev_signature(route, options_of(route, WooviOptions), body)
    headers = {"Content-Type": "application/json", HEADER: base64.b64encode(signature).decode()}
    return SampleRequest(path="", headers=headers, body=body)


PROVIDER = Provider(
    name="woovi",
    modes=("signature",),
    keys=frozenset({"environment"}) | KEY_ROUTE_KEYS,
    parse_options=parse_options,
    verify=verify,
    verified_by=key_signature_verified,
    sample=sample,
)
