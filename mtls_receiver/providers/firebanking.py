"""FireBanking: ``X-Fire-Signature: sha256=<hex>`` of the raw body (seed 003), or static headers.

``mode = "hmac"`` (the default): the timestamp is not signed; when ``X-Fire-Timestamp`` is
present it must still be within the tolerance. One URL per event family, so a route may accept
only some.

``mode = "headers"``: the public API's webhooks (``POST /api/webhooks``) carry up to 5 custom
headers you choose per ``eventType``; nothing is signed. The route lists them as ``headers =
[{ name = "X-Webhook-Secret", value = { env = "..." } }]``: every one must be present and match
(constant time). Dedup: (``transactionId``, ``status``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import ClientIdentity, IncomingRequest, NewEvent, Verdict
from ..signatures import SignatureScheme, sign_request, token_matches
from .base import Provider, RouteContext, SampleRequest, signature_verified
from .common import (
    check_allowlist,
    first_text,
    json_object,
    one_event,
    options_of,
    require_json,
    require_post,
    signing_secrets,
    verified_json,
)

__all__ = ["FAMILIES", "PROVIDER", "SCHEME", "FireBankingOptions", "family_of", "verify"]

SCHEME = SignatureScheme(
    header="X-Fire-Signature",
    prefix="sha256=",
    encoding="hex",
    signed=("body",),
    timestamp_header="X-Fire-Timestamp",
    timestamp_required=False,
    tolerance=300,
)

#: event name prefix -> family (FireBanking's webhook URL kinds)
FAMILIES = {
    "pix": "pix",
    "bankslip": "bankslip",
    "card": "card",
    "kyc": "onboarding",
    "account": "onboarding",
}
ROUTE_FAMILIES = ("pix", "bankslip", "card", "onboarding")  # what a route's ``families`` may list
MAX_HEADERS = 5  # what FireBanking's public API lets a webhook carry
#: names FireBanking refuses as custom headers (api.docs.firebanking.com.br webhooks-setup)
BLOCKED_HEADERS = ("host", "content-length", "connection", "transfer-encoding", "content-type", "user-agent")


@dataclass(frozen=True)
class FireBankingOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # signing secrets (several: rotation)
    families: tuple[str, ...] = ()  # the event families this route accepts; empty: all
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # mode "headers": (name, value)

    def describe(self) -> str:
        return f"static headers {', '.join(name for name, _ in self.headers)}" if self.headers else ""


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> FireBankingOptions:
    if route.mode == "headers":
        return _header_options(reader, raw, route.key)
    if "headers" in raw:
        reader.fail(f"{route.key}.headers", 'only with mode = "headers"')
    families = reader.string_list(raw, route.key, "families")
    for family in families:
        if family not in ROUTE_FAMILIES:
            reader.fail(
                f"{route.key}.families", f"unknown family {family!r} (have: {', '.join(ROUTE_FAMILIES)})"
            )
    return FireBankingOptions(secrets=signing_secrets(reader, raw, route.key), families=families)


def _header_options(reader: Reader, raw: Table, key: str) -> FireBankingOptions:
    for name in ("secrets", "families"):
        if name in raw:
            reader.fail(f"{key}.{name}", 'not with mode = "headers" (the headers are the credentials)')
    entries = reader.table_list_at(raw, key, "headers")
    if not 1 <= len(entries) <= MAX_HEADERS:
        reader.fail(
            f"{key}.headers",
            f'1 to {MAX_HEADERS} tables like {{ name = "X-Webhook-Secret", value = {{ env = "..." }} }}',
        )
    headers: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        where = f"{key}.headers[{i}]"
        reader.only_keys(entry, where, {"name", "value"})
        name = reader.string(entry, where, "name")
        if name.lower() in BLOCKED_HEADERS or not name.isascii() or not name.replace("-", "").isalnum():
            reader.fail(f"{where}.name", f"{name!r} is not a header FireBanking can send")
        if name.lower() in {known.lower() for known, _ in headers}:
            reader.fail(f"{where}.name", f"{name!r} is listed twice")
        value = reader.secret(entry, where, "value")
        if value is None:
            reader.fail(f"{where}.value", "missing")
        headers.append((name, value))
    return FireBankingOptions(headers=tuple(headers))


def family_of(event: str) -> str | None:
    return FAMILIES.get(event.partition(".")[0])


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    if route.mode == "headers":
        return _verify_headers(route, request)
    options = options_of(route, FireBankingOptions)
    body = verified_json(route, request, "FireBanking", SCHEME, options.secrets)
    # the body's event is signed, X-Fire-Event is not: a captured request re-sent with another header
    # would otherwise be a new event (a new dedup key) of the attacker's choosing (pix.refunded ...)
    signed_event = body.get("event")
    event = signed_event if isinstance(signed_event, str) and signed_event else request.header("X-Fire-Event")
    if not isinstance(event, str) or not event:
        raise Refusal(400, "no event type: X-Fire-Event header and body 'event' are both missing")
    if options.families and family_of(event) not in options.families:
        raise Refusal(403, f"event {event!r} is not in this route's families ({', '.join(options.families)})")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("id") is None:
        raise Refusal(400, "body must have a 'data' object with an 'id'")
    dedup = f"{event}:{data['id']}:{data.get('status')}"
    return Verdict(kind=event, events=(NewEvent(event, dedup, body, order_key=str(data["id"])),), body=b"")


def _verify_headers(route: RouteConfig, request: IncomingRequest) -> Verdict:
    """Every configured header present with its value; all compared, in constant time."""
    options = options_of(route, FireBankingOptions)
    require_post(request, "FireBanking")
    check_allowlist(route, request)
    if not options.headers:
        raise Refusal(401, "no FireBanking headers configured")
    matched = True
    for name, value in options.headers:
        matched &= token_matches(request.header(name), (value,))
    if not matched:
        raise Refusal(401, "token: a configured FireBanking header is missing or does not match")
    require_json(request)
    body = json_object(request.body)
    return one_event(*_public_event(body))


def _public_event(body: dict[str, Any]) -> tuple[str, str, dict[str, Any], str]:
    transaction = first_text(body.get("transactionId"), body.get("id"))
    if transaction is None:
        raise Refusal(400, "a FireBanking webhook has a 'transactionId'")
    kind = first_text(body.get("eventType"), body.get("event"), body.get("type")) or "transaction"
    return kind, f"{transaction}:{first_text(body.get('status'))}", body, transaction


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return "static-token" if route.mode == "headers" else signature_verified(route, client)


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    options = options_of(route, FireBankingOptions)
    if route.mode == "headers":
        document: dict[str, Any] = {
            "transactionId": f"test-{int(now)}",
            "status": "PAID",
            "eventType": event or "cash_in",
            "value": 100,
        }
        body = json.dumps(document).encode()
        return SampleRequest(
            path="", headers={"Content-Type": "application/json", **dict(options.headers)}, body=body
        )
    kind = event or "pix.received"
    body = json.dumps({"event": kind, "data": {"id": f"test-{int(now)}", "status": "paid"}}).encode()
    headers = {"Content-Type": "application/json", "X-Fire-Event": kind}
    path, signed = sign_request(SCHEME, options.secrets[0].encode(), route.path, headers, body, now)
    return SampleRequest(path=path[len(route.path) :], headers=signed, body=body)


PROVIDER = Provider(
    name="firebanking",
    modes=("hmac", "headers"),
    keys=frozenset({"secrets", "families", "headers"}),
    parse_options=parse_options,
    verify=verify,
    verified_by=verified_by,
    sample=sample,
)
