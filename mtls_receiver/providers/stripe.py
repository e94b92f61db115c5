"""Stripe: ``Stripe-Signature: t=<unix s>,v1=<hex>[,v1=…]``, HMAC-SHA256 of ``{t}.{raw body}``.

The key is the endpoint secret string ``whsec_…`` as UTF-8, as it is (not base64-decoded, unlike
Standard Webhooks). Any ``v1`` may match (Stripe sends two while an endpoint secret is rolled);
``v0`` entries are ignored. Default tolerance 300 s, both directions. Dedup: the event ``id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, Verdict
from ..signatures import SignatureScheme, sign_request
from .base import Provider, RouteContext, SampleRequest
from .common import first_text, one_event, options_of, signing_secrets, verified_json

__all__ = ["PROVIDER", "SCHEME", "StripeOptions", "verify"]

SCHEME = SignatureScheme(
    header="Stripe-Signature",
    carrier="fields",
    timestamp_field="t",
    signature_field="v1",
    signed=("timestamp", "body"),
    separator=".",
    timestamp_required=True,
    tolerance=300,
)


@dataclass(frozen=True)
class StripeOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # endpoint secrets "whsec_..." (rotation)


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> StripeOptions:
    return StripeOptions(secrets=signing_secrets(reader, raw, route.key))


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    body = verified_json(route, request, "Stripe", SCHEME, options_of(route, StripeOptions).secrets)
    event_id, kind = first_text(body.get("id")), first_text(body.get("type"))
    if event_id is None or kind is None:
        raise Refusal(400, "a Stripe event has an 'id' and a 'type'")
    return one_event(kind, f"event:{event_id}", body)


def sample(route: RouteConfig, event: str | None, now: float) -> SampleRequest:
    secret = options_of(route, StripeOptions).secrets[0]
    document = {
        "id": f"evt_test_{int(now)}",
        "object": "event",
        "type": event or "payment_intent.succeeded",
        "created": int(now),
        "livemode": False,
        "data": {"object": {"id": "pi_test", "object": "payment_intent"}},
    }
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json"}
    path, signed = sign_request(SCHEME, secret.encode(), route.path, headers, body, now)
    return SampleRequest(path=path[len(route.path) :], headers=signed, body=body)


PROVIDER = Provider(
    name="stripe",
    modes=("hmac",),
    keys=frozenset({"secrets"}),
    parse_options=parse_options,
    verify=verify,
    sample=sample,
)
