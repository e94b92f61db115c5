"""What every PSP delivering per BACEN's API Pix shares: the URL suffix, the body, its validation and dedup.

BACEN's spec (bacen/pix-api ``openapi.yaml``, ``callbacks``) has the PSP POST to the registered
``webhookUrl`` with ``/pix`` appended to the end of the URL *string*, query included (bacen/pix-api#241):
the suffix lands in the path (``P/pix``) or at the end of the last query value (``P?ignorar=/pix``).
The registration test hits ``P`` itself. The body is ``{"pix": [...]}``; some PSPs send a bare array
(Banco Inter) or ``{"pix": {...}}`` (Pagstar): which shapes a route accepts is the caller's choice.

mTLS proves the PSP, not the account: any customer of the same PSP can register your URL as their
webhook (bacen/pix-api#239, #313), so a route may accept only its own Pix keys (``pix_keys``).
Used by ``efi`` (the preset, with its ``/rec``, ``/cobr`` and skip-mTLS) and ``pix`` (any PSP).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import string
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from ..config.reader import Reader
from ..errors import Refusal
from ..events import IncomingRequest, NewEvent
from .base import RouteContext, SampleRequest

__all__ = [
    "BODY_SHAPES",
    "PIX_LIST",
    "PIX_OBJECT",
    "ROOT_ARRAY",
    "Located",
    "check_pix_keys",
    "content_events",
    "locate",
    "looks_like_pix",
    "parse_items",
    "pix_events",
    "require_certificate_listener",
    "require_client_certificate",
    "sample_notification",
    "sample_request",
]

PIX_LIST = "pix-list"  # {"pix": [...]}: the spec
ROOT_ARRAY = "root-array"  # [...]: Banco Inter (community report)
PIX_OBJECT = "pix-object"  # {"pix": {...}}: Pagstar's docs
BODY_SHAPES = (PIX_LIST, ROOT_ARRAY, PIX_OBJECT)
_VALOR = re.compile(r"\d{1,10}\.\d{2}")
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Located:
    """What a request URL means: the suffix's kind ("test" for the base path) and the carrier values.

    ``values`` holds the first value of each carrier query parameter, the suffix taken off it."""

    kind: str
    values: Mapping[str, str] = field(default_factory=dict)


def locate(
    route_path: str,
    path: str,
    query_string: str,
    suffixes: Collection[str],
    carriers: Collection[str] | None,
    sender: str,
) -> Located:
    """Where the PSP's suffix landed; Refusal(404) for a path that is neither ``P`` nor ``P/<suffix>``.

    ``carriers`` are the query parameters whose value may end with the suffix (None: any of them)."""
    base = "" if route_path == "/" else route_path
    if path != base and not path.startswith(base + "/"):
        raise Refusal(404, "not found")
    query_kind, values = _parse_query(query_string, suffixes, carriers)
    tail = path[len(base) :].strip("/")
    if tail and tail not in suffixes:
        sends = ", ".join(f"/{suffix}" for suffix in suffixes)
        raise Refusal(404, f"unknown suffix {('/' + tail)[:40]!r} ({sender} sends {sends})")
    return Located(kind=tail or query_kind or "test", values=values)


def _parse_query(
    query_string: str, suffixes: Collection[str], carriers: Collection[str] | None
) -> tuple[str | None, dict[str, str]]:
    """The kind appended to a carrier's value (``ignorar=/pix``, ``hmac=S/pix``) and each carrier's value."""
    kind: str | None = None
    values: dict[str, str] = {}
    if not query_string:
        return kind, values
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if carriers is not None and name not in carriers:
            continue
        suffix = next((s for s in suffixes if value.endswith("/" + s)), None)
        if suffix is not None:
            kind = kind or suffix
            value = value[: -len(suffix) - 1]
        values.setdefault(name, value)
    return kind, values


def require_client_certificate(request: IncomingRequest) -> None:
    if request.peer.identity is None:
        raise Refusal(403, "certificate: a verified client certificate is required on this route")


def require_certificate_listener(reader: Reader, route: RouteContext, sender: str) -> None:
    """Mode ``mtls`` on a listener that asks for no certificate could never see one: a config error."""
    listener = route.listener
    if route.mode == "mtls" and listener.client_certs == "none":
        reader.fail(
            f"{route.key}.mode",
            f"{sender} mode 'mtls' needs client certificates,"
            f" but listener {listener.name!r} has client_certs = 'none'",
        )


def parse_items(body: bytes, list_key: str, shapes: Collection[str]) -> list[dict[str, Any]]:
    """The notification's items, in any of ``shapes``; Refusal(400) names the first problem."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise Refusal(400, "body is not valid JSON") from None
    if ROOT_ARRAY in shapes and isinstance(document, list):
        document = {list_key: document}
    if not isinstance(document, dict):
        raise Refusal(400, f"body must be a JSON object with a {list_key!r} list")
    items = document.get(list_key)
    if PIX_OBJECT in shapes and isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise Refusal(400, f"body must have a non-empty {list_key!r} list")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Refusal(400, f"{list_key}[{index}] must be an object")
    return items


