"""Pomelo: ``x-signature: hmac-sha256 <base64>`` over timestamp + endpoint + body, no separators.

The key is the *base64-decoded* api-secret, chosen by ``x-api-key``. ``x-endpoint``
must be the path (with query) this route actually serves. Authorisation requests
expire 60 s after ``x-timestamp`` and their answer must be signed the same way.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..config import RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Relay, Verdict
from ..signatures import check_timestamp, decode_secret, hmac_sha256, matches_any
from .common import check_allowlist, content_digest, json_object, require_json, require_post

__all__ = ["AUTHORIZATION_TOLERANCE", "NOTIFICATION_TOLERANCE", "sign", "signature_headers", "verify"]

PREFIX = "hmac-sha256 "
AUTHORIZATION_TOLERANCE = 60
NOTIFICATION_TOLERANCE = 300


def sign(key: bytes, timestamp: str, endpoint: str, body: bytes) -> str:
    """The ``x-signature`` value for these bytes (Pomelo's algorithm, both directions)."""
    digest = hmac_sha256(key, timestamp.encode() + endpoint.encode() + body)
    return PREFIX + base64.b64encode(digest).decode()


def signature_headers(api_key: str, key: bytes, endpoint: str, body: bytes, now: float) -> dict[str, str]:
    """Headers that sign an answer: echo the endpoint, our own timestamp, the signature."""
    timestamp = str(int(now))
    return {
        "X-Api-Key": api_key,
        "X-Endpoint": endpoint,
        "X-Timestamp": timestamp,
        "X-Signature": sign(key, timestamp, endpoint, body),
    }


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    require_post(request, "Pomelo")
    check_allowlist(route, request)
    api_key, key = _key_for(route, request.header("x-api-key"))
    endpoint = request.header("x-endpoint")
    if endpoint is None:
        raise Refusal(401, "signature: x-endpoint header missing")
    if endpoint != request.path_qs:
        raise Refusal(403, f"endpoint: x-endpoint {endpoint[:100]!r} is not the path this route serves")
    authorizing = route.mode == "authorizations"
    tolerance = route.tolerance or (AUTHORIZATION_TOLERANCE if authorizing else NOTIFICATION_TOLERANCE)
    timestamp = request.header("x-timestamp")
    check_timestamp(timestamp, request.now, tolerance, True, "x-timestamp")
    message = (timestamp or "").encode() + endpoint.encode() + request.body
    if not matches_any(_presented(request.header("x-signature")), message, (key,)):
        raise Refusal(401, "signature: x-signature does not match")
    if request.body:
        require_json(request)
    idempotency_key = request.header("x-idempotency-key") or f"sha256:{content_digest(request.body)}"
    if authorizing:
        def sign_answer(body: bytes, now: float) -> dict[str, str]:
            return signature_headers(api_key, key, endpoint, body, now)

        return Verdict(kind="authorization", relay=Relay(idempotency_key, sign_answer))
    payload: Any = json_object(request.body) if request.body else {}
    kind = str(payload.get("event_type") or payload.get("type") or "notification")
    return Verdict(kind=kind, events=(NewEvent(kind, idempotency_key, payload),), body=b"")


def _key_for(route: RouteConfig, api_key: str | None) -> tuple[str, bytes]:
    if api_key is None:
        raise Refusal(401, "signature: x-api-key header missing")
    for configured, secret in route.api_keys:
        if configured == api_key:
            return configured, decode_secret(secret, "base64")
    raise Refusal(401, "signature: unknown x-api-key")


def _presented(value: str | None) -> bytes:
    if value is None:
        raise Refusal(401, "signature: x-signature header missing")
    if not value.startswith(PREFIX):
        raise Refusal(401, f"signature: x-signature must start with {PREFIX!r}")
    try:
        return base64.b64decode(value[len(PREFIX):].strip(), validate=True)
    except (ValueError, binascii.Error):
        raise Refusal(401, "signature: x-signature is not base64") from None
