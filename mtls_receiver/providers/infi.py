"""INFI (International Finance): ``X-Infi-Signature: sha256=<hex>`` over ``timestamp "." body``.

Each retry is re-signed with a new timestamp, but ``X-Infi-Event-Id`` (also ``eventId``
in the body) stays the same, so that is the dedup key; (transactionId, status) otherwise.
"""

from __future__ import annotations

from ..config import RouteConfig
from ..events import IncomingRequest, NewEvent, Verdict
from ..signatures import SignatureScheme
from .common import content_digest, verified_json

__all__ = ["SCHEME", "verify"]

SCHEME = SignatureScheme(
    header="X-Infi-Signature",
    prefix="sha256=",
    encoding="hex",
    signed=("timestamp", "body"),
    separator=".",
    timestamp_header="X-Infi-Timestamp",
    timestamp_required=True,
    tolerance=300,
)


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    body = verified_json(route, request, "INFI", SCHEME)
    event_id = request.header("X-Infi-Event-Id") or body.get("eventId")
    if event_id:
        dedup = f"event:{event_id}"
    elif body.get("transactionId") is not None and body.get("status") is not None:
        dedup = f"tx:{body['transactionId']}:{body['status']}"
    else:
        dedup = f"sha256:{content_digest(request.body)}"
    kind = str(request.header("X-Infi-Event") or body.get("event") or "event")
    order = str(body.get("transactionId") or dedup)  # a transaction's status changes arrive in order
    return Verdict(kind=kind, events=(NewEvent(kind, dedup, body, order_key=order),), body=b"")
