"""What providers share: their options, method, allowlist, JSON and form bodies, signing secrets,
static tokens and the loud opt-in an unsigned (allowlist-only) route needs."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from ..addresses import in_networks
from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Verdict
from ..signatures import (
    SignatureScheme,
    basic_credentials,
    bearer_token,
    decode_secret,
    token_matches,
    verify_signature,
)

__all__ = [
    "STATIC_VERIFIED_BY",
    "UNSIGNED_OPT_IN",
    "check_static_auth",
    "check_unsigned_allowlist",
    "check_allowlist",
    "content_digest",
    "form_object",
    "first_text",
    "json_object",
    "one_event",
    "request_fields",
    "require_token",
    "require_unsigned_opt_in",
    "unsigned_warning",
    "options_of",
    "require_json",
    "require_post",
    "signing_secrets",
    "static_auth_headers",
    "static_secrets",
    "verified_json",
    "verified_request",
]

#: the key an unsigned route must set: nothing but the client address vouches for its requests
UNSIGNED_OPT_IN = "unsigned_allowlist_only"

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
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise Refusal(400, "body is not valid JSON") from None
    if not isinstance(document, dict):
        raise Refusal(400, "body must be a JSON object")
    return document


def form_object(body: bytes) -> dict[str, Any]:
    """An ``application/x-www-form-urlencoded`` body as a JSON object of its fields (a field given
    more than once: the list of its values); names are kept as sent (``transaction[status]``)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, "body is not a valid form-urlencoded document") from None
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            previous = fields[name]
            fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[name] = value
    return fields


def request_fields(request: IncomingRequest) -> dict[str, Any]:
    """The body as a JSON object: parsed as a form when declared ``x-www-form-urlencoded``, else JSON."""
    declared = (request.header("Content-Type") or "").split(";", 1)[0].strip().lower()
    if declared == "application/x-www-form-urlencoded":
        return form_object(request.body)
    require_json(request)
    return json_object(request.body)


def require_token(presented: str | None, secrets: tuple[str, ...], what: str) -> None:
    """Refusal(401) unless ``presented`` equals one of ``secrets`` (constant time, every secret)."""
    if presented is None:
        raise Refusal(401, f"token: {what} missing")
    if not token_matches(presented, secrets):
        raise Refusal(401, f"token: {what} does not match")


#: a static-credential mode -> the ``verified_by`` its events record
STATIC_VERIFIED_BY = {
    "header": "static-token",
    "basic": "basic-auth",
    "bearer": "bearer-token",
    "none": "ip-allowlist-only",
}


def static_secrets(reader: Reader, raw: Table, key: str, mode: str) -> tuple[str, ...]:
    """The route's ``secrets`` for a static-credential ``mode``: tokens, or ``user:password`` for Basic."""

    def problem(secret: str) -> str | None:
        if mode == "basic" and ":" not in secret:
            return "HTTP Basic credentials are 'user:password' (no ':' found)"
        if any(char.isspace() for char in secret.strip()) and mode != "basic":
            return "a token has no whitespace"
        return None

    secrets = reader.secret_list(raw, key, "secrets", check=problem)
    if not secrets:
        what = "'user:password'" if mode == "basic" else "token"
        reader.fail(f"{key}.secrets", f'at least one {what} is needed, e.g. [{{ env = "WEBHOOK_TOKEN" }}]')
    return secrets


def check_static_auth(mode: str, request: IncomingRequest, header: str, secrets: tuple[str, ...]) -> None:
    """Refusal(401) unless the request carries one of ``secrets`` as ``mode`` says: in ``header``
    (mode "header"), as HTTP Basic ``user:password`` or as a Bearer token in ``Authorization``."""
    authorization = request.header("Authorization")
    if mode == "header":
        require_token(request.header(header), secrets, f"{header} header")
    elif mode == "basic":
        require_token(basic_credentials(authorization), secrets, "Authorization: Basic credentials")
    elif mode == "bearer":
        require_token(bearer_token(authorization), secrets, "Authorization: Bearer token")
    else:
        raise Refusal(401, f"no credentials are configured for mode {mode!r}")


def static_auth_headers(mode: str, header: str, secret: str) -> dict[str, str]:
    """The header a sender sends ``secret`` in, for ``send-test``."""
    if mode == "basic":
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    if mode == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    return {header: secret} if mode == "header" else {}


def require_unsigned_opt_in(reader: Reader, raw: Table, key: str, default_ips: bool = False) -> None:
    """An unsigned route loads only with ``unsigned_allowlist_only = true`` and a non-empty
    allowlist (its ``allow_ips``, or the sender's published addresses when ``default_ips``):
    without a signature the client address is all that vouches for a request."""
    if not reader.boolean(raw, key, UNSIGNED_OPT_IN, default=False):
        reader.fail(
            f"{key}.{UNSIGNED_OPT_IN}",
            "this route has no signature or token: set unsigned_allowlist_only = true to accept "
            "requests on the client address alone (and list allow_ips)",
        )
    listed = reader.networks(raw, key, "allow_ips", default=())
    if not listed and ("allow_ips" in raw or not default_ips):
        reader.fail(f"{key}.allow_ips", "an unsigned route needs the sender's addresses (allow_ips)")


def one_event(kind: str, dedup: str, body: Any, order_key: str = "") -> Verdict:
    """The verdict of a request that carries one event, answered at once."""
    return Verdict(kind=kind, events=(NewEvent(kind, dedup, body, order_key=order_key),), body=b"")


def first_text(*values: object) -> str | None:
    """The first of ``values`` that is a non-empty string or a number, as text."""
    for value in values:
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def check_unsigned_allowlist(route: RouteConfig, request: IncomingRequest) -> None:
    """An unsigned route's only check: the client address is on its (never empty) allowlist."""
    if not route.allow_ips:  # the loader requires some; fail closed all the same
        raise Refusal(403, "allowlist: an unsigned route without allow_ips accepts nothing")
    check_allowlist(route, request)


def unsigned_warning() -> str:
    return (
        "UNSIGNED: requests are accepted on the client address alone (unsigned_allowlist_only); "
        "anyone who can send from an allowed address can forge events: re-fetch each one from the "
        "sender's API before acting on it"
    )


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
    verified_request(route, request, sender, scheme, secrets)
    require_json(request)
    return json_object(request.body)


def verified_request(
    route: RouteConfig,
    request: IncomingRequest,
    sender: str,
    scheme: SignatureScheme,
    secrets: tuple[str, ...],
) -> None:
    """Method, allowlist and signature of an HMAC-signed request, whatever its body is."""
    require_post(request, sender)
    check_allowlist(route, request)
    if route.tolerance is not None:
        scheme = dataclasses.replace(scheme, tolerance=route.tolerance)
    keys = tuple(decode_secret(secret, scheme.secret_encoding) for secret in secrets)  # validated at load
    verify_signature(scheme, keys, request)
