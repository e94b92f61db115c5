"""Checks every provider shares: method, allowlist, JSON bodies, secrets as keys."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ..addresses import in_networks
from ..config import RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest
from ..signatures import SignatureScheme, decode_secret, verify_signature

__all__ = [
    "check_allowlist",
    "content_digest",
    "json_object",
    "require_json",
    "require_post",
    "scheme_for",
    "secret_keys",
    "verified_json",
]


def require_post(request: IncomingRequest, sender: str) -> None:
    if request.method != "POST":
        raise Refusal(405, f"method {request.method} not allowed; {sender} sends POST")


def require_json(request: IncomingRequest) -> None:
    """415 when the body is declared as something other than JSON (a missing type is tolerated)."""
    declared = request.header("Content-Type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media not in ("application/json", "text/json") and not media.endswith("+json"):
        raise Refusal(415, f"Content-Type {media[:60]!r} is not JSON")


def check_allowlist(route: RouteConfig, request: IncomingRequest) -> None:
    address = request.peer.address
    if route.allow_ips and not in_networks(address, route.allow_ips):
        raise Refusal(403, f"allowlist: client address {address} is not allowed on this route")


def json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, "body is not valid JSON") from None
    if not isinstance(document, dict):
        raise Refusal(400, "body must be a JSON object")
    return document


def content_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def scheme_for(route: RouteConfig, preset: SignatureScheme | None) -> SignatureScheme:
    """The route's own scheme (generic ``hmac``), or the preset with the route's tolerance."""
    scheme = route.signature or preset
    if scheme is None:  # config validation gives every hmac route one; fail closed all the same
        raise Refusal(403, "no signature scheme configured for this route")
    return dataclasses.replace(scheme, tolerance=route.tolerance) if route.tolerance is not None else scheme


def verified_json(route: RouteConfig, request: IncomingRequest, sender: str,
                  preset: SignatureScheme | None = None) -> dict[str, Any]:
    """What every HMAC-signed sender's request goes through: method, allowlist, signature, JSON body."""
    require_post(request, sender)
    check_allowlist(route, request)
    scheme = scheme_for(route, preset)
    verify_signature(scheme, secret_keys(route, scheme), request)
    require_json(request)
    return json_object(request.body)


def secret_keys(route: RouteConfig, scheme: SignatureScheme) -> tuple[bytes, ...]:
    """Every configured secret as HMAC key bytes (config validation made sure they decode)."""
    return tuple(decode_secret(secret, scheme.secret_encoding) for secret in route.secrets)
