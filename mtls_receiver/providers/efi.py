"""Efí (Pix) webhooks: which notification a request is, and whether its body is valid.

Efí appends ``/pix`` (``/rec``, ``/cobr``) to the registered URL *string*, so
the suffix lands in the path (``P/pix``) or at the end of a query value
(``P?ignorar=/pix``). The registration test notification hits ``P`` itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from ..config import RouteConfig
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent, Verdict

__all__ = ["KINDS", "classify", "parse_notification", "verify"]

#: suffix Efí appends -> (kind, body list key)
KINDS: dict[str, str] = {"pix": "pix", "rec": "recs", "cobr": "cobsr"}
_VALOR = re.compile(r"\d{1,10}\.\d{2}")
_QUERY_SUFFIX_KEYS = ("ignorar",)


def verify(route: RouteConfig, request: IncomingRequest) -> Verdict:
    """Accept or refuse one request to an Efí route (mode ``mtls``)."""
    kind = classify(route.path, request.path, request.query_string)
    if request.method != "POST":
        raise Refusal(405, f"method {request.method} not allowed; Efí sends POST")
    if request.peer.identity is None:
        raise Refusal(403, "a verified client certificate is required on this route")
    if kind == "test":
        return Verdict(kind="test")
    events = parse_notification(kind, request.body)
    _check_pix_keys(route, events)
    return Verdict(kind=kind, events=events)


def classify(route_path: str, path: str, query_string: str) -> str:
    """``test`` for the base path, else the suffix's kind; Refusal(404) for anything else."""
    base = "" if route_path == "/" else route_path
    if path != base and not path.startswith(base + "/"):
        raise Refusal(404, "not found")
    tail = path[len(base):].strip("/")
    if tail:
        if tail not in KINDS:
            raise Refusal(404, f"unknown suffix /{tail} (Efí sends /pix, /rec, /cobr)")
        return tail
    return _query_suffix(query_string) or "test"


def _query_suffix(query_string: str) -> str | None:
    """The kind appended to a query value (``?ignorar=/pix``), if any."""
    if not query_string:
        return None
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name in _QUERY_SUFFIX_KEYS:
            for suffix in KINDS:
                if value.endswith("/" + suffix):
                    return suffix
    return None


def parse_notification(kind: str, body: bytes) -> tuple[NewEvent, ...]:
    """Validate a notification body; one event per item. Refusal(400) names the first problem."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refusal(400, "body is not valid JSON") from None
    list_key = KINDS[kind]
    if kind == "pix" and isinstance(document, list):
        document = {"pix": document}  # one bank is reported to post a bare array
    if not isinstance(document, dict):
        raise Refusal(400, f"body must be a JSON object with a {list_key!r} list")
    items = document.get(list_key)
    if not isinstance(items, list) or not items:
        raise Refusal(400, f"body must have a non-empty {list_key!r} list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Refusal(400, f"{list_key}[{index}] must be an object")
    if kind == "pix":
        return tuple(NewEvent("pix", _pix_dedup_key(item, index), item) for index, item in enumerate(items))
    return tuple(NewEvent(kind, f"{kind}:{_content_hash(item)}", item) for item in items)


def _pix_dedup_key(item: dict[str, Any], index: int) -> str:
    """``endToEndId``, plus each refund's id and status: a refund is re-sent as it progresses."""
    where = f"pix[{index}]"
    e2e = item.get("endToEndId")
    if not isinstance(e2e, str) or not e2e.strip() or len(e2e) > 64:
        raise Refusal(400, f"{where}.endToEndId must be a non-empty string")
    valor = item.get("valor")
    if not isinstance(valor, str) or not _VALOR.fullmatch(valor):
        raise Refusal(400, f"{where}.valor must be a decimal string like '10.00'")
    horario = item.get("horario", ...)
    sent_not_realised = horario is None and item.get("tipo") == "SOLICITACAO"
    if not (isinstance(horario, str) and horario) and not sent_not_realised:
        raise Refusal(400, f"{where}.horario must be an RFC 3339 timestamp")
    refunds = item.get("devolucoes")
    if refunds is None:
        return e2e
    if not isinstance(refunds, list):
        raise Refusal(400, f"{where}.devolucoes must be a list")
    parts = [e2e]
    for n, refund in enumerate(refunds):
        if not isinstance(refund, dict) or not all(isinstance(refund.get(k), str) for k in ("id", "status")):
            raise Refusal(400, f"{where}.devolucoes[{n}] must be an object with string id and status")
        parts.append(f"{refund['id']}:{refund['status']}")
    return "|".join(parts)


def _content_hash(item: dict[str, Any]) -> str:
    """Pix Automático items have no documented identity: dedup exact repeats by content."""
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_pix_keys(route: RouteConfig, events: tuple[NewEvent, ...]) -> None:
    """Any Efí customer can point a webhook at this URL: accept only the route's own keys."""
    if not route.pix_keys or events[0].kind != "pix":
        return
    foreign = sorted({str(e.payload.get("chave")) for e in events if e.payload.get("chave") not in route.pix_keys})
    if foreign:
        raise Refusal(403, f"pix key not accepted on this route: {', '.join(foreign)}")
