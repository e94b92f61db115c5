"""Kiwify banking (KiwiBank) webhooks, mode ``"banking"``: Ed25519 over a SHA-256 digest.

Headers ``x-kiwify-digital-signature`` (base64url, no padding) and ``x-kiwify-timestamp`` (Unix
milliseconds, within ±5 minutes, or the route's ``tolerance`` in seconds). Signed message:
``{url_path}:POST:{raw_body}:{timestamp}``, ``url_path`` the path of the URL registered at Kiwify
(the request's path unless ``signed_path`` says otherwise: a proxy in front may rewrite it). Its
SHA-256 digest (32 bytes) is the Ed25519 message ("prehashed mode" in Kiwify's words: not RFC 8032
Ed25519ph; see ``publickeys``). Keys: Kiwify's ``GET /v1/webhooks-keys`` list (``is_active``),
which needs Kiwify's signed API authentication: a ``public_key_file`` is the documented path.
Dedup: the resource's id in ``data`` with the event type (the envelope ``id`` changes on retries).

This module is one mode of the ``kiwify`` provider: ``providers/kiwify/__init__.py`` delegates
``parse_options``, ``verify``, ``sample`` and ``verified_by`` to it when ``mode = "banking"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...config.reader import Reader, Table
from ...config.schema import RouteConfig
from ...errors import Refusal
from ...events import ClientIdentity, IncomingRequest, Verdict
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
    signature_bytes,
    verified_keyed_json,
)

__all__ = [
    "KEYS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "KiwifyBankingOptions",
    "parse_options",
    "sample",
    "signed_message",
    "verify",
]

SIGNATURE_HEADER = "x-kiwify-digital-signature"
TIMESTAMP_HEADER = "x-kiwify-timestamp"
ALGORITHM = "ed25519-sha256"
TOLERANCE = 300  # seconds either way
#: the ``data`` fields naming the resource an event is about, in the order they are looked for
RESOURCE_IDS = ("transfer_id", "qrcode_id", "transaction_id", "refund_id", "payment_id", "deposit_id", "id")
KEYS = KEY_ROUTE_KEYS | {"signed_path"}  #: the route keys this mode reads


@dataclass(frozen=True)
class KiwifyBankingOptions(KeyedOptions):
    signed_path: str | None = None  # the registered URL's path; None: the request's path
    tolerance: int = TOLERANCE


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> KiwifyBankingOptions:
    signed_path = reader.optional_string(raw, route.key, "signed_path")
    if signed_path is not None and not signed_path.startswith("/"):
        reader.fail(f"{route.key}.signed_path", f"must be a URL path starting with '/': {signed_path[:80]!r}")
    return KiwifyBankingOptions(
        **read_keys(reader, raw, route.key, KeyDefaults(ALGORITHM, key_format="list")),
        signed_path=signed_path,
        tolerance=route.tolerance or TOLERANCE,
    )


def signed_message(path: str, body: bytes, timestamp: str) -> bytes:
    """``{url_path}:POST:{raw_body}:{timestamp}``: the bytes whose SHA-256 digest Kiwify signs."""
    return f"{path}:POST:".encode() + body + f":{timestamp}".encode()


def _check_timestamp(request: IncomingRequest, tolerance: int) -> str:
    value = request.header(TIMESTAMP_HEADER)
    if value is None or not value.strip():
        raise Refusal(401, f"signature: {TIMESTAMP_HEADER} header missing")
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        raise Refusal(401, f"signature: {TIMESTAMP_HEADER} {value[:20]!r} is not Unix milliseconds")
    skew = int(value) / 1000 - request.now
    if skew < -tolerance:
        raise Refusal(401, f"signature: timestamp too old ({-skew:.0f}s > {tolerance}s)")
    if skew > tolerance:
        raise Refusal(401, f"signature: timestamp in the future ({skew:.0f}s > {tolerance}s)")
    return value


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, KiwifyBankingOptions)
    admit(route, request, "Kiwify")
    signature = signature_bytes(request, SIGNATURE_HEADER, "base64url")
    timestamp = _check_timestamp(request, options.tolerance)
    message = signed_message(options.signed_path or request.path, request.body, timestamp)
    body = verified_keyed_json(options, request, signature, (message,))
    kind = body.get("type")
    if not isinstance(kind, str) or not kind:
        raise Refusal(400, "body must have a 'type'")
    return one_event(kind, f"{kind}:{_resource(body)}", body)


def _resource(body: dict[str, Any]) -> str:
    """``transfer_id:<id>``: the resource the event is about (the envelope id changes on every retry)."""
    data = body.get("data")
    if isinstance(data, dict):
        for name in RESOURCE_IDS:
            value = data.get(name)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
                return f"{name}:{value}"
    raise Refusal(400, f"body 'data' names no resource ({', '.join(RESOURCE_IDS)})")


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """A completed Pix transfer as Kiwify banking sends it, signed with the route's dev signing key."""
    options = options_of(route, KiwifyBankingOptions)
    stamp = int(now)
    body = json.dumps(
        {
            "id": f"00000000-0000-4000-8000-{stamp:012d}",
            "type": event or "CASHOUT.PIX.TRANSFERS.COMPLETED",
            "version": "1.0",
            "data": {"transfer_id": f"test-{stamp}", "amount": 100, "status": "COMPLETED"},
            "created_at": "2026-01-01T00:00:00.000Z",
        }
    ).encode()
    timestamp = str(int(now * 1000))
    signature = dev_signature(
        route, options, signed_message(options.signed_path or route.path, body, timestamp)
    )
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: encode_digest(signature, "base64url"),
        TIMESTAMP_HEADER: timestamp,
    }
    return SampleRequest(path="", headers=headers, body=body)


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return key_signature_verified(route, client)
