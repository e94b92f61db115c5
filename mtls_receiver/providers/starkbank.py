"""Stark Bank: ``Digital-Signature`` = base64 of a DER ECDSA secp256k1/SHA-256 signature.

Signed bytes: the raw body; the Python SDK (starkcore ``parse.verify``) also accepts a signature
over ``json.dumps(json.loads(body), sort_keys=True)``, so that is tried second. High-S signatures
verify (Stark's signer made them until 2026). The public key is fetched from Stark Bank's
``/v2/public-key`` (production or sandbox) at start and again, at most once per ``refetch_interval``,
when a signature matches none (the SDKs' own rotation: re-fetch once on a failure); or read from a
``public_key_file`` the user downloaded. Body ``{"event": {"id", "subscription", "log", ...}}``;
dedup on ``event.id``; Stark Bank wants a 200.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from ..config.reader import Reader, Table
from ..config.schema import RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, Verdict
from .base import Provider, RouteContext, SampleRequest
from .common import one_event, options_of
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

__all__ = ["HEADER", "KEY_URLS", "PROVIDER", "StarkBankOptions", "signed_messages", "verify"]

HEADER = "Digital-Signature"
ALGORITHM = "ecdsa-secp256k1-sha256"
KEY_URLS = {
    "production": "https://api.starkbank.com/v2/public-key?limit=1",
    "sandbox": "https://sandbox.api.starkbank.com/v2/public-key?limit=1",
}


@dataclass(frozen=True)
class StarkBankOptions(KeyedOptions):
    environment: str = "production"


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> StarkBankOptions:
    environment = reader.choice(raw, route.key, "environment", tuple(KEY_URLS), default="production")
    defaults = KeyDefaults(ALGORITHM, key_format="list", url=KEY_URLS[environment])
    return StarkBankOptions(**read_keys(reader, raw, route.key, defaults), environment=environment)


def signed_messages(body: bytes) -> tuple[bytes, ...]:
    """What the SDK accepts a signature over: the raw body, then its sorted-keys re-dump."""
    try:
        redump = json.dumps(json.loads(body), sort_keys=True).encode("ascii")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        return (body,)
    return (body,) if redump == body else (body, redump)


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, StarkBankOptions)
    admit(route, request, "Stark Bank")
    signature = signature_bytes(request, HEADER, "base64")
    body = verified_keyed_json(options, request, signature, signed_messages(request.body))
    event = body.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("id"), (str, int)) or event["id"] == "":
        raise Refusal(400, "body must have an 'event' object with an 'id'")
    kind = _kind(event)
    return one_event(kind, f"event:{event['id']}", body)


def _kind(event: dict[str, Any]) -> str:
    """``invoice.paid``: the subscription, and the log's type when it has one."""
    subscription = event.get("subscription")
    kind = subscription if isinstance(subscription, str) and subscription else "event"
    log = event.get("log")
    log_type = log.get("type") if isinstance(log, dict) else None
    return f"{kind}.{log_type}" if isinstance(log_type, str) and log_type else kind


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """An invoice event as Stark Bank sends it, signed with the route's dev signing key."""
    subscription, _, log_type = (event or "invoice.paid").partition(".")
    stamp = int(now)
    body = json.dumps(
        {
            "event": {
                "id": f"{stamp}000001",
                "subscription": subscription,
                "created": "2026-01-01T00:00:00.000000+00:00",
                "isDelivered": False,
                "workspaceId": "5000000000000000",
                "log": {"id": f"{stamp}000002", "type": log_type or "paid", subscription: {"id": f"{stamp}"}},
            }
        }
    ).encode()
    signature = dev_signature(route, options_of(route, StarkBankOptions), body)
    headers = {"Content-Type": "application/json", HEADER: base64.b64encode(signature).decode()}
    return SampleRequest(path="", headers=headers, body=body)


PROVIDER = Provider(
    name="starkbank",
    modes=("signature",),
    keys=frozenset({"environment"}) | KEY_ROUTE_KEYS,
    parse_options=parse_options,
    verify=verify,
    verified_by=key_signature_verified,
    sample=sample,
)