def looks_like_pix(body: bytes) -> bool:
    """Whether a body on the base path is a notification (a PSP that does not append ``/pix``): a
    non-empty array, or an object whose ``pix`` is a non-empty list or an object. Anything else there
    (empty, not JSON, ``{"pix": []}``) is the registration test, whose body nobody documents."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        return False
    items = document.get("pix") if isinstance(document, dict) else document
    return bool(items) and isinstance(items, (list, dict))


def pix_events(items: list[dict[str, Any]]) -> tuple[NewEvent, ...]:
    """One event per Pix item, deduplicated by ``endToEndId`` (and each refund's id and status)."""
    return tuple(
        NewEvent("pix", _pix_dedup_key(item, index), item, order_key=item["endToEndId"])
        for index, item in enumerate(items)
    )


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


def content_events(kind: str, items: list[dict[str, Any]]) -> tuple[NewEvent, ...]:
    """Items with no documented identity (Pix Automático's): dedup exact repeats by content."""
    return tuple(NewEvent(kind, f"{kind}:{_content_hash(item)}", item) for item in items)


def _content_hash(item: dict[str, Any]) -> str:
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_pix_keys(pix_keys: tuple[str, ...], events: tuple[NewEvent, ...]) -> None:
    """Any customer of the same PSP can point a webhook at this URL: accept only the route's own keys."""
    if not pix_keys or events[0].kind != "pix":
        return
    foreign = sorted({str(e.payload.get("chave")) for e in events if e.payload.get("chave") not in pix_keys})
    if foreign:
        named = ", ".join(repr(key[:80]) for key in foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise Refusal(403, f"pix key not accepted on this route: {named}")


def sample_notification(now: float, pix_key: str | None = None) -> dict[str, object]:
    """A well-formed ``{"pix": [item]}`` whose endToEndId says it is a test (ISPB 00000000, 'PROBE')."""
    stamp = datetime.fromtimestamp(now, UTC)
    item: dict[str, object] = {
        "endToEndId": f"E00000000{stamp:%Y%m%d%H%M}PROBE{''.join(secrets.choice(_ALNUM) for _ in range(6))}",
        "txid": "mtlsreceiverprobe",
        "valor": "0.01",
        "horario": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "infoPagador": "mtls-receiver probe - not a real payment",
    }
    if pix_key:
        item["chave"] = pix_key
    return {"pix": [item]}


def sample_request(event: str | None, now: float, pix_key: str | None, query: str = "") -> SampleRequest:
    """What the PSP sends: a Pix notification to ``P/pix`` (``pix``, the default), or the registration
    test to ``P`` (``test``), over mutual TLS. ``query`` is the registered URL's query (``?ignorar=``),
    which the suffix is appended to as a string."""
    if event not in (None, "pix", "test"):
        raise ValueError(f"event {event[:40]!r}: a Pix PSP sends 'pix' (default) or 'test' (registration)")
    headers = {"Content-Type": "application/json"}
    if event == "test":
        return SampleRequest(path=query, headers=headers, body=b"", client_certificate=True)
    body = json.dumps(sample_notification(now, pix_key), separators=(",", ":")).encode()
    return SampleRequest(path=query + "/pix", headers=headers, body=body, client_certificate=True)
