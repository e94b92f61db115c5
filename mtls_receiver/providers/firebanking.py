"""FireBanking: ``X-Fire-Signature: sha256=<hex>`` of the raw body (seed 003).

The timestamp is not signed; when ``X-Fire-Timestamp`` is present it must still be
within the tolerance. One URL per event family, so a route may accept only some.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.reader import Reader, Table
from ..config.schema import ProviderOptions, RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Verdict
from ..signatures import SignatureScheme
from .base import Provider, RouteContext
from .common import options_of, signing_secrets, verified_json

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


@dataclass(frozen=True)
class FireBankingOptions(ProviderOptions):
    secrets: tuple[str, ...] = field(default=(), repr=False)  # signing secrets (several: rotation)
    families: tuple[str, ...] = ()  # the event families this route accepts; empty: all


def parse_options(reader: Reader, raw: Table, route: RouteContext) -> FireBankingOptions:
    families = reader.string_list(raw, route.key, "families")
    for family in families:
        if family not in ROUTE_FAMILIES:
            reader.fail(
                f"{route.key}.families", f"unknown family {family!r} (have: {', '.join(ROUTE_FAMILIES)})"
            )
    return FireBankingOptions(secrets=signing_secrets(reader, raw, route.key), families=families)


def family_of(event: str) -> str | None:
    return FAMILIES.get(event.partition(".")[0])


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    options = options_of(route, FireBankingOptions)
    body = verified_json(route, request, "FireBanking", SCHEME, options.secrets)
    event = request.header("X-Fire-Event") or body.get("event")
    if not isinstance(event, str) or not event:
        raise Refusal(400, "no event type: X-Fire-Event header and body 'event' are both missing")
    if options.families and family_of(event) not in options.families:
        raise Refusal(403, f"event {event!r} is not in this route's families ({', '.join(options.families)})")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("id") is None:
        raise Refusal(400, "body must have a 'data' object with an 'id'")
    dedup = f"{event}:{data['id']}:{data.get('status')}"
    return Verdict(kind=event, events=(NewEvent(event, dedup, body, order_key=str(data["id"])),), body=b"")


PROVIDER = Provider(
    name="firebanking",
    modes=("hmac",),
    keys=frozenset({"secrets", "families"}),
    parse_options=parse_options,
    verify=verify,
)
