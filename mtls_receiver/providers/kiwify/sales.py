"""Kiwify sales webhooks: ``?signature=<40 hex>`` appended to the URL, HMAC-SHA1 of the raw body.

The key is the webhook's token (Kiwify never sends it). No timestamp: a captured request can be
replayed, which the dedup key absorbs. Dedup: (``order_id``, ``order_status``), the event type
being ``webhook_event_type`` when sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ...config.reader import Reader, Table
from ...config.schema import ProviderOptions, RouteConfig
from ...errors import Refusal
from ...events import ClientIdentity, IncomingRequest, Verdict
from ...signatures import SignatureScheme, sign_request
from ..base import RouteContext, SampleRequest, signature_verified
from ..common import first_text, one_event, options_of, signing_secrets, verified_json

__all__ = ["KEYS", "SCHEME", "SalesOptions", "parse_options", "sample", "verified_by", "verify"]

KEYS = frozenset({"secrets"})
SCHEME = SignatureScheme(header="signature", carrier="query", algorithm="sha1", signed=("body",))


@dataclass(frozen=True)
class SalesOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # the webhook token(s)


def parse_options(reader: Reader, raw: Table, context: RouteContext) -> SalesOptions:
    return SalesOptions(secrets=signing_secrets(reader, raw, context.key))


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    body = verified_json(route, request, "Kiwify", SCHEME, options_of(route, SalesOptions).secrets)
    return one_event(*_kind_and_dedup(body))


def _kind_and_dedup(body: dict[str, Any]) -> tuple[str, str, dict[str, Any], str]:
    order, status = first_text(body.get("order_id")), first_text(body.get("order_status"))
    if order is None:
        raise Refusal(400, "a Kiwify sales webhook has an 'order_id'")
    kind = first_text(body.get("webhook_event_type"), status) or "order"
    return kind, f"{order}:{status}:{kind}", body, order


def verified_by(route: RouteConfig, client: ClientIdentity | None) -> str:
    return signature_verified(route, client)


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    token = options_of(route, SalesOptions).secrets[0]
    document = {
        "order_id": f"test-{int(now)}",
        "order_status": "paid",
        "webhook_event_type": event or "order_approved",
        "Product": {"product_name": "Test"},
    }
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json"}
    path, signed = sign_request(SCHEME, token.encode(), route.path, headers, body, now)
    return SampleRequest(path=path[len(route.path) :], headers=signed, body=body)
