"""FireBanking: ``X-Fire-Signature: sha256=<hex>`` of the raw body (seed 003).

The timestamp is not signed; when ``X-Fire-Timestamp`` is present it must still be
within the tolerance. One URL per event family, so a route may accept only some.
"""

from __future__ import annotations

from ..config import RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Verdict
from ..signatures import SignatureScheme
from .common import verified_json

__all__ = ["FAMILIES", "SCHEME", "family_of", "verify"]

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
FAMILIES = {"pix": "pix", "bankslip": "bankslip", "card": "card", "kyc": "onboarding", "account": "onboarding"}


def family_of(event: str) -> str | None:
    return FAMILIES.get(event.partition(".")[0])


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    body = verified_json(route, request, "FireBanking", SCHEME)
    event = request.header("X-Fire-Event") or body.get("event")
    if not isinstance(event, str) or not event:
        raise Refusal(400, "no event type: X-Fire-Event header and body 'event' are both missing")
    if route.families and family_of(event) not in route.families:
        raise Refusal(403, f"event {event!r} is not in this route's families ({', '.join(route.families)})")
    data = body.get("data")
    if not isinstance(data, dict) or data.get("id") is None:
        raise Refusal(400, "body must have a 'data' object with an 'id'")
    dedup = f"{event}:{data['id']}:{data.get('status')}"
    return Verdict(kind=event, events=(NewEvent(event, dedup, body, order_key=str(data["id"])),), body=b"")
