"""Pomelo: ``x-signature: hmac-sha256 <base64>`` over timestamp + endpoint + body, no separators.

The key is the *base64-decoded* api-secret, chosen by ``x-api-key``. ``x-endpoint``
must be the path (with query) this route actually serves. Authorisation requests
expire 60 s after ``x-timestamp`` and their answer must be signed the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..addresses import Network, parse_networks
from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RelayConfig, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Relay, Verdict
from ..signatures import check_timestamp, decode_secret, hmac_sha256, matches_any
from .base import Provider, RouteContext, SampleRequest
from .common import check_allowlist, content_digest, json_object, options_of, require_json, require_post

__all__ = [
    "AUTHORIZATION_TOLERANCE",
    "NOTIFICATION_TOLERANCE",
    "PROVIDER",
    "PomeloOptions",
    "sample",
    "sign",
    "signature_headers",
    "verify",
]

PREFIX = "hmac-sha256 "
AUTHORIZATION_TOLERANCE = 60
NOTIFICATION_TOLERANCE = 300
SENDER_IPS = {  # Pomelo's published addresses, per environment: a route's default allowlist
    "production": ("34.206.159.176/32", "52.0.20.124/32", "35.84.78.117/32", "52.43.46.111/32"),
    "staging": ("34.226.254.178/32", "44.198.3.59/32", "34.223.185.46/32", "100.20.205.117/32"),
}
#: answered (signed) when the application does not answer an authorisation in time
TIMEOUT_BODY = '{"status":"REJECTED","status_detail":"SYSTEM_ERROR","message":"no answer in time"}'
_RELAY_KEYS = ("app_url", "deadline", "timeout_status", "timeout_body")


@dataclass(frozen=True)
class PomeloOptions(ProviderOptions):
    api_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (api key, api secret)
    environment: str = "production"  # whose sender addresses are the default allowlist
    application: RelayConfig | None = None  # mode "authorizations": the application that answers

    def sender_ips(self, mode: str) -> tuple[Network, ...]:
        return parse_networks(SENDER_IPS[self.environment])

    def relay(self) -> RelayConfig | None:
        return self.application


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> PomeloOptions:
    key = route.key
    environment = reader.choice(raw, key, "environment", tuple(SENDER_IPS), default="production")
    pairs: list[tuple[str, str]] = []
    for i, item in enumerate(reader.table_list_at(raw, key, "api_keys")):
        where = f"{key}.api_keys[{i}]"
        reader.only_keys(item, where, {"key", "secret"})
        api_key = reader.string(item, where, "key")
        secret = reader.secret(item, where, "secret", check=_base64_problem)
        pairs.append((api_key, secret or ""))
    if not pairs:
        reader.fail(
            f"{key}.api_keys", 'at least one pair is needed: [{ key = "...", secret = { env = "..." } }]'
        )
    application = _application(reader, raw, route)
    return PomeloOptions(api_keys=tuple(pairs), environment=environment, application=application)


def _base64_problem(secret: str) -> str | None:
    try:
        decode_secret(secret, "base64")
    except ValueError:
        return "Pomelo's api-secret must be base64"
    return None


def _application(reader: Reader, raw: Table, route: RouteContext) -> RelayConfig | None:
    """Authorisations are answered by the merchant's application, within its deadline."""
    key = route.key
    if route.mode != "authorizations":
        for name in _RELAY_KEYS:
            if name in raw:
                reader.fail(f"{key}.{name}", "only for mode = 'authorizations'")
        return None
    return RelayConfig(
        url=reader.string(raw, key, "app_url"),
        deadline=reader.number(raw, key, "deadline", default=RelayConfig.deadline, minimum=0.1),
        timeout_status=reader.integer(raw, key, "timeout_status", default=200, minimum=200),
        timeout_body=reader.string(raw, key, "timeout_body", default=TIMEOUT_BODY),
    )


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
    api_key, key = _key_for(options_of(route, PomeloOptions), request.header("x-api-key"))
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


def _key_for(options: PomeloOptions, api_key: str | None) -> tuple[str, bytes]:
    if api_key is None:
        raise Refusal(401, "signature: x-api-key header missing")
    for configured, secret in options.api_keys:
        if configured == api_key:
            return configured, decode_secret(secret, "base64")
    raise Refusal(401, "signature: unknown x-api-key")


def _presented(value: str | None) -> bytes:
    if value is None:
        raise Refusal(401, "signature: x-signature header missing")
    if not value.startswith(PREFIX):
        raise Refusal(401, f"signature: x-signature must start with {PREFIX!r}")
    try:
        return base64.b64decode(value[len(PREFIX) :].strip(), validate=True)
    except (ValueError, binascii.Error):
        raise Refusal(401, "signature: x-signature is not base64") from None


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    """A request as Pomelo sends one, signed with the route's first api-key pair; ``x-endpoint`` is the
    route's path. Notifications carry ``event`` as ``event_type`` (default ``card.shipped``); an
    authorisation request is a card transaction whose ``type`` is ``event`` (default ``PURCHASE``).
    The bodies' fields beyond those the receiver reads are illustrative, not Pomelo's full schema."""
    api_key, secret = options_of(route, PomeloOptions).api_keys[0]
    moment = datetime.fromtimestamp(now, UTC)
    if route.mode == "authorizations":
        document = _sample_authorization(event or "PURCHASE", moment)
    else:
        document = {
            "event_id": f"ntf-sendtest-{secrets.token_hex(6)}",
            "event_type": event or "card.shipped",
            "created_at": f"{moment:%Y-%m-%dT%H:%M:%SZ}",
            "data": {"card_id": "crd-sendtest", "note": "mtls-receiver send-test: not a real event"},
        }
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Idempotency-Key": f"sendtest-{secrets.token_hex(8)}",
        **signature_headers(api_key, decode_secret(secret, "base64"), route.path, body, now),
    }
    return SampleRequest(path="", headers=headers, body=body)


def _sample_authorization(kind: str, moment: datetime) -> dict[str, Any]:
    return {
        "transaction": {
            "id": f"ctx-sendtest-{secrets.token_hex(6)}",
            "type": kind,
            "point_type": "ECOMMERCE",
            "country_code": "BRA",
            "local_date_time": f"{moment:%Y-%m-%dT%H:%M:%S}",
        },
        "merchant": {"id": "sendtest-merchant", "mcc": "5999", "name": "mtls-receiver send-test"},
        "card": {"id": "crd-sendtest", "product_type": "PREPAID", "last_four": "0000"},
        "user": {"id": "usr-sendtest"},
        "amount": {"local": {"total": 10.0, "currency": "BRL"}},
    }


PROVIDER = Provider(
    name="pomelo",
    modes=("notifications", "authorizations"),
    keys=frozenset({"api_keys", "environment", *_RELAY_KEYS}),
    parse_options=parse_options,
    verify=verify,
    sample=sample,
)
