"""Any other HMAC-SHA256 sender, described by the route's ``[routes.signature]`` table."""

from __future__ import annotations

from typing import Any

from ..config import RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Verdict
from .common import content_digest, verified_json

__all__ = ["resolve_field", "verify"]


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    body = verified_json(route, request, "the sender")
    if route.dedup:
        dedup = ":".join(str(resolve_field(ref, body, request)) for ref in route.dedup)
    else:
        dedup = f"sha256:{content_digest(request.body)}"
    kind = str(resolve_field(route.event, body, request)) if route.event else "event"
    return Verdict(kind=kind, events=(NewEvent(kind, dedup, body),), body=b"")


def resolve_field(ref: str, body: dict[str, Any], request: IncomingRequest) -> Any:
    """``header:Name`` or an RFC 6901 JSON pointer into the body; Refusal(400) when absent."""
    if ref.startswith("header:"):
        value = request.header(ref[len("header:"):])
    else:
        value = _pointer(body, ref)
    if value is None or isinstance(value, (dict, list)):
        raise Refusal(400, f"{ref} is missing or not a single value")
    return value


def _pointer(document: Any, pointer: str) -> Any:
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(document, dict):
            document = document.get(token)
        elif isinstance(document, list) and token.isdigit() and int(token) < len(document):
            document = document[int(token)]
        else:
            return None
    return document
