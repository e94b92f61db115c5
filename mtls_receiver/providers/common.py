"""What providers share: their options, method, allowlist, JSON bodies, signing secrets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, TypeVar

from ..addresses import in_networks
from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest
from ..signatures import SignatureScheme, decode_secret, verify_signature

__all__ = [
    "check_allowlist",
    "content_digest",
    "json_object",
    "options_of",
    "require_json",
    "require_post",
    "signing_secrets",
    "verified_json",
]

OptionsT = TypeVar("OptionsT", bound=ProviderOptions)


def options_of(route: RouteConfig, kind: type[OptionsT]) -> OptionsT:
    """The route's options as its provider defined them; a route holding others is refused (fail closed)."""
    if not isinstance(route.options, kind):
        raise Refusal(403, f"route {route.path} has no {kind.__name__} for provider {route.provider!r}")
    return route.options


def signing_secrets(reader: Reader, raw: Table, key: str, encoding: str = "utf-8") -> tuple[str, ...]:
    """The route's ``secrets``: at least one, each a valid key in ``encoding`` (rotation: several)."""

    def problem(secret: str) -> str | None:
        try:
            decode_secret(secret, encoding)
        except ValueError:
            return "not valid base64 (signature.secret_encoding = 'base64')"
        return None

    secrets = reader.secret_list(raw, key, "secrets", check=problem)
    if not secrets:
        reader.fail(
            f"{key}.secrets", 'at least one signing secret is needed, e.g. [{ env = "WEBHOOK_SECRET" }]'
        )
    return secrets


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


def verified_json(
    route: RouteConfig,
    request: IncomingRequest,
    sender: str,
    scheme: SignatureScheme,
    secrets: tuple[str, ...],
) -> dict[str, Any]:
    """What every HMAC-signed sender's request goes through: method, allowlist, signature, JSON body.

    The route's ``tolerance``, when it gives one, replaces the scheme's."""
    require_post(request, sender)
    check_allowlist(route, request)
    if route.tolerance is not None:
        scheme = dataclasses.replace(scheme, tolerance=route.tolerance)
    keys = tuple(decode_secret(secret, scheme.secret_encoding) for secret in secrets)  # validated at load
    verify_signature(scheme, keys, request)
    require_json(request)
    return json_object(request.body)
